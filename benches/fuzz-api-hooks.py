"""schemathesis hooks of benches/fuzz-api.sh (loaded with SCHEMATHESIS_HOOKS).

NASVISOR_FUZZ_AS says who the run calls as: `none` (no credential), `viewer`
or `admin`. NASVISOR_FUZZ_SANDBOX is a directory of the run's own.
NASVISOR_FUZZ_KEEP_TOKENS and NASVISOR_FUZZ_KEEP_USERS (space-separated)
are the run's own API tokens and their users.

- The check `nasvisor_no_privilege_leak` fails any 2xx answer that the
  caller's role must not get: with no credential, anything but the routes
  the document marks public (`security: []`: /healthz, the login); as a
  viewer, any operation whose `x-nasvisor-role` is operator or admin.
- The hook `before_call` moves every absolute path of a request body (a
  pool's directory, an image or volume file to import) into the sandbox:
  the server creates a pool's directory and makes it 0700, so a generated
  `"/"` or `"/usr"` would change this machine's own directories. It also
  sends a console read asked to `follow` without it (a followed console
  streams until the client goes away), and keeps the run from locking
  itself out: a revocation of one of its own tokens (the fuzzer finds their
  ids in GET /api/v1/tokens) or a change or deletion of one of its users
  is sent for another id or name.
- On Debian 12's Python 3.11.2, hypothesis's description of a filter's
  lambda can hit CPython's "AST constructor recursion depth mismatch" (a
  bug of early 3.11 releases); a description is only a label, so that
  error gives the unknown one instead of ending the run.
"""

import hashlib
import os
import re

import schemathesis
from hypothesis.internal import lambda_sources

AS = os.environ.get("NASVISOR_FUZZ_AS", "admin")
SANDBOX = os.environ.get("NASVISOR_FUZZ_SANDBOX", "")
RANK = {"viewer": 0, "operator": 1, "admin": 2}
# The body fields that name a file or directory of the host.
PATH_FIELDS = ("path",)
# A token's id: the first 16 hex digits of its SHA-256 (docs/access.md).
KEEP_TOKEN_IDS = {
    hashlib.sha256(t.encode()).hexdigest()[:16]
    for t in os.environ.get("NASVISOR_FUZZ_KEEP_TOKENS", "").split()
}
KEEP_USERS = set(os.environ.get("NASVISOR_FUZZ_KEEP_USERS", "").split())

_describe = getattr(lambda_sources, "_lambda_description", None)


def _describe_or_unknown(f):
    try:
        return _describe(f)
    except SystemError:
        return "lambda: <unknown>"


if _describe is not None:
    lambda_sources._lambda_description = _describe_or_unknown


def _role_needed(case):
    """The least role of the case's operation; None for a public one."""
    raw = case.operation.definition.raw
    if raw.get("security") == []:
        return None
    return raw.get("x-nasvisor-role", "admin")


@schemathesis.check
def nasvisor_no_privilege_leak(ctx, response, case):
    """No 2xx to a caller whose role the operation's x-nasvisor-role excludes."""
    if not 200 <= response.status_code < 300:
        return None
    needed = _role_needed(case)
    if needed is None:
        return None
    label = f"{case.operation.method.upper()} {case.operation.path}"
    if AS == "none":
        raise AssertionError(
            f"{label} answered {response.status_code} without a credential "
            f"(it needs {needed})"
        )
    if RANK[needed] > RANK.get(AS, 2):
        raise AssertionError(
            f"{label} answered {response.status_code} to a {AS} (it needs {needed})"
        )
    return None


def _sandboxed(p):
    tail = re.sub(r"[^A-Za-z0-9._-]", "_", p.lstrip("/"))[:64].strip(".") or "root"
    return os.path.join(SANDBOX, tail)


@schemathesis.hook
def before_call(context, case, **kwargs):
    if isinstance(case.query, dict) and case.query.get("follow") in (True, "true"):
        case.query["follow"] = False
    params = case.path_parameters or {}
    route = (case.method.upper(), case.operation.path)
    if route == ("DELETE", "/api/v1/tokens/{id}") and params.get("id") in KEEP_TOKEN_IDS:
        params["id"] = "0" * 16
    if route[1] == "/api/v1/users/{name}" and params.get("name") in KEEP_USERS:
        params["name"] = "not-" + params["name"]
    if not SANDBOX or not isinstance(case.body, dict):
        return None
    for field in PATH_FIELDS:
        value = case.body.get(field)
        if isinstance(value, str) and value.startswith("/"):
            case.body[field] = _sandboxed(value)
    return None
