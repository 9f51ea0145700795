//! `openapi.json`, generated: the paths from the route table
//! ([`crate::routes::ROUTES`]) and the request and answer type of each
//! operation ([`contract`]), the components from the schemas derived
//! (schemars) from the bodies and views. The committed file is checked
//! against the generated one by a test; regenerate it with
//! `NASVISOR_WRITE_OPENAPI=1 cargo test --release -p nasvisor-api-types openapi`.

use crate::routes::{Route, ROUTES};
use crate::*;
use schemars::generate::{Contract as SchemaContract, SchemaGenerator, SchemaSettings};
use schemars::{JsonSchema, Schema};
use serde_json::{json, Map, Value};

/// The OpenAPI document of the API (the committed, generated file).
pub const OPENAPI_JSON: &str = include_str!("../openapi.json");

/// The pattern of an object name (also of ids in paths), as
/// [`check_name`] checks it.
pub const NAME_PATTERN: &str = "^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$";

/// The pattern of a file or directory path of a host in a request body
/// (absolute; [`check_abs_path`] also refuses `..` and NUL).
pub const ABS_PATH_PATTERN: &str = "^/";

/// What an operation takes.
pub enum Request {
    /// No body.
    None,
    /// A JSON body of this schema.
    Json(Schema),
    /// Raw bytes (`application/octet-stream`), streamed.
    Bytes,
}

/// What an operation answers on success.
pub enum Answer {
    /// No content.
    Empty,
    /// JSON of this schema.
    Json(Schema),
    /// Raw bytes, streamed.
    Bytes,
    /// Text of this media type.
    Text(&'static str),
}

/// The contract of one operation.
pub struct Contract {
    /// One line on what it does.
    pub summary: &'static str,
    /// Its request body.
    pub request: Request,
    /// Its answer, and the answer's description.
    pub answer: (Answer, &'static str),
}

fn one<T: JsonSchema>(g: &mut SchemaGenerator) -> Schema {
    g.subschema_for::<T>()
}

fn list<T: JsonSchema>(g: &mut SchemaGenerator) -> Schema {
    g.subschema_for::<Vec<T>>()
}

/// The request and answer types of operation `op`, their schemas from `q`
/// (what is read) and `g` (what is written); `None` for an operation it
/// does not know (a test checks every route has one).
pub fn contract(q: &mut SchemaGenerator, g: &mut SchemaGenerator, op: &str) -> Option<Contract> {
    use Request as Q;
    let json = |s: Schema| (Answer::Json(s), "success");
    let done = (Answer::Empty, "done");
    let c = |summary, request, answer| {
        Some(Contract {
            summary,
            request,
            answer,
        })
    };
    match op {
        "health" => c("Health probe; answers without a credential", Q::None, json(one::<HealthView>(g))),
        "login" => c("Log in with a user's password: a session (also set as an HttpOnly cookie). Failed logins are throttled per user and per address (429 with Retry-After)", Q::Json(one::<Login>(q)), json(one::<SessionView>(g))),
        "logout" => c("End the caller's session (and clear its cookie)", Q::None, done),
        "getMetrics" => c("Prometheus metrics (OpenMetrics text): VMs by state, host resources and reservations, jobs, plugin slots, raft, and the recorded API latencies, plugin decisions, quarantines, jobs, migration pauses and raft commits. A viewer's credential, or an API token made for the scraper with the viewer role", Q::None, (Answer::Text("application/openmetrics-text"), "the exposition")),
        "getOpenapi" => c("This document (OpenAPI 3.1)", Q::None, json(schemars::json_schema!({"type": "object", "required": ["openapi", "paths"]}))),
        "whoami" => c("The caller: user, role, credential and, for a session, its CSRF token", Q::None, json(one::<CallerView>(g))),
        "changePassword" => c("Change the caller's own password; its other sessions end", Q::Json(one::<PasswordChange>(q)), done),
        "listUsers" => c("Every user", Q::None, json(list::<UserView>(g))),
        "createUser" => c("Create a user", Q::Json(one::<UserCreate>(q)), json(one::<UserView>(g))),
        "updateUser" => c("Change a user's role, password or state; its sessions end", Q::Json(one::<UserUpdate>(q)), json(one::<UserView>(g))),
        "deleteUser" => c("Delete a user, its tokens and its sessions", Q::None, done),
        "listTokens" => c("API tokens: the caller's own, every user's for an admin", Q::None, json(list::<ApiTokenView>(g))),
        "createToken" => c("Create an API token (its secret is shown once)", Q::Json(one::<TokenCreate>(q)), json(one::<NewTokenView>(g))),
        "revokeToken" => c("Revoke an API token: refused on every host once this answers", Q::None, done),
        "listDecisions" => c("The last policy decisions of the host answering (`host` for another member's; it keeps the last 200), oldest first: world, function, plugin, outcome, cause and duration. Inputs and answers stay in that host's journal", Q::None, json(list::<DecisionView>(g))),
        "listAudit" => c("The audit log after `since` (exclusive), oldest first: every change asked of the API and every login", Q::None, json(list::<AuditView>(g))),
        "getHost" => c("This host", Q::None, json(one::<HostView>(g))),
        "getCertificate" => c("The admin endpoint's certificate on this host", Q::None, json(one::<CertificateView>(g))),
        "replaceCertificate" => c("Replace this host's admin certificate and key (e.g. one of a company's CA); served to new connections at once, no restart. A key that does not match, an expired certificate or bad PEM is refused and nothing changes", Q::Json(one::<CertificateReplace>(q)), (Answer::Json(one::<CertificateView>(g)), "the certificate now served")),
        "getFirmware" => c("This host's firmware: its A/B root slots (state, version, boot entry), the rollback floor, the clock floor, the update waiting for its first healthy boot and how the last update ended", Q::None, json(one::<FirmwareView>(g))),
        "installFirmware" => c("Install a signed firmware bundle (raw body, streamed to the data directory; limit 4 GiB by default, 413 beyond) into this host's inactive slot (a job): verified whole before a slot is touched, then written, read back, and made the next boot with its tries; the booted slot is never touched", Q::Bytes, json(one::<JobView>(g))),
        "rebootHost" => c("Reboot this host with its reboot command (`[firmware] reboot-command`, e.g. after a firmware install): refused (409) when firmware management is off, and while VMs run on it, naming them, unless force. With force and VMs running, a host-reboot job shuts them down (ACPI, forced off after shutdown_timeout_s) and then runs the command; they start again when the daemon is back. Otherwise the command runs about a second after the answer", Q::None, (Answer::Json(one::<HostRebootView>(g)), "the reboot, accepted")),
        "getHostSettings" => c("This host's site settings (admin only): the file that overrides the image's settings (`site-config`), its text, the keys it sets and whether it can be used, and what the running daemon applied at its start", Q::None, json(one::<HostSettingsView>(g))),
        "replaceHostSettings" => c("Replace this host's site settings file, once checked as the daemon's next start would (TOML, the daemon's configuration keys; the image's data-dir, site-config, [firmware] and plugin keys cannot be changed): a file that would be ignored is refused (400, naming the key) and the file is left as it was. It takes effect at the daemon's next start; with restart, the daemon restarts in place at once (its VMs keep running). 409 when the configuration names no site settings file", Q::Json(one::<HostSettingsReplace>(q)), (Answer::Json(one::<HostSettingsView>(g)), "the settings now on file")),
        "clearHostSettings" => c("Remove this host's site settings file: the image's settings alone from the daemon's next start (at once with restart)", Q::None, (Answer::Json(one::<HostSettingsView>(g)), "the settings now on file")),
        "getClusterUpdate" => c("The cluster's rolling update (the last one started): its bundle, where it stands, and each host's step, version and job; 404 when none was ever started", Q::None, json(one::<RolloutView>(g))),
        "startClusterUpdate" => c("Update every host of the cluster with a signed firmware bundle (raw body; limit 4 GiB by default, 413 beyond): checked on the host receiving it, copied to every member and checked there as an install would before any host is touched, then one host at a time: cordon, evacuate (a `reboot` bundle), install, restart or reboot, wait until it is healthy, rejoined and reports the new version, uncordon and (move_back, default true) move its VMs back. Stops at the first failure with the others serving. 409 while another rolling update runs, or when a member has firmware management off", Q::Bytes, (Answer::Json(one::<RolloutView>(g)), "the rolling update, started")),
        "resumeClusterUpdate" => c("Go on with a failed rolling update from the host it stopped at (409 unless it failed)", Q::None, (Answer::Json(one::<RolloutView>(g)), "the rolling update, running again")),
        "abortClusterUpdate" => c("End a running or failed rolling update where it stands: updated hosts keep the new version, the others the old one, mixed versions stay compatible (the peer protocol's rule); the host being updated finishes its step", Q::None, json(one::<RolloutView>(g))),
        "listVms" => c("All VMs", Q::None, json(list::<VmView>(g))),
        "createVm" => c("Define a VM", Q::Json(one::<VmCreate>(q)), json(one::<VmView>(g))),
        "getVm" => c("One VM", Q::None, json(one::<VmView>(g))),
        "updateVm" => c("Change a VM", Q::Json(one::<VmUpdate>(q)), json(one::<VmView>(g))),
        "deleteVm" => c("Remove a VM; force drops the record of a VM whose host is lost, leaving its disks there", Q::None, (Answer::Json(one::<VmView>(g)), "the VM as it was when deleted")),
        "vmPower" => c("Power operation (a job)", Q::Json(one::<PowerOp>(q)), (Answer::Json(one::<VmView>(g)), "the VM after the operation was carried out or begun (a shutdown goes on in the background: state stopping)")),
        "getConsole" => c("The VM's serial console: history, then (follow) live output; a streamed octet body", Q::None, (Answer::Bytes, "the console output, streamed (chunked)")),
        "consoleInput" => c("Type into the VM's serial console", Q::Json(one::<ConsoleInputBody>(q)), done),
        "listPools" => c("All storage pools", Q::None, json(list::<PoolView>(g))),
        "createPool" => c("Define a pool", Q::Json(one::<PoolCreate>(q)), json(one::<PoolView>(g))),
        "deletePool" => c("Remove a pool definition", Q::None, done),
        "importVolume" => c("Import a disk image file of this host as a volume (a job)", Q::Json(one::<VolumeImport>(q)), json(one::<JobView>(g))),
        "listVolumes" => c("Volumes of a pool", Q::None, json(list::<VolumeView>(g))),
        "createVolume" => c("Create a volume", Q::Json(one::<VolumeCreate>(q)), json(one::<VolumeView>(g))),
        "deleteVolume" => c("Delete a volume", Q::None, done),
        "resizeVolume" => c("Grow a volume", Q::Json(one::<VolumeResize>(q)), json(one::<VolumeView>(g))),
        "snapshotVolume" => c("Snapshot a volume", Q::Json(one::<SnapshotCreate>(q)), json(one::<SnapshotView>(g))),
        "listSnapshots" => c("The snapshots of a volume", Q::None, json(list::<SnapshotView>(g))),
        "deleteSnapshot" => c("Delete a snapshot", Q::None, done),
        "revertSnapshot" => c("Return the volume to the snapshot (its VM must be stopped)", Q::None, json(one::<SnapshotView>(g))),
        "cloneVolume" => c("Copy a volume (full, or linked to the source)", Q::Json(one::<VolumeClone>(q)), json(one::<VolumeView>(g))),
        "listImages" => c("All system images", Q::None, json(list::<ImageView>(g))),
        "addImage" => c("Import an image from a path or URL (a job)", Q::Json(one::<ImageAddBody>(q)), json(one::<JobView>(g))),
        "deleteImage" => c("Delete an image", Q::None, done),
        "uploadImage" => c("Upload an image file (raw body, streamed; limit 64 GiB by default, 413 beyond); metadata in the query (a job)", Q::Bytes, json(one::<JobView>(g))),
        "listVswitches" => c("All virtual switches", Q::None, json(list::<VswitchView>(g))),
        "createVswitch" => c("Create a virtual switch", Q::Json(one::<VswitchCreate>(q)), json(one::<VswitchView>(g))),
        "deleteVswitch" => c("Delete a virtual switch", Q::None, done),
        "listJobs" => c("All jobs", Q::None, json(list::<JobView>(g))),
        "getJob" => c("One job", Q::None, json(one::<JobView>(g))),
        "cancelJob" => c("Cancel a job", Q::None, json(one::<JobView>(g))),
        "listPlugins" => c("Installed plugins", Q::None, json(list::<PluginView>(g))),
        "installPlugin" => c("Install a signed plugin package on every host (replaces its world's plugin)", Q::Json(one::<PluginInstall>(q)), (Answer::Json(one::<PluginView>(g)), "the plugin, as this host loaded it")),
        "uninstallPlugin" => c("Remove the cluster's plugin of a world; the built-in default decides", Q::None, done),
        "resetPlugin" => c("Lift the quarantine of a world's plugin on every host (through the log; each host that lifts one records a plugin-reset event). A world with nothing quarantined is answered with an empty quarantined_on and a message saying so.", Q::None, (Answer::Json(one::<PluginResetView>(g)), "what was quarantined, and where")),
        "listEvents" => c("Events after `since` (exclusive), oldest first", Q::None, json(list::<EventView>(g))),
        "getCluster" => c("The cluster this host belongs to and its members", Q::None, json(one::<ClusterView>(g))),
        "createCluster" => c("Turn this single host into a cluster with its own CA; the host serves the cluster endpoint from then on", Q::Json(one::<ClusterCreate>(q)), json(one::<ClusterView>(g))),
        "issueJoinToken" => c("A one-time, expiring token for `nasvisor cluster join`", Q::Json(one::<JoinTokenCreate>(q)), json(one::<JoinTokenView>(g))),
        "removeMember" => c("Remove a host from the cluster; its certificate is no longer accepted", Q::None, done),
        "joinCluster" => c("Join this host (no VMs yet) to a cluster with a join token", Q::Json(one::<ClusterJoin>(q)), (Answer::Json(one::<ClusterView>(g)), "the cluster, as this host now sees it")),
        "listHosts" => c("Every host of the cluster, its health and resources", Q::None, json(list::<HostView>(g))),
        "cordonHost" => c("No new VMs are placed on the host", Q::None, (Answer::Json(one::<HostView>(g)), "the host")),
        "degradeHost" => c("Put the host into maintenance: its health becomes maintenance, with the reason; no new VMs are placed there", Q::Json(one::<HostDegrade>(q)), (Answer::Json(one::<HostView>(g)), "the host")),
        "undegradeHost" => c("Take the host out of maintenance", Q::None, (Answer::Json(one::<HostView>(g)), "the host")),
        "uncordonHost" => c("VMs may be placed on the host again", Q::None, (Answer::Json(one::<HostView>(g)), "the host")),
        "evacuateHost" => c("Cordon the host and live-migrate its running VMs away (a job)", Q::None, (Answer::Json(one::<JobView>(g)), "the job")),
        "recoverVm" => c("Give a VM whose host is lost (offline or removed) to another host, from its disks on shared storage, and start it there if it should run. Refused until the lost host's self-fencing deadline has passed, unless confirm_host_down", Q::Json(one::<VmRecover>(q)), (Answer::Json(one::<VmView>(g)), "the VM on its new host")),
        "migrateVm" => c("Move the VM to another host (a job): live when it runs; disks copied unless on shared storage", Q::Json(one::<VmMigrate>(q)), (Answer::Json(one::<JobView>(g)), "the job")),
        _ => None,
    }
}

/// The schema and description of query parameter `name`.
fn query_param(operation: &str, name: &str) -> Option<(Value, &'static str)> {
    Some(match (operation, name) {
        ("rebootHost", "force") => (json!({"type": "boolean", "default": false}), "shut down the VMs running on this host first (ACPI, forced off after shutdown_timeout_s; a job) instead of refusing; they start again when the daemon is back after the boot"),
        ("rebootHost", "shutdown_timeout_s") => (json!({"type": "integer", "minimum": 1, "maximum": MAX_SHUTDOWN_TIMEOUT_S, "default": DEFAULT_REBOOT_SHUTDOWN_TIMEOUT_S}), "with force: seconds each guest has to power off before it is forced off"),
        (_, "restart") => (json!({"type": "boolean", "default": false}), "restart the daemon in place to apply the settings at once (its VMs keep running; the endpoint is away for a few seconds)"),
        (_, name) => return query_param_any(name),
    })
}

/// The schema and description of query parameter `name` wherever it appears.
fn query_param_any(name: &str) -> Option<(Value, &'static str)> {
    Some(match name {
        "delete_disks" => (json!({"type": "boolean", "default": false}), "also delete the VM's volumes"),
        "move_back" => (json!({"type": "boolean", "default": true}), "move the VMs a `reboot` bundle evacuated from a host back once it is updated"),
        "force" => (json!({"type": "boolean", "default": false}), "drop the record of a VM whose host is lost (offline or removed), asking nothing of that host; its disks there are left behind and listed in the answer's disks"),
        "follow" => (json!({"type": "boolean", "default": false}), "keep streaming new output until the client goes away"),
        "tail" => (json!({"type": "integer", "minimum": 0, "maximum": MAX_CONSOLE_TAIL, "default": DEFAULT_CONSOLE_TAIL}), "bytes of history to send first"),
        "host" => (json!({"type": "string", "pattern": NAME_PATTERN}), "The host whose pools (or decisions, or settings) are meant (a host id as `host list` shows it); the host serving the request when absent. The request is carried out there."),
        "world" => (json!({"type": "string", "enum": crate::PLUGIN_WORLDS}), "one plugin world; every world when absent"),
        "os_family" => (json!({"type": "string", "pattern": NAME_PATTERN}), "default linux"),
        "os_variant" => (json!({"type": "string", "pattern": "^([A-Za-z0-9][A-Za-z0-9._-]{0,63})?$"}), "may be empty (default)"),
        "cloud_init" => (json!({"type": "boolean", "default": true}), "the image runs cloud-init"),
        "firmware" => (json!({"type": "string", "enum": ["bios", "uefi"], "default": "bios"}), "firmware the image boots with"),
        "ready_marker" => (json!({"type": "string", "minLength": 1, "maxLength": 128}), "printable ASCII line the guest prints when installed and up"),
        "since" => (json!({"type": "integer", "minimum": 0}), "last sequence number already seen"),
        "limit" => (json!({"type": "integer", "minimum": 1, "maximum": MAX_EVENT_LIMIT, "default": DEFAULT_EVENT_LIMIT}), "most entries to return"),
        _ => return None,
    })
}

fn error_content() -> Value {
    json!({"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}})
}

fn operation(
    q: &mut SchemaGenerator,
    g: &mut SchemaGenerator,
    route: &Route,
) -> Result<Value, String> {
    let c = contract(q, g, route.operation).ok_or_else(|| {
        format!(
            "operation {} has no contract in openapi::contract",
            route.operation
        )
    })?;
    let mut op = Map::new();
    op.insert("operationId".into(), json!(route.operation));
    op.insert("summary".into(), json!(c.summary));
    let public = route.access == crate::routes::Access::Public;
    match route.access {
        crate::routes::Access::Public => {
            op.insert("security".into(), json!([]));
        }
        crate::routes::Access::Role(role) => {
            op.insert("x-nasvisor-role".into(), json!(role.as_str()));
        }
    }
    let mut params = Vec::new();
    for seg in route.path.split('/') {
        if let Some(name) = seg.strip_prefix('{').and_then(|s| s.strip_suffix('}')) {
            params.push(json!({"name": name, "in": "path", "required": true,
                "schema": {"type": "string", "pattern": NAME_PATTERN}}));
        }
    }
    for q in route.query {
        let (schema, description) = query_param(route.operation, q)
            .ok_or_else(|| format!("query parameter {q} of {} has no schema", route.operation))?;
        params.push(json!({"name": q, "in": "query", "required": false, "schema": schema, "description": description}));
    }
    if !params.is_empty() {
        op.insert("parameters".into(), Value::Array(params));
    }
    match (c.request, route.body, route.raw_body) {
        (Request::None, false, _) => {}
        (Request::Json(s), true, false) => {
            op.insert(
                "requestBody".into(),
                json!({"required": true,
                "content": {"application/json": {"schema": s}}}),
            );
        }
        (Request::Bytes, true, true) => {
            op.insert("requestBody".into(), json!({"required": true,
                "content": {"application/octet-stream": {"schema": {"type": "string", "format": "binary"}}}}));
        }
        _ => {
            return Err(format!(
                "the body of {} differs between the route table and its contract",
                route.operation
            ))
        }
    }
    let (answer, description) = c.answer;
    let success = match answer {
        Answer::Empty => json!({"description": description}),
        Answer::Json(s) => {
            json!({"description": description, "content": {"application/json": {"schema": s}}})
        }
        Answer::Bytes => json!({"description": description,
            "content": {"application/octet-stream": {"schema": {"type": "string", "format": "binary"}}}}),
        Answer::Text(media) => json!({"description": description,
            "content": {media: {"schema": {"type": "string"}}}}),
    };
    let mut responses = Map::new();
    responses.insert(route.success.to_string(), success);
    if !public {
        responses.insert("401".into(), json!({"description": "missing, wrong, expired or revoked credential",
            "headers": {"WWW-Authenticate": {"schema": {"type": "string"}}}, "content": error_content()}));
        responses.insert("403".into(), json!({"description": "the caller's role may not do this (x-nasvisor-role names the role needed), or a session-cookie request without its X-CSRF-Token", "content": error_content()}));
    }
    if route.path != crate::routes::HEALTH_PATH {
        responses.insert("400".into(), json!({"description": "bad request; error.field names the field", "content": error_content()}));
    }
    if route.operation == "login" {
        responses.insert("429".into(), json!({"description": "too many failed logins for this user or address; retry after Retry-After seconds",
            "headers": {"Retry-After": {"schema": {"type": "integer"}}}, "content": error_content()}));
    }
    responses.insert("default".into(), json!({"description": "error (404, 405, 409, 413, 415, 422, 500, 503)", "content": error_content()}));
    op.insert("responses".into(), Value::Object(responses));
    Ok(Value::Object(op))
}

/// The whole OpenAPI 3.1 document, generated. Keys are sorted at every
/// level, so the text does not depend on serde_json's features.
pub fn generate() -> Result<Value, String> {
    // OpenAPI 3.1 takes JSON Schema 2020-12 as it is. Request bodies are
    // described as they are read (an optional field may be left out),
    // answers as they are written (every field is there).
    let settings = |contract| {
        SchemaSettings::draft2020_12()
            .with(|s| {
                s.definitions_path = "/components/schemas".into();
                s.meta_schema = None;
                s.contract = contract;
            })
            .into_generator()
    };
    let mut q = settings(SchemaContract::Deserialize);
    let mut g = settings(SchemaContract::Serialize);
    let mut paths = Map::new();
    for route in ROUTES {
        let op = operation(&mut q, &mut g, route)?;
        let entry = paths
            .entry(route.path.to_string())
            .or_insert_with(|| Value::Object(Map::new()));
        if let Some(m) = entry.as_object_mut() {
            m.insert(route.method.to_ascii_lowercase(), op);
        }
    }
    // The schema of every error answer (its reference is all we need here).
    g.subschema_for::<ErrorView>();
    let mut schemas: Map<String, Value> = g.take_definitions(true).into_iter().collect();
    for (name, schema) in q.take_definitions(true) {
        match schemas.get(&name) {
            Some(other) if *other != schema => {
                return Err(format!(
                    "schema {name} differs between requests and answers; give them two types"
                ))
            }
            _ => {
                schemas.insert(name, schema);
            }
        }
    }
    let doc = json!({
        "openapi": "3.1.0",
        "info": {
            "title": "nasvisor admin API",
            "version": "1",
            "description": "HTTPS only. Every route except /healthz and the login needs a credential: `Authorization: Bearer <API token or session token>`, or the web console's session cookie (then changes also need the `X-CSRF-Token` header). Each operation's `x-nasvisor-role` is the least role that may call it (viewer < operator < admin). JSON in and out; every error is `{\"error\": {\"field\", \"reason\"}}`. Generated from the route table and the types of nasvisor-api-types (regenerate with `NASVISOR_WRITE_OPENAPI=1 cargo test --release -p nasvisor-api-types openapi`)."
        },
        "servers": [{"url": "https://localhost:8443"}],
        "security": [{"bearer": []}],
        "paths": paths,
        "components": {
            "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}},
            "schemas": schemas,
        },
    });
    Ok(sorted(doc))
}

/// `v` with the keys of every object in sorted order.
fn sorted(v: Value) -> Value {
    match v {
        Value::Object(m) => {
            let mut entries: Vec<(String, Value)> = m.into_iter().collect();
            entries.sort_by(|a, b| a.0.cmp(&b.0));
            Value::Object(entries.into_iter().map(|(k, v)| (k, sorted(v))).collect())
        }
        Value::Array(a) => Value::Array(a.into_iter().map(sorted).collect()),
        other => other,
    }
}

/// The generated document as the committed file holds it (pretty, with a
/// final newline).
pub fn generate_text() -> Result<String, String> {
    let doc = generate()?;
    let mut text = serde_json::to_string_pretty(&doc).map_err(|e| e.to_string())?;
    text.push('\n');
    Ok(text)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn openapi_json_is_the_generated_document() {
        let generated = generate_text().expect("the document generates");
        let path = concat!(env!("CARGO_MANIFEST_DIR"), "/openapi.json");
        if std::env::var_os("NASVISOR_WRITE_OPENAPI").is_some() {
            std::fs::write(path, &generated).expect("openapi.json is written");
            return;
        }
        assert!(
            generated == OPENAPI_JSON,
            "host/api-types/openapi.json differs from the document generated from the route \
             table and the types; regenerate it with \
             `NASVISOR_WRITE_OPENAPI=1 cargo test --release -p nasvisor-api-types openapi` \
             and commit it"
        );
    }

    #[test]
    fn every_route_has_a_contract_and_every_query_parameter_a_schema() {
        let (mut q, mut g) = (SchemaGenerator::default(), SchemaGenerator::default());
        for route in ROUTES {
            assert!(
                contract(&mut q, &mut g, route.operation).is_some(),
                "{}",
                route.operation
            );
            for q in route.query {
                assert!(
                    query_param(route.operation, q).is_some(),
                    "{} {q}",
                    route.operation
                );
            }
        }
        generate().expect("the document generates");
    }

    #[test]
    fn every_component_reference_resolves() {
        let doc = generate().unwrap();
        let text = doc.to_string();
        let schemas = doc["components"]["schemas"].as_object().unwrap();
        for part in text.split("\"#/components/schemas/").skip(1) {
            let name = &part[..part.find('"').unwrap()];
            assert!(schemas.contains_key(name), "dangling reference to {name}");
        }
        for want in [
            "Vm",
            "Host",
            "Job",
            "Pool",
            "Volume",
            "Snapshot",
            "Image",
            "Vswitch",
            "Event",
            "Plugin",
            "PluginHostState",
            "PluginReset",
            "Cluster",
            "Member",
            "JoinToken",
            "Error",
            "Session",
            "Caller",
            "User",
            "ApiToken",
            "NewApiToken",
            "AuditEntry",
            "VmCreate",
            "PowerOp",
        ] {
            assert!(schemas.contains_key(want), "no component {want}");
        }
    }
}
