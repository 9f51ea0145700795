//! End-to-end tests of the `nasvisor plugin ...` commands: the real binary,
//! the real signed plugin packages built by scripts/build.sh, and what a user
//! sees (exit status, stdout JSON, one-line errors on stderr).
//!
//! One file although over 700 lines: no fixture is shared (each test runs the
//! binary on files of its own), but the helpers before the first test serve
//! every test; those that other CLI tests use too (output and the shape of
//! an error) are in `support/`.

mod support;

use nasvisor_plugin_host::journal::{Journal, JournalRecord};
use nasvisor_plugin_host::package::{key_id, read_public_key};
use nasvisor_plugin_host::testkit::{cluster_view, place_input};
use nasvisor_plugin_host::{answer_json, invoke_native, DecisionInput, NativeEnv};
use nasvisor_plugin_sdk::World;
use serde_json::Value;
use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::{Duration, Instant};
use support::{assert_one_line_error, assert_success, p, show, stderr, stdout};

// ---------------------------------------------------------------- helpers

/// The workspace root (two levels above this crate).
fn workspace_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// A built package (`target/plugins` or, for the test plugins,
/// `target/test-plugins`; see testkit).
fn package(name: &str) -> PathBuf {
    nasvisor_plugin_host::testkit::plugin_path(name, "nvplugin")
}

/// A built bare component.
fn component(name: &str) -> PathBuf {
    nasvisor_plugin_host::testkit::plugin_path(name, "wasm")
}

/// The public key the build signed the packages with.
fn build_pub() -> PathBuf {
    let p = workspace_root().join("target/keys/build.pub");
    assert!(
        p.is_file(),
        "{} not found: run scripts/build.sh first",
        p.display()
    );
    p
}

/// `nasvisor plugin <args>` with a clean environment (no trusted-key dir or
/// log filter inherited from the caller).
fn nasvisor(args: &[&str]) -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_nasvisor"));
    c.arg("plugin")
        .args(args)
        .env_remove("NASVISOR_TRUSTED_KEYS")
        .env_remove("NASVISOR_LOG")
        .env_remove("RUST_LOG");
    c
}

fn run(args: &[&str]) -> Output {
    nasvisor(args).output().expect("spawn nasvisor")
}

fn write_json(dir: &Path, name: &str, value: &impl serde::Serialize) -> PathBuf {
    let path = dir.join(name);
    std::fs::write(&path, serde_json::to_vec_pretty(value).unwrap()).unwrap();
    path
}

/// A place input for a new VM named `vm_name` on an 8-host cluster.
fn place_file(dir: &Path, vm_name: &str) -> PathBuf {
    write_json(
        dir,
        &format!("place-{vm_name}.json"),
        &place_input(cluster_view(8, 20), vm_name, false),
    )
}

fn eligible_hosts(input: &Path) -> Vec<String> {
    let v: Value = serde_json::from_slice(&std::fs::read(input).unwrap()).unwrap();
    v["request"]["eligible-hosts"]
        .as_array()
        .expect("eligible-hosts array")
        .iter()
        .map(|h| h.as_str().unwrap().to_string())
        .collect()
}

/// Runs `plugin run <package> --input <input> --trusted-key build.pub <extra>`.
fn run_plugin(pkg: &Path, input: &Path, extra: &[&str]) -> Output {
    let build_pub = build_pub();
    let mut args = vec![
        "run",
        p(pkg),
        "--input",
        p(input),
        "--trusted-key",
        p(&build_pub),
    ];
    args.extend_from_slice(extra);
    run(&args)
}

/// Generates a key pair with `keygen --out <dir>/<name>`; returns (key, pub).
fn keygen(dir: &Path, name: &str) -> (PathBuf, PathBuf) {
    let prefix = dir.join(name);
    let o = run(&["keygen", "--out", p(&prefix)]);
    assert_success(&o);
    (
        dir.join(format!("{name}.key")),
        dir.join(format!("{name}.pub")),
    )
}

/// Signs the bare scheduler component with `key` into `<dir>/sched.nvplugin`.
fn sign_scheduler(dir: &Path, key: &Path) -> PathBuf {
    let wasm = dir.join("sched.wasm");
    std::fs::copy(component("nasvisor-scheduler"), &wasm).unwrap();
    let o = run(&[
        "sign",
        p(&wasm),
        "--key",
        p(key),
        "--version",
        "1.2.3",
        "--world",
        "scheduler",
    ]);
    assert_success(&o);
    let out = dir.join("sched.nvplugin");
    assert!(
        out.is_file(),
        "sign wrote no {}: {}",
        out.display(),
        show(&o)
    );
    out
}

// ---------------------------------------------------------------- keygen

#[test]
fn keygen_writes_a_private_key_0600_and_a_public_key_and_prints_the_key_id() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    let prefix = dir.path().join("ops");
    let o = run(&["keygen", "--out", p(&prefix)]);
    assert_success(&o);
    let (key, public) = (dir.path().join("ops.key"), dir.path().join("ops.pub"));

    let mode = std::fs::metadata(&key).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600, "secret key mode is {mode:o}");
    assert!(std::fs::read_to_string(&key)
        .unwrap()
        .contains("BEGIN PRIVATE KEY"));
    assert!(std::fs::read_to_string(&public)
        .unwrap()
        .contains("BEGIN PUBLIC KEY"));

    let id = key_id(&read_public_key(&public).expect("the .pub is an ed25519 public key"));
    let out = stdout(&o);
    assert!(
        out.lines().any(|l| l == format!("key id {id}")),
        "stdout does not print the key id {id}: {}",
        show(&o)
    );
}

#[test]
fn keygen_refuses_to_overwrite_an_existing_key() {
    let dir = tempfile::tempdir().unwrap();
    let (key, public) = keygen(dir.path(), "ops");
    let (key_before, pub_before) = (
        std::fs::read(&key).unwrap(),
        std::fs::read(&public).unwrap(),
    );

    let o = run(&["keygen", "--out", p(&dir.path().join("ops"))]);
    assert!(!o.status.success(), "keygen overwrote a key: {}", show(&o));
    assert_one_line_error(&o, "ops.key");
    assert_eq!(
        std::fs::read(&key).unwrap(),
        key_before,
        "secret key changed"
    );
    assert_eq!(
        std::fs::read(&public).unwrap(),
        pub_before,
        "public key changed"
    );
}

#[test]
fn keygen_refuses_to_overwrite_an_existing_public_key() {
    let dir = tempfile::tempdir().unwrap();
    let public = dir.path().join("ops.pub");
    std::fs::write(&public, "someone else's trusted key\n").unwrap();
    let o = run(&["keygen", "--out", p(&dir.path().join("ops"))]);
    assert_one_line_error(&o, "ops.pub");
    assert_eq!(
        std::fs::read_to_string(&public).unwrap(),
        "someone else's trusted key\n"
    );
    assert!(
        !dir.path().join("ops.key").exists(),
        "a secret key without its .pub was left"
    );
}

#[test]
fn keygen_keeps_a_dotted_out_prefix() {
    let dir = tempfile::tempdir().unwrap();
    let o = run(&["keygen", "--out", p(&dir.path().join("release-1.2"))]);
    assert_success(&o);
    assert!(dir.path().join("release-1.2.key").is_file(), "{}", show(&o));
    assert!(dir.path().join("release-1.2.pub").is_file(), "{}", show(&o));
}

// ---------------------------------------------------------------- sign / verify

#[test]
fn a_package_signed_with_a_fresh_key_verifies_with_that_key_only() {
    let dir = tempfile::tempdir().unwrap();
    let (key, public) = keygen(dir.path(), "mine");
    let (_, other_pub) = keygen(dir.path(), "other");
    let pkg = sign_scheduler(dir.path(), &key);
    let id = key_id(&read_public_key(&public).unwrap());

    let o = run(&["verify", p(&pkg), "--trusted-key", p(&public)]);
    assert_success(&o);
    let out = stdout(&o);
    assert!(
        out.starts_with("ok"),
        "verify did not print ok: {}",
        show(&o)
    );
    assert!(out.contains("sched 1.2.3 (scheduler)"), "{}", show(&o));
    assert!(
        out.contains(&id),
        "verify does not name the signer {id}: {}",
        show(&o)
    );

    // Another key, or no key at all: the signer is not trusted.
    let o = run(&["verify", p(&pkg), "--trusted-key", p(&other_pub)]);
    let line = assert_one_line_error(&o, "untrusted key");
    assert!(
        line.contains(&id),
        "the error does not name the signer {id}: {line}"
    );
    let o = run(&["verify", p(&pkg)]);
    assert_one_line_error(&o, "untrusted key");

    // A directory of trusted keys works like --trusted-key.
    let trusted = dir.path().join("trusted");
    std::fs::create_dir(&trusted).unwrap();
    std::fs::copy(&public, trusted.join("mine.pub")).unwrap();
    let o = run(&["verify", p(&pkg), "--trusted-dir", p(&trusted)]);
    assert_success(&o);
    let o = nasvisor(&["verify", p(&pkg)])
        .env("NASVISOR_TRUSTED_KEYS", &trusted)
        .output()
        .unwrap();
    assert_success(&o);
}

#[test]
fn a_flipped_byte_in_a_signed_package_fails_verification() {
    let dir = tempfile::tempdir().unwrap();
    let (key, public) = keygen(dir.path(), "mine");
    let pkg = sign_scheduler(dir.path(), &key);
    let bytes = std::fs::read(&pkg).unwrap();

    // Layout: magic 8, format 1, manifest length 4, manifest, flag 1, key 32,
    // signature 64, component.
    let manifest_len = u32::from_be_bytes(bytes[9..13].try_into().unwrap()) as usize;
    let sig_at = 13 + manifest_len + 1 + 32;
    let component_at = sig_at + 64;
    assert_eq!(bytes[13 + manifest_len], 1, "the package is not signed");
    let positions = [
        ("signature", sig_at + 10),
        ("component start", component_at + 20),
        ("component middle", (component_at + bytes.len()) / 2),
        ("component end", bytes.len() - 1),
    ];
    for (what, at) in positions {
        let mut flipped = bytes.clone();
        flipped[at] ^= 0x01;
        let bad = dir.path().join("flipped.nvplugin");
        std::fs::write(&bad, &flipped).unwrap();
        let o = run(&["verify", p(&bad), "--trusted-key", p(&public)]);
        assert!(
            !o.status.success(),
            "a byte flipped in the {what} verified: {}",
            show(&o)
        );
        assert_one_line_error(&o, "bad signature");
    }
    // The untouched package still verifies (the flips above were the cause).
    assert_success(&run(&["verify", p(&pkg), "--trusted-key", p(&public)]));
}

// ---------------------------------------------------------------- inspect

#[test]
fn inspect_shows_manifest_signer_imports_and_exports() {
    let o = run(&["inspect", p(&package("nasvisor-scheduler"))]);
    assert_success(&o);
    let v: Value = serde_json::from_str(&stdout(&o))
        .unwrap_or_else(|e| panic!("inspect output is not JSON ({e}): {}", show(&o)));
    assert_eq!(v["manifest"]["world"], "scheduler", "{v:#}");
    assert_eq!(v["manifest"]["name"], "nasvisor-scheduler", "{v:#}");
    let build_id = key_id(&read_public_key(&build_pub()).unwrap());
    assert_eq!(v["signed-by"], Value::String(build_id), "{v:#}");

    let names = |key: &str| -> BTreeSet<String> {
        v[key]
            .as_array()
            .unwrap_or_else(|| panic!("{key} is not an array: {v:#}"))
            .iter()
            .map(|s| s.as_str().unwrap().to_string())
            .collect()
    };
    let imports = names("imports");
    let expected: BTreeSet<String> = ["nasvisor:plugin/host@0.1.0", "nasvisor:plugin/types@0.1.0"]
        .into_iter()
        .map(String::from)
        .collect();
    assert_eq!(imports, expected, "{v:#}");
    assert_eq!(v["imports"].as_array().unwrap().len(), 2, "{v:#}");
    let exports = names("exports");
    for f in ["place", "rebalance"] {
        assert!(exports.contains(f), "exports lack {f}: {v:#}");
    }

    // A bare component: no manifest, no signer, the same interface.
    let o = run(&["inspect", p(&component("nasvisor-scheduler"))]);
    assert_success(&o);
    let bare: Value = serde_json::from_str(&stdout(&o)).unwrap();
    assert_eq!(bare["manifest"], Value::Null);
    assert_eq!(bare["signed-by"], Value::Null);
    assert_eq!(bare["imports"], v["imports"]);
    assert_eq!(bare["exports"], v["exports"]);
    assert_eq!(bare["component-sha256"], v["manifest"]["component-sha256"]);
}

// ---------------------------------------------------------------- run

#[test]
fn run_places_a_vm_on_an_eligible_host() {
    let dir = tempfile::tempdir().unwrap();
    let input = place_file(dir.path(), "web-1");
    let o = run_plugin(&package("nasvisor-scheduler"), &input, &[]);
    assert_success(&o);
    let v: Value = serde_json::from_str(&stdout(&o))
        .unwrap_or_else(|e| panic!("run output is not JSON ({e}): {}", show(&o)));
    let host = v["ok"]["host"]
        .as_str()
        .unwrap_or_else(|| panic!("no ok.host: {}", show(&o)));
    assert!(
        eligible_hosts(&input).iter().any(|h| h == host),
        "host {host} is not eligible: {}",
        show(&o)
    );

    // The same input from stdin.
    let mut child = nasvisor(&[
        "run",
        p(&package("nasvisor-scheduler")),
        "--input",
        "-",
        "--trusted-key",
        p(&build_pub()),
    ])
    .stdin(std::process::Stdio::piped())
    .stdout(std::process::Stdio::piped())
    .stderr(std::process::Stdio::piped())
    .spawn()
    .unwrap();
    {
        use std::io::Write;
        let mut stdin = child.stdin.take().unwrap();
        stdin.write_all(&std::fs::read(&input).unwrap()).unwrap();
    }
    let o2 = child.wait_with_output().unwrap();
    assert_success(&o2);
    let v2: Value = serde_json::from_str(&stdout(&o2)).unwrap();
    assert_eq!(v2, v, "stdin and file input answer differently");
}

#[test]
fn run_reports_each_plugin_failure_as_one_line() {
    let dir = tempfile::tempdir().unwrap();
    let evil = package("nasvisor-test-evil");
    // The default deadline (50 ms) stops the loop. The other cases get a
    // generous deadline so that it is the failure under test, not the clock
    // of a loaded test machine, that ends them.
    let cases = [
        ("loop", "deadline exceeded", &[][..]),
        (
            "alloc-bomb",
            "memory limit",
            &["--deadline-ms", "10000"][..],
        ),
        ("panic", "trap", &["--deadline-ms", "10000"][..]),
        ("recurse", "trap", &["--deadline-ms", "10000"][..]),
        (
            "bad-host",
            "invalid output",
            &["--deadline-ms", "10000"][..],
        ),
        (
            "huge-output",
            "invalid output",
            &["--deadline-ms", "10000"][..],
        ),
    ];
    for (vm, needle, extra) in cases {
        let input = place_file(dir.path(), vm);
        let o = run_plugin(&evil, &input, extra);
        assert!(!o.status.success(), "evil {vm} succeeded: {}", show(&o));
        assert_one_line_error(&o, needle);
    }

    // --memory-mib sets the cap the alloc-bomb runs into.
    let input = place_file(dir.path(), "alloc-bomb");
    let o = run_plugin(
        &evil,
        &input,
        &["--deadline-ms", "10000", "--memory-mib", "16"],
    );
    let line = assert_one_line_error(&o, "memory limit");
    assert!(
        line.contains(&(16u64 << 20).to_string()),
        "the cap is not 16 MiB: {line}"
    );

    // Any other name: the evil plugin behaves and answers the first host.
    let input = place_file(dir.path(), "ordinary");
    let o = run_plugin(&evil, &input, &[]);
    assert_success(&o);
    let v: Value = serde_json::from_str(&stdout(&o)).unwrap();
    assert_eq!(
        v["ok"]["host"],
        Value::String(eligible_hosts(&input)[0].clone())
    );
}

#[test]
fn run_deadline_stops_an_endless_loop_quickly() {
    let dir = tempfile::tempdir().unwrap();
    let evil = package("nasvisor-test-evil");
    // Load time (compiling the component, slow in a debug build) is not the
    // deadline's business: time well-behaved runs before and after, and
    // allow the loop ~1 s on top of the slower of them.
    let ordinary = place_file(dir.path(), "ordinary");
    let timed_ordinary = || {
        let t = Instant::now();
        assert_success(&run_plugin(&evil, &ordinary, &["--deadline-ms", "20"]));
        t.elapsed()
    };
    let before = timed_ordinary();

    let input = place_file(dir.path(), "loop");
    let t = Instant::now();
    let o = run_plugin(&evil, &input, &["--deadline-ms", "20"]);
    let took = t.elapsed();
    let baseline = before.max(timed_ordinary());
    let line = assert_one_line_error(&o, "deadline exceeded");
    assert!(
        line.contains("20 ms"),
        "the error does not name the deadline: {line}"
    );
    assert!(
        took < baseline + Duration::from_secs(1),
        "a 20 ms deadline took {took:?} (a well-behaved run takes {baseline:?})"
    );
}

#[test]
fn run_refuses_a_plugin_of_the_wrong_world() {
    let dir = tempfile::tempdir().unwrap();
    let input = place_file(dir.path(), "web-1");
    let o = run_plugin(
        &package("nasvisor-ha-policy"),
        &input,
        &["--world", "scheduler"],
    );
    let line = assert_one_line_error(&o, "wrong world");
    assert!(line.contains("ha-policy"), "{line}");
    // Without --world the world comes from the input's function.
    let o = run_plugin(&package("nasvisor-ha-policy"), &input, &[]);
    assert_one_line_error(&o, "wrong world");
}

#[test]
fn run_loads_an_unsigned_component_only_in_developer_mode() {
    let dir = tempfile::tempdir().unwrap();
    let input = place_file(dir.path(), "web-1");
    let bare = component("nasvisor-scheduler");
    let o = run_plugin(&bare, &input, &[]);
    assert_one_line_error(&o, "bad signature");

    let o = run_plugin(&bare, &input, &["--dev"]);
    assert_success(&o);
    let v: Value = serde_json::from_str(&stdout(&o)).unwrap();
    let host = v["ok"]["host"]
        .as_str()
        .unwrap_or_else(|| panic!("{}", show(&o)));
    assert!(eligible_hosts(&input).iter().any(|h| h == host));
    // The bare component answers exactly like the signed package.
    let o = run_plugin(&package("nasvisor-scheduler"), &input, &[]);
    assert_success(&o);
    assert_eq!(serde_json::from_str::<Value>(&stdout(&o)).unwrap(), v);
}

#[test]
fn run_names_a_misspelt_input_field() {
    let dir = tempfile::tempdir().unwrap();
    let good: Value =
        serde_json::to_value(place_input(cluster_view(4, 6), "web-1", false)).unwrap();
    let scheduler = package("nasvisor-scheduler");

    // Top level: "requets" for "request".
    let mut v = good.clone();
    let req = v.as_object_mut().unwrap().remove("request").unwrap();
    v["requets"] = req;
    let input = write_json(dir.path(), "top.json", &v);
    assert_one_line_error(&run_plugin(&scheduler, &input, &[]), "requets");

    // Nested: "memroy-mib" in the VM's resources.
    let mut v = good.clone();
    let res = v["request"]["vm"]["resources"].as_object_mut().unwrap();
    let mem = res.remove("memory-mib").unwrap();
    res.insert("memroy-mib".into(), mem);
    let input = write_json(dir.path(), "nested.json", &v);
    assert_one_line_error(&run_plugin(&scheduler, &input, &[]), "memroy-mib");

    // Nested, in a field that has a default: "ha-enabeld" on the VM.
    let mut v = good.clone();
    v["request"]["vm"]["ha-enabeld"] = Value::Bool(true);
    let input = write_json(dir.path(), "defaulted.json", &v);
    assert_one_line_error(&run_plugin(&scheduler, &input, &[]), "ha-enabeld");

    // An unknown function.
    let mut v = good;
    v["function"] = Value::String("palce".into());
    let input = write_json(dir.path(), "function.json", &v);
    assert_one_line_error(&run_plugin(&scheduler, &input, &[]), "palce");
}

#[test]
fn run_prints_a_plugin_refusal_as_json_and_exits_2() {
    let dir = tempfile::tempdir().unwrap();
    let input = place_file(dir.path(), "web-1");
    let o = run_plugin(
        &package("nasvisor-scheduler"),
        &input,
        &["--setting", "strategy=bogus"],
    );
    assert_eq!(o.status.code(), Some(2), "{}", show(&o));
    let v: Value = serde_json::from_str(&stdout(&o))
        .unwrap_or_else(|e| panic!("refusal is not JSON ({e}): {}", show(&o)));
    let err = v
        .get("error")
        .unwrap_or_else(|| panic!("no error key: {}", show(&o)));
    assert!(v.get("ok").is_none(), "{v:#}");
    let text = err.to_string();
    assert!(text.contains("bad-settings"), "{v:#}");
    assert!(text.contains("strategy") && text.contains("bogus"), "{v:#}");

    // A valid setting changes nothing about the exit status.
    let o = run_plugin(
        &package("nasvisor-scheduler"),
        &input,
        &["--setting", "strategy=pack"],
    );
    assert_success(&o);
    // A malformed --setting is a usage error naming the argument.
    let o = run_plugin(
        &package("nasvisor-scheduler"),
        &input,
        &["--setting", "strategy"],
    );
    assert!(!o.status.success(), "{}", show(&o));
    assert!(stderr(&o).contains("key=value"), "{}", show(&o));
}

// ---------------------------------------------------------------- replay

const AT_MS: u64 = 1_700_000_123_456;

/// The journaled place inputs: several cluster sizes and VMs, with the
/// eligible hosts listed worst first, so "the first eligible host" is never
/// the default scheduler's choice.
fn journal_inputs() -> Vec<DecisionInput> {
    let mut out = Vec::new();
    for (i, (hosts, vms)) in [(3, 4), (5, 12), (8, 20), (12, 40)].into_iter().enumerate() {
        for ha in [false, true] {
            let mut input = place_input(cluster_view(hosts, vms), &format!("guest-new-{i}"), ha);
            if let DecisionInput::Place { request, .. } = &mut input {
                request.eligible_hosts.reverse();
                request.eligible_passive_hosts.reverse();
            }
            out.push(input);
        }
    }
    out
}

/// Writes a journal of the default scheduler's native answers to
/// `journal_inputs()`, plus one ha-policy decision; returns the number of
/// scheduler decisions.
fn write_journal(path: &Path) -> usize {
    let mut j = Journal::open(path, 16 << 20).unwrap();
    let inputs = journal_inputs();
    let n = inputs.len();
    let react = DecisionInput::React {
        view: cluster_view(4, 8),
        events: vec![],
    };
    for (i, input) in inputs.into_iter().chain([react]).enumerate() {
        let at_ms = AT_MS + i as u64 * 1000;
        let answer = invoke_native(&input, &NativeEnv::new(vec![], at_ms));
        if input.world() == World::Scheduler {
            assert!(answer.is_ok(), "native scheduler refused: {answer:?}");
        }
        j.append(JournalRecord {
            seq: 0,
            at_ms,
            world: input.world(),
            function: input.function().to_string(),
            plugin: None,
            source: "native".into(),
            cause: None,
            duration_us: 10,
            answer: answer_json(&answer),
            input,
        })
        .unwrap();
    }
    n
}

fn replay(journal: &Path, pkg: &Path, extra: &[&str]) -> Output {
    let build_pub = build_pub();
    let mut args = vec![
        "replay",
        p(journal),
        "--plugin",
        p(pkg),
        "--trusted-key",
        p(&build_pub),
    ];
    args.extend_from_slice(extra);
    run(&args)
}

#[test]
fn replaying_the_native_default_against_the_scheduler_plugin_differs_nowhere() {
    let dir = tempfile::tempdir().unwrap();
    let journal = dir.path().join("decisions.jsonl");
    let n = write_journal(&journal);

    for extra in [&[][..], &["--fail-on-diff"][..]] {
        let o = replay(&journal, &package("nasvisor-scheduler"), extra);
        assert_success(&o);
        assert!(
            stdout(&o).trim().is_empty(),
            "differences printed: {}",
            show(&o)
        );
        let err = stderr(&o);
        assert!(
            err.contains(&format!("replayed {n} decisions"))
                && err.contains("(1 of other worlds skipped)")
                && err.contains(&format!("{n} same, 0 differ")),
            "unexpected summary: {}",
            show(&o)
        );
    }
}

#[test]
fn replaying_against_a_different_plugin_prints_each_differing_decision() {
    let dir = tempfile::tempdir().unwrap();
    let journal = dir.path().join("decisions.jsonl");
    let n = write_journal(&journal);
    let evil = package("nasvisor-test-evil");

    let o = replay(&journal, &evil, &[]);
    assert_success(&o);
    assert!(
        stderr(&o).contains(&format!("0 same, {n} differ")),
        "unexpected summary: {}",
        show(&o)
    );
    let out = stdout(&o);
    let diffs: Vec<Value> = out
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not a JSON line ({e}): {l}")))
        .collect();
    assert_eq!(diffs.len(), n, "{}", show(&o));
    let inputs = journal_inputs();
    for (i, d) in diffs.iter().enumerate() {
        assert_eq!(d["seq"], Value::from(i as u64), "{d:#}");
        assert_eq!(d["function"], "place", "{d:#}");
        let DecisionInput::Place { request, .. } = &inputs[i] else {
            unreachable!()
        };
        // The evil plugin answers the first eligible host and never a
        // passive host, which the host's validation refuses for an HA VM;
        // the recorded answer is the default scheduler's.
        if request.vm.ha_enabled {
            let failure = d["replayed"]["failure"].as_str().unwrap_or_default();
            assert!(failure.starts_with("invalid output"), "{d:#}");
            assert!(d["recorded"]["ok"]["passive-host"].is_string(), "{d:#}");
        } else {
            assert_eq!(
                d["replayed"]["ok"]["host"],
                Value::String(request.eligible_hosts[0].clone()),
                "{d:#}"
            );
        }
        assert!(d["recorded"]["ok"]["host"].is_string(), "{d:#}");
        assert_ne!(d["recorded"], d["replayed"], "{d:#}");
    }

    let o = replay(&journal, &evil, &["--fail-on-diff"]);
    assert_eq!(o.status.code(), Some(3), "{}", show(&o));
    assert_eq!(stdout(&o).lines().count(), n, "{}", show(&o));
}

#[test]
fn replay_of_a_missing_or_corrupt_journal_is_a_one_line_error() {
    let dir = tempfile::tempdir().unwrap();
    let o = replay(
        &dir.path().join("nope.jsonl"),
        &package("nasvisor-scheduler"),
        &[],
    );
    assert_one_line_error(&o, "no such journal");

    // A bad line that is not the (possibly torn) last one is named.
    let journal = dir.path().join("decisions.jsonl");
    write_journal(&journal);
    let text = std::fs::read_to_string(&journal).unwrap();
    let mut lines: Vec<&str> = text.lines().collect();
    lines.insert(1, "{\"seq\": 1, \"garbage\"");
    std::fs::write(&journal, lines.join("\n") + "\n").unwrap();
    let o = replay(&journal, &package("nasvisor-scheduler"), &[]);
    assert_one_line_error(&o, "line 2");
}
