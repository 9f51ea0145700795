//! Routing: method + path (+ query + JSON body) → [`Action`].
//!
//! The route table, [`ROUTES`], lives in `nasvisor-api-types`, which
//! generates `openapi.json` from it.

use http::StatusCode;
pub use nasvisor_api_types::routes::{
    Access, Route, HEALTH_PATH, IMAGE_META_QUERY, LOGIN_PATH, ROUTES,
};
use nasvisor_api_types::ApiError;
use nasvisor_api_types::{
    check_name, Action, ClusterCreate, ClusterJoin, ConsoleInputBody, FirmwareKind, HostDegrade,
    HostSettingsReplace, ImageAddBody, ImageMetaSpec, ImageUpload, JoinTokenCreate, PasswordChange,
    PluginInstall, PoolCreate, PowerOp, SnapshotCreate, TokenCreate, UserCreate, UserUpdate,
    Validate, VmCreate, VmMigrate, VmRecover, VmUpdate, VolumeClone, VolumeCreate, VolumeImport,
    VolumeResize, VswitchCreate, DEFAULT_CONSOLE_TAIL, DEFAULT_EVENT_LIMIT, MAX_CONSOLE_TAIL,
    MAX_EVENT_LIMIT, MAX_SHUTDOWN_TIMEOUT_S,
};
use serde::de::DeserializeOwned;
use std::collections::BTreeMap;

/// A matched route and its path parameters.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Matched {
    /// The route.
    pub route: Route,
    /// Path parameters by name (not yet validated).
    pub params: BTreeMap<&'static str, String>,
}

fn match_template(template: &'static str, path: &str) -> Option<BTreeMap<&'static str, String>> {
    let mut t = template.split('/');
    let mut p = path.split('/');
    let mut params = BTreeMap::new();
    loop {
        match (t.next(), p.next()) {
            (None, None) => return Some(params),
            (Some(ts), Some(ps)) => {
                if let Some(name) = ts.strip_prefix('{').and_then(|s| s.strip_suffix('}')) {
                    if ps.is_empty() {
                        return None;
                    }
                    params.insert(name, ps.to_string());
                } else if ts != ps {
                    return None;
                }
            }
            _ => return None,
        }
    }
}

/// Finds the route of `method path`: 404 when no route has the path, 405
/// (with the allowed methods in the reason) when none has the method.
pub fn find(method: &str, path: &str) -> Result<Matched, ApiError> {
    let mut allowed = Vec::new();
    for route in ROUTES {
        if let Some(params) = match_template(route.path, path) {
            if route.method == method {
                return Ok(Matched {
                    route: *route,
                    params,
                });
            }
            allowed.push(route.method);
        }
    }
    if allowed.is_empty() {
        Err(ApiError::status(
            StatusCode::NOT_FOUND,
            format!("no such route: {path}"),
        ))
    } else {
        Err(ApiError::status(
            StatusCode::METHOD_NOT_ALLOWED,
            format!(
                "method {method} not allowed here; allowed: {}",
                allowed.join(", ")
            ),
        ))
    }
}

/// The methods allowed on `path` (for the `Allow` header of a 405).
pub fn allowed_methods(path: &str) -> Vec<&'static str> {
    ROUTES
        .iter()
        .filter(|r| match_template(r.path, path).is_some())
        .map(|r| r.method)
        .collect()
}

/// Strips serde_json's " at line L column C" suffix.
fn clean(msg: &str) -> String {
    match msg.rfind(" at line ") {
        Some(i) => msg[..i].to_string(),
        None => msg.to_string(),
    }
}

fn backticked(msg: &str, prefix: &str) -> Option<String> {
    let rest = msg.strip_prefix(prefix)?;
    let rest = rest.strip_prefix('`')?;
    Some(rest[..rest.find('`')?].to_string())
}

/// Parses a JSON body into `T`; errors name the field (dotted path).
pub fn parse_body<T: DeserializeOwned>(body: &[u8]) -> Result<T, ApiError> {
    if body.is_empty() {
        return Err(ApiError::field("body", "a JSON body is required"));
    }
    // Every body is a JSON object; serde would also read a struct from an
    // array of its fields in order (`["vm1", 2, 2048]`, or `[]` for one
    // whose fields all have defaults), which the document does not allow.
    if body.iter().find(|b| !b.is_ascii_whitespace()) == Some(&b'[') {
        return Err(ApiError::field(
            "body",
            "must be a JSON object, not an array",
        ));
    }
    let de = &mut serde_json::Deserializer::from_slice(body);
    let value: T = match serde_path_to_error::deserialize(&mut *de) {
        Ok(v) => v,
        Err(e) => {
            let path = e.path().to_string();
            let msg = clean(&e.inner().to_string());
            let join = |leaf: String| {
                if path == "." {
                    leaf
                } else {
                    format!("{path}.{leaf}")
                }
            };
            let field = if let Some(f) = backticked(&msg, "unknown field ") {
                // The path usually already ends with the unknown key.
                if path == f || path.ends_with(&format!(".{f}")) {
                    path
                } else {
                    join(f)
                }
            } else if let Some(f) = backticked(&msg, "missing field ") {
                join(f)
            } else if path == "." || path.contains('?') {
                "body".to_string()
            } else {
                path
            };
            return Err(ApiError::field(field, msg));
        }
    };
    de.end()
        .map_err(|e| ApiError::field("body", clean(&e.to_string())))?;
    Ok(value)
}

fn parse_valid<T: DeserializeOwned + Validate>(body: &[u8]) -> Result<T, ApiError> {
    let v: T = parse_body(body)?;
    v.validate()?;
    Ok(v)
}

/// Decodes a query component (`application/x-www-form-urlencoded`: `%XX`
/// escapes and `+` for a space) strictly: every `%` must be followed by two
/// hex digits, and the result must be UTF-8. `field` names the parameter in
/// the error (`query` while the key itself is decoded).
fn percent_decode(field: &str, s: &str) -> Result<String, ApiError> {
    let b = s.as_bytes();
    if let Some(at) = b.iter().enumerate().find_map(|(i, &c)| {
        let ok = c != b'%'
            || (b.get(i + 1).is_some_and(u8::is_ascii_hexdigit)
                && b.get(i + 2).is_some_and(u8::is_ascii_hexdigit));
        (!ok).then_some(i)
    }) {
        let bad: String = s[at..].chars().take(3).collect();
        return Err(ApiError::field(
            field,
            format!(
                "bad %-escape {bad:?} in query parameter: % must be followed by two hex digits"
            ),
        ));
    }
    let plus_as_space = s.replace('+', " ");
    percent_encoding::percent_decode_str(&plus_as_space)
        .decode_utf8()
        .map(|c| c.into_owned())
        .map_err(|_| ApiError::field(field, "query parameter is not UTF-8"))
}

/// Parses a query string into key/value pairs (decoded), refusing keys not
/// in `known` and repeated keys.
pub fn parse_query(
    query: Option<&str>,
    known: &[&str],
) -> Result<BTreeMap<String, String>, ApiError> {
    let mut out = BTreeMap::new();
    for pair in query.unwrap_or("").split('&').filter(|s| !s.is_empty()) {
        let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
        let k = percent_decode("query", k)?;
        if !known.contains(&k.as_str()) {
            return Err(ApiError::field(k, "unknown query parameter"));
        }
        let v = percent_decode(&k, v)?;
        if out.insert(k.clone(), v).is_some() {
            return Err(ApiError::field(k, "given more than once"));
        }
    }
    Ok(out)
}

fn parse_u64(field: &str, v: &str) -> Result<u64, ApiError> {
    if v.is_empty() || !v.bytes().all(|b| b.is_ascii_digit()) {
        return Err(ApiError::field(field, "must be a non-negative integer"));
    }
    v.parse()
        .map_err(|_| ApiError::field(field, "must be a non-negative integer below 2^64"))
}

/// The parameters of `GET /api/v1/vms/{id}/console`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConsoleRequest {
    /// VM id.
    pub id: String,
    /// Keep streaming new output.
    pub follow: bool,
    /// Bytes of history to send first.
    pub tail: u64,
}

/// Validates the path and query of the console stream route.
pub fn console_request(m: &Matched, query: Option<&str>) -> Result<ConsoleRequest, ApiError> {
    check_params(m)?;
    let q = parse_query(query, m.route.query)?;
    let follow = flag(&q, "follow")?.unwrap_or(false);
    let tail = match q.get("tail") {
        Some(v) => parse_u64("tail", v)?,
        None => DEFAULT_CONSOLE_TAIL,
    };
    if tail > MAX_CONSOLE_TAIL {
        return Err(ApiError::field(
            "tail",
            format!("must be at most {MAX_CONSOLE_TAIL} bytes, got {tail}"),
        ));
    }
    Ok(ConsoleRequest {
        id: m.params.get("id").cloned().unwrap_or_default(),
        follow,
        tail,
    })
}

/// Validates the path and query (the image metadata) of the upload route.
pub fn upload_request(m: &Matched, query: Option<&str>) -> Result<ImageUpload, ApiError> {
    check_params(m)?;
    let mut q = parse_query(query, m.route.query)?;
    let cloud_init = flag(&q, "cloud_init")?;
    let firmware = q
        .get("firmware")
        .map(|v| {
            v.parse::<FirmwareKind>()
                .map_err(|e| ApiError::field("firmware", e))
        })
        .transpose()?;
    let meta = ImageMetaSpec::from_parts(
        q.remove("os_family"),
        q.remove("os_variant"),
        cloud_init,
        firmware,
        q.remove("ready_marker"),
    )?;
    Ok(ImageUpload {
        name: m.params.get("name").cloned().unwrap_or_default(),
        meta,
    })
}

/// Validates the path and query of the cluster update route: whether
/// evacuated VMs move back (`move_back`, default true).
pub fn cluster_update_request(m: &Matched, query: Option<&str>) -> Result<bool, ApiError> {
    check_params(m)?;
    let q = parse_query(query, m.route.query)?;
    flag(&q, "move_back").map(|v| v.unwrap_or(true))
}

/// Validates the path and query of the firmware install route (it takes
/// none).
pub fn firmware_request(m: &Matched, query: Option<&str>) -> Result<(), ApiError> {
    check_params(m)?;
    parse_query(query, m.route.query)?;
    Ok(())
}

fn check_params(m: &Matched) -> Result<(), ApiError> {
    for (name, value) in &m.params {
        check_name(name, value)?;
    }
    Ok(())
}

/// A guest's time to power off, seconds: 1 to [`MAX_SHUTDOWN_TIMEOUT_S`].
fn shutdown_timeout(field: &str, v: &str) -> Result<u32, ApiError> {
    match parse_u64(field, v)? {
        n @ 1.. if n <= u64::from(MAX_SHUTDOWN_TIMEOUT_S) => Ok(n as u32),
        _ => Err(ApiError::field(
            field,
            format!("must be between 1 and {MAX_SHUTDOWN_TIMEOUT_S} (seconds)"),
        )),
    }
}

/// The boolean query parameter `name`, when given.
fn flag(q: &BTreeMap<String, String>, name: &str) -> Result<Option<bool>, ApiError> {
    q.get(name).map(|v| parse_bool(name, v)).transpose()
}

fn parse_bool(field: &str, v: &str) -> Result<bool, ApiError> {
    match v {
        "true" | "1" | "" => Ok(true),
        "false" | "0" => Ok(false),
        _ => Err(ApiError::field(field, "must be true or false")),
    }
}

/// `since` and `limit` of a log's list (events, audit).
fn since_limit(q: &BTreeMap<String, String>) -> Result<(Option<u64>, u32), ApiError> {
    let since = q.get("since").map(|v| parse_u64("since", v)).transpose()?;
    let limit = match q.get("limit") {
        Some(v) => parse_u64("limit", v)?,
        None => u64::from(DEFAULT_EVENT_LIMIT),
    };
    if !(1..=u64::from(MAX_EVENT_LIMIT)).contains(&limit) {
        return Err(ApiError::field(
            "limit",
            format!("must be 1 to {MAX_EVENT_LIMIT}, got {limit}"),
        ));
    }
    Ok((since, limit as u32))
}

/// Turns a matched route, its query and its body into an [`Action`],
/// validating everything that needs no core state. Routes the API layer
/// answers itself (`health`, `login`, the certificate's) or streams
/// (`getConsole`, `uploadImage`, `installFirmware`) give `Ok(None)`.
pub fn to_action(
    m: &Matched,
    query: Option<&str>,
    body: &[u8],
) -> Result<Option<Action>, ApiError> {
    check_params(m)?;
    let q = parse_query(query, m.route.query)?;
    if !m.route.body && !body.is_empty() {
        return Err(ApiError::field("body", "this route takes no body"));
    }
    let p = |n: &str| m.params.get(n).cloned().unwrap_or_default();
    let action = match m.route.operation {
        "health" | "login" | "getConsole" | "uploadImage" | "installFirmware"
        | "startClusterUpdate" | "getCertificate" | "replaceCertificate" | "getOpenapi"
        | "getMetrics" => return Ok(None),
        "logout" => Action::Logout,
        "whoami" => Action::Whoami,
        "changePassword" => Action::ChangePassword(parse_valid::<PasswordChange>(body)?),
        "listUsers" => Action::ListUsers,
        "createUser" => Action::CreateUser(parse_valid::<UserCreate>(body)?),
        "updateUser" => Action::UpdateUser {
            name: p("name"),
            update: parse_valid::<UserUpdate>(body)?,
        },
        "deleteUser" => Action::DeleteUser { name: p("name") },
        "listTokens" => Action::ListTokens,
        "createToken" => Action::CreateToken(parse_valid::<TokenCreate>(body)?),
        "revokeToken" => Action::RevokeToken { id: p("id") },
        "getHost" => Action::GetHost,
        "getFirmware" => Action::GetFirmware,
        "getHostSettings" => Action::GetHostSettings,
        "replaceHostSettings" => Action::ReplaceHostSettings {
            text: parse_valid::<HostSettingsReplace>(body)?.text,
            restart: flag(&q, "restart")?.unwrap_or(false),
        },
        "clearHostSettings" => Action::ClearHostSettings {
            restart: flag(&q, "restart")?.unwrap_or(false),
        },
        "rebootHost" => Action::RebootHost {
            force: flag(&q, "force")?.unwrap_or(false),
            shutdown_timeout_s: q
                .get("shutdown_timeout_s")
                .map(|v| shutdown_timeout("shutdown_timeout_s", v))
                .transpose()?,
        },
        "getClusterUpdate" => Action::GetClusterUpdate,
        "resumeClusterUpdate" => Action::ResumeClusterUpdate,
        "abortClusterUpdate" => Action::AbortClusterUpdate,
        "listVms" => Action::ListVms,
        "createVm" => Action::CreateVm(parse_valid::<VmCreate>(body)?),
        "getVm" => Action::GetVm { id: p("id") },
        "updateVm" => Action::UpdateVm {
            id: p("id"),
            update: parse_valid::<VmUpdate>(body)?,
        },
        "deleteVm" => Action::DeleteVm {
            id: p("id"),
            delete_disks: flag(&q, "delete_disks")?.unwrap_or(false),
            force: flag(&q, "force")?.unwrap_or(false),
        },
        "vmPower" => Action::VmPower {
            id: p("id"),
            op: parse_valid::<PowerOp>(body)?,
        },
        "listPools" => Action::ListPools,
        "createPool" => Action::CreatePool(parse_valid::<PoolCreate>(body)?),
        "listVolumes" => Action::ListVolumes { pool: p("pool") },
        "createVolume" => Action::CreateVolume {
            pool: p("pool"),
            volume: parse_valid::<VolumeCreate>(body)?,
        },
        "deleteVolume" => Action::DeleteVolume {
            pool: p("pool"),
            volume: p("volume"),
        },
        "resizeVolume" => Action::ResizeVolume {
            pool: p("pool"),
            volume: p("volume"),
            size_mib: parse_valid::<VolumeResize>(body)?.size_mib,
        },
        "snapshotVolume" => Action::SnapshotVolume {
            pool: p("pool"),
            volume: p("volume"),
            name: parse_valid::<SnapshotCreate>(body)?.name,
        },
        "listImages" => Action::ListImages,
        "addImage" => Action::AddImage(parse_body::<ImageAddBody>(body)?.into_add()?),
        "deleteImage" => Action::DeleteImage { name: p("name") },
        "listVswitches" => Action::ListVswitches,
        "createVswitch" => Action::CreateVswitch(parse_valid::<VswitchCreate>(body)?),
        "deleteVswitch" => Action::DeleteVswitch { name: p("name") },
        "listJobs" => Action::ListJobs,
        "getJob" => Action::GetJob { id: p("id") },
        "cancelJob" => Action::CancelJob { id: p("id") },
        "listPlugins" => Action::ListPlugins,
        "consoleInput" => Action::ConsoleInput {
            id: p("id"),
            data: parse_valid::<ConsoleInputBody>(body)?.data,
        },
        "deletePool" => Action::DeletePool { name: p("name") },
        "importVolume" => {
            let b = parse_valid::<VolumeImport>(body)?;
            Action::ImportVolume {
                pool: p("pool"),
                name: b.name,
                path: b.path,
            }
        }
        "listSnapshots" => Action::ListSnapshots {
            pool: p("pool"),
            volume: p("volume"),
        },
        "revertSnapshot" => Action::RevertSnapshot {
            pool: p("pool"),
            volume: p("volume"),
            name: p("snapshot"),
        },
        "deleteSnapshot" => Action::DeleteSnapshot {
            pool: p("pool"),
            volume: p("volume"),
            name: p("snapshot"),
        },
        "cloneVolume" => {
            let b = parse_valid::<VolumeClone>(body)?;
            Action::CloneVolume {
                pool: p("pool"),
                volume: p("volume"),
                name: b.name,
                linked: b.linked,
            }
        }
        "getCluster" => Action::GetCluster,
        "createCluster" => Action::CreateCluster(parse_valid::<ClusterCreate>(body)?),
        "issueJoinToken" => Action::IssueJoinToken(parse_valid::<JoinTokenCreate>(body)?),
        "removeMember" => Action::RemoveMember {
            node_id: parse_u64("node", &p("node"))?,
        },
        "joinCluster" => Action::JoinCluster(parse_valid::<ClusterJoin>(body)?),
        "listHosts" => Action::ListHosts,
        "cordonHost" | "uncordonHost" => Action::SetCordon {
            host: p("host"),
            cordoned: m.route.operation == "cordonHost",
        },
        "evacuateHost" => Action::EvacuateHost { host: p("host") },
        "degradeHost" => Action::SetMaintenance {
            host: p("host"),
            maintenance: Some(parse_valid::<HostDegrade>(body)?),
        },
        "undegradeHost" => Action::SetMaintenance {
            host: p("host"),
            maintenance: None,
        },
        "installPlugin" => Action::InstallPlugin(parse_valid::<PluginInstall>(body)?),
        "uninstallPlugin" => Action::UninstallPlugin {
            world: plugin_world(p("world"))?,
        },
        "resetPlugin" => Action::ResetPlugin {
            world: plugin_world(p("world"))?,
        },
        "migrateVm" => Action::MigrateVm {
            id: p("id"),
            migrate: parse_valid::<VmMigrate>(body)?,
        },
        "recoverVm" => Action::RecoverVm {
            id: p("id"),
            recover: parse_valid::<VmRecover>(body)?,
        },
        "listEvents" => {
            let (since, limit) = since_limit(&q)?;
            Action::ListEvents { since, limit }
        }
        "listAudit" => {
            let (since, limit) = since_limit(&q)?;
            Action::ListAudit { since, limit }
        }
        "listDecisions" => Action::ListDecisions {
            world: q.get("world").cloned().map(plugin_world).transpose()?,
            limit: since_limit(&q)?.1,
        },
        other => {
            return Err(ApiError::status(
                StatusCode::INTERNAL_SERVER_ERROR,
                format!("route {other} has no action"),
            ))
        }
    };
    // Storage requests may name the host whose pools are meant.
    if let Some(host) = q.get("host") {
        nasvisor_api_types::check_name("host", host)?;
        return Ok(Some(Action::OnHost {
            host: host.clone(),
            request: Box::new(action),
        }));
    }
    Ok(Some(action))
}

/// A plugin world named in a path, checked.
fn plugin_world(world: String) -> Result<String, ApiError> {
    if !nasvisor_api_types::PLUGIN_WORLDS.contains(&world.as_str()) {
        return Err(ApiError::field(
            "world",
            format!(
                "{world:?} is not a plugin world ({})",
                nasvisor_api_types::PLUGIN_WORLDS.join(", ")
            ),
        ));
    }
    Ok(world)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exactly_the_storage_routes_take_a_host() {
        let mut with_host: Vec<&str> = ROUTES
            .iter()
            .filter(|r| r.query.contains(&"host"))
            .map(|r| r.operation)
            .collect();
        with_host.sort();
        let mut want = nasvisor_api_types::HOST_SCOPED_OPERATIONS.to_vec();
        want.sort();
        assert_eq!(with_host, want);
    }

    fn act(
        method: &str,
        path: &str,
        query: Option<&str>,
        body: &str,
    ) -> Result<Option<Action>, ApiError> {
        to_action(&find(method, path)?, query, body.as_bytes())
    }

    #[test]
    fn a_storage_request_names_its_host_and_others_cannot() {
        let a = act(
            "GET",
            "/api/v1/pools/default/volumes",
            Some("host=nas2"),
            "",
        )
        .unwrap();
        assert_eq!(
            a,
            Some(Action::OnHost {
                host: "nas2".into(),
                request: Box::new(Action::ListVolumes {
                    pool: "default".into()
                }),
            })
        );
        let e = act("GET", "/api/v1/pools/default/volumes", Some("host=a/b"), "").unwrap_err();
        assert_eq!(e.field.as_deref(), Some("host"), "{e:?}");
        // Not a storage route: `host` is an unknown parameter there.
        assert!(act("GET", "/api/v1/vms", Some("host=nas2"), "").is_err());
    }

    #[test]
    fn every_route_has_an_action_or_is_local() {
        for route in ROUTES {
            let m = Matched {
                route: *route,
                params: BTreeMap::new(),
            };
            let e = to_action(&m, None, b"");
            if let Err(e) = e {
                assert_ne!(
                    e.status,
                    StatusCode::INTERNAL_SERVER_ERROR,
                    "{}",
                    route.operation
                );
            }
        }
    }

    #[test]
    fn finds_routes() {
        assert_eq!(
            act("GET", "/api/v1/vms/vm1", None, "").unwrap(),
            Some(Action::GetVm { id: "vm1".into() })
        );
        assert_eq!(
            find("GET", "/api/v1/nope").unwrap_err().status,
            StatusCode::NOT_FOUND
        );
        assert_eq!(
            find("GET", "/api/v1/vms/").unwrap_err().status,
            StatusCode::NOT_FOUND
        );
        assert_eq!(
            find("PUT", "/api/v1/vms").unwrap_err().status,
            StatusCode::METHOD_NOT_ALLOWED
        );
        assert_eq!(allowed_methods("/api/v1/vms"), vec!["GET", "POST"]);
        assert_eq!(
            act("DELETE", "/api/v1/vms/vm1", Some("delete_disks=true"), "").unwrap(),
            Some(Action::DeleteVm {
                id: "vm1".into(),
                delete_disks: true,
                force: false,
            })
        );
        assert_eq!(
            act("DELETE", "/api/v1/vms/vm1", Some("x=1"), "")
                .unwrap_err()
                .field
                .as_deref(),
            Some("x")
        );
        assert_eq!(
            act("GET", "/api/v1/vms/..", None, "")
                .unwrap_err()
                .field
                .as_deref(),
            Some("id")
        );
    }

    #[test]
    fn a_forced_reboot_takes_its_shutdown_timeout_within_bounds() {
        let reboot = |q: Option<&str>| act("POST", "/api/v1/host/firmware/reboot", q, "");
        assert_eq!(
            reboot(None).unwrap(),
            Some(Action::RebootHost {
                force: false,
                shutdown_timeout_s: None
            })
        );
        assert_eq!(
            reboot(Some("force=true&shutdown_timeout_s=30")).unwrap(),
            Some(Action::RebootHost {
                force: true,
                shutdown_timeout_s: Some(30)
            })
        );
        for bad in ["0", "3601", "-1", "ten", ""] {
            let e = reboot(Some(&format!("force=1&shutdown_timeout_s={bad}"))).unwrap_err();
            assert_eq!(
                e.field.as_deref(),
                Some("shutdown_timeout_s"),
                "{bad}: {e:?}"
            );
        }
        let e = reboot(Some("force=maybe")).unwrap_err();
        assert_eq!(e.field.as_deref(), Some("force"));
        // An older host reads the forwarded action of a plain reboot as
        // before: nothing but its tag.
        assert_eq!(
            serde_json::to_string(&Action::RebootHost {
                force: false,
                shutdown_timeout_s: None
            })
            .unwrap(),
            r#"{"action":"reboot_host"}"#
        );
    }

    #[test]
    fn body_errors_name_the_field() {
        let e = act(
            "POST",
            "/api/v1/vms",
            None,
            r#"{"name":"a","vcpus":1,"memory_mib":64,"bogus":1}"#,
        )
        .unwrap_err();
        assert_eq!(e.field.as_deref(), Some("bogus"));
        let e = act("POST", "/api/v1/vms", None, r#"{"name":"a","vcpus":1}"#).unwrap_err();
        assert_eq!(e.field.as_deref(), Some("memory_mib"));
        let e = act(
            "POST",
            "/api/v1/vms",
            None,
            r#"{"name":"a","vcpus":"x","memory_mib":64}"#,
        )
        .unwrap_err();
        assert_eq!(e.field.as_deref(), Some("vcpus"));
        let e = act(
            "POST",
            "/api/v1/vms",
            None,
            r#"{"name":"a","vcpus":1,"memory_mib":64,"disks":[{"pool":"p","size_mib":-1}]}"#,
        )
        .unwrap_err();
        assert_eq!(e.field.as_deref(), Some("disks[0].size_mib"));
        let e = act(
            "POST",
            "/api/v1/vms",
            None,
            r#"{"name":"a","vcpus":1,"memory_mib":64,"nics":[{"vswitch":"s","x":1}]}"#,
        )
        .unwrap_err();
        assert_eq!(e.field.as_deref(), Some("nics[0].x"));
        let e = act("POST", "/api/v1/vms", None, r#"{"name":"a""#).unwrap_err();
        assert_eq!(e.status, StatusCode::BAD_REQUEST);
        let e = act(
            "POST",
            "/api/v1/vms",
            None,
            r#"{"name":"a","vcpus":1,"memory_mib":64} x"#,
        )
        .unwrap_err();
        assert_eq!(e.field.as_deref(), Some("body"));
        let e = act("POST", "/api/v1/vms", None, "").unwrap_err();
        assert_eq!(e.field.as_deref(), Some("body"));
        let e = act(
            "POST",
            "/api/v1/vms",
            None,
            r#"{"name":"a/b","vcpus":1,"memory_mib":64}"#,
        )
        .unwrap_err();
        assert_eq!(e.field.as_deref(), Some("name"));
        let e = act("GET", "/api/v1/vms", None, "{}").unwrap_err();
        assert_eq!(e.field.as_deref(), Some("body"));
        let e = act(
            "POST",
            "/api/v1/images",
            None,
            r#"{"name":"i","path":"/a","url":"http://x"}"#,
        )
        .unwrap_err();
        assert_eq!(e.field.as_deref(), Some("path"));
        let e = act(
            "POST",
            "/api/v1/vms/v/power",
            None,
            r#"{"op":"shutdown","timeout_s":99999}"#,
        )
        .unwrap_err();
        assert_eq!(e.field.as_deref(), Some("timeout_s"));
        let e = act("PATCH", "/api/v1/vms/v", None, "{}").unwrap_err();
        assert_eq!(e.status, StatusCode::BAD_REQUEST);
    }

    #[test]
    fn a_malformed_percent_escape_in_the_query_is_refused_naming_the_parameter() {
        // A sign or a single digit after % is not an escape: `%+5` once
        // became byte 0x05.
        for bad in ["%+5", "%-5", "%5", "%", "%zz", "a%2", "%%41", "%+F"] {
            let e = act("GET", "/api/v1/events", Some(&format!("since={bad}")), "").unwrap_err();
            assert_eq!(e.status, StatusCode::BAD_REQUEST, "{bad}");
            assert_eq!(e.field.as_deref(), Some("since"), "{bad}: {e:?}");
            assert!(e.reason.contains("%-escape"), "{bad}: {}", e.reason);
            // In a key, the error names the query.
            let e = act("GET", "/api/v1/events", Some(&format!("{bad}=1")), "").unwrap_err();
            assert_eq!(e.field.as_deref(), Some("query"), "{bad}: {e:?}");
        }
        // Well-formed escapes and `+` still decode.
        let q = parse_query(
            Some("os_variant=a%2Db+c&ready_marker=%4F%4b"),
            IMAGE_META_QUERY,
        )
        .unwrap();
        assert_eq!(q["os_variant"], "a-b c");
        assert_eq!(q["ready_marker"], "OK");
        assert!(parse_query(Some("os_variant=%FF"), IMAGE_META_QUERY).is_err());
    }
}
