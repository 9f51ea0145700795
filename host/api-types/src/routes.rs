//! The route table of the API: method, path, operation and query of every
//! route. The server (`nasvisor-api`) routes by it and [`crate::openapi`]
//! generates `openapi.json` from it. Each route says who may call it
//! ([`Access`]): the server refuses any other caller before the core sees
//! the request.

use crate::body::Role;

/// One route of the API.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Route {
    /// HTTP method, upper case.
    pub method: &'static str,
    /// Path template, `{name}` for a parameter.
    pub path: &'static str,
    /// `operationId` in `openapi.json`.
    pub operation: &'static str,
    /// Status of a successful answer.
    pub success: u16,
    /// Whether the route takes a JSON body.
    pub body: bool,
    /// The request body is raw bytes (`application/octet-stream`), streamed
    /// to the core, not JSON.
    pub raw_body: bool,
    /// The query parameters the route knows.
    pub query: &'static [&'static str],
    /// Who may call it.
    pub access: Access,
}

/// Who may call a route.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Access {
    /// Anyone, unauthenticated (`/healthz`, the login).
    Public,
    /// A caller acting with this role or a higher one.
    Role(Role),
}

impl Access {
    /// Whether a caller acting with `role` may call the route.
    pub fn allows(self, role: Role) -> bool {
        match self {
            Access::Public => true,
            Access::Role(needed) => role >= needed,
        }
    }
}

/// A route: a read (`GET`) for viewers, anything else for admins unless
/// [`operator`], [`viewer`] or [`public`] says otherwise.
const fn r(
    method: &'static str,
    path: &'static str,
    operation: &'static str,
    success: u16,
    body: bool,
) -> Route {
    let read = matches!(method.as_bytes(), b"GET");
    Route {
        method,
        path,
        operation,
        success,
        body,
        raw_body: false,
        query: &[],
        access: Access::Role(if read { Role::Viewer } else { Role::Admin }),
    }
}

/// A route operators may call (power, consoles, migrations, jobs).
const fn operator(route: Route) -> Route {
    Route {
        access: Access::Role(Role::Operator),
        ..route
    }
}

/// A route every authenticated caller may call (the core checks what is
/// the caller's own).
const fn viewer(route: Route) -> Route {
    Route {
        access: Access::Role(Role::Viewer),
        ..route
    }
}

/// A route only admins may call, even a read.
const fn admin(route: Route) -> Route {
    Route {
        access: Access::Role(Role::Admin),
        ..route
    }
}

/// A route that answers without authentication.
const fn public(route: Route) -> Route {
    Route {
        access: Access::Public,
        ..route
    }
}

const fn q(route: Route, query: &'static [&'static str]) -> Route {
    Route { query, ..route }
}

const fn raw(route: Route) -> Route {
    Route {
        raw_body: true,
        ..route
    }
}

/// Query parameters of the image upload route (the image metadata).
pub const IMAGE_META_QUERY: &[&str] = &[
    "os_family",
    "os_variant",
    "cloud_init",
    "firmware",
    "ready_marker",
];

/// Path of the unauthenticated health probe.
pub const HEALTH_PATH: &str = "/healthz";

/// Path of this API's OpenAPI document.
pub const OPENAPI_PATH: &str = "/api/v1/openapi.json";

/// Path of the Prometheus metrics (outside `/api/v1`, where scrapers
/// expect it).
pub const METRICS_PATH: &str = "/metrics";

/// Path of the login (unauthenticated).
pub const LOGIN_PATH: &str = "/api/v1/auth/login";

/// Every route the server answers.
pub const ROUTES: &[Route] = &[
    public(r("GET", HEALTH_PATH, "health", 200, false)),
    public(r("POST", LOGIN_PATH, "login", 200, true)),
    viewer(r("POST", "/api/v1/auth/logout", "logout", 204, false)),
    r("GET", "/api/v1/auth/whoami", "whoami", 200, false),
    r("GET", OPENAPI_PATH, "getOpenapi", 200, false),
    r("GET", METRICS_PATH, "getMetrics", 200, false),
    viewer(r(
        "POST",
        "/api/v1/auth/password",
        "changePassword",
        204,
        true,
    )),
    admin(r("GET", "/api/v1/users", "listUsers", 200, false)),
    r("POST", "/api/v1/users", "createUser", 201, true),
    r("PATCH", "/api/v1/users/{name}", "updateUser", 200, true),
    r("DELETE", "/api/v1/users/{name}", "deleteUser", 204, false),
    r("GET", "/api/v1/tokens", "listTokens", 200, false),
    viewer(r("POST", "/api/v1/tokens", "createToken", 201, true)),
    viewer(r(
        "DELETE",
        "/api/v1/tokens/{id}",
        "revokeToken",
        204,
        false,
    )),
    admin(q(
        r("GET", "/api/v1/audit", "listAudit", 200, false),
        &["since", "limit"],
    )),
    r("GET", "/api/v1/host", "getHost", 200, false),
    r(
        "GET",
        "/api/v1/host/certificate",
        "getCertificate",
        200,
        false,
    ),
    r(
        "PUT",
        "/api/v1/host/certificate",
        "replaceCertificate",
        200,
        true,
    ),
    r("GET", "/api/v1/host/firmware", "getFirmware", 200, false),
    raw(r(
        "POST",
        "/api/v1/host/firmware/install",
        "installFirmware",
        202,
        true,
    )),
    q(
        r(
            "POST",
            "/api/v1/host/firmware/reboot",
            "rebootHost",
            202,
            false,
        ),
        &["force", "shutdown_timeout_s"],
    ),
    admin(q(
        r(
            "GET",
            "/api/v1/host/settings",
            "getHostSettings",
            200,
            false,
        ),
        &["host"],
    )),
    q(
        r(
            "PUT",
            "/api/v1/host/settings",
            "replaceHostSettings",
            200,
            true,
        ),
        &["host", "restart"],
    ),
    q(
        r(
            "DELETE",
            "/api/v1/host/settings",
            "clearHostSettings",
            200,
            false,
        ),
        &["host", "restart"],
    ),
    r("GET", "/api/v1/vms", "listVms", 200, false),
    r("POST", "/api/v1/vms", "createVm", 201, true),
    r("GET", "/api/v1/vms/{id}", "getVm", 200, false),
    r("PATCH", "/api/v1/vms/{id}", "updateVm", 200, true),
    q(
        r("DELETE", "/api/v1/vms/{id}", "deleteVm", 202, false),
        &["delete_disks", "force"],
    ),
    operator(r("POST", "/api/v1/vms/{id}/power", "vmPower", 202, true)),
    operator(q(
        r("GET", "/api/v1/vms/{id}/console", "getConsole", 200, false),
        &["follow", "tail"],
    )),
    operator(r(
        "POST",
        "/api/v1/vms/{id}/console",
        "consoleInput",
        204,
        true,
    )),
    q(
        r("GET", "/api/v1/pools", "listPools", 200, false),
        &["host"],
    ),
    q(
        r("POST", "/api/v1/pools", "createPool", 201, true),
        &["host"],
    ),
    q(
        r("DELETE", "/api/v1/pools/{name}", "deletePool", 204, false),
        &["host"],
    ),
    q(
        r(
            "POST",
            "/api/v1/pools/{pool}/imports",
            "importVolume",
            202,
            true,
        ),
        &["host"],
    ),
    q(
        r(
            "GET",
            "/api/v1/pools/{pool}/volumes",
            "listVolumes",
            200,
            false,
        ),
        &["host"],
    ),
    q(
        r(
            "POST",
            "/api/v1/pools/{pool}/volumes",
            "createVolume",
            201,
            true,
        ),
        &["host"],
    ),
    q(
        r(
            "DELETE",
            "/api/v1/pools/{pool}/volumes/{volume}",
            "deleteVolume",
            204,
            false,
        ),
        &["host"],
    ),
    q(
        r(
            "POST",
            "/api/v1/pools/{pool}/volumes/{volume}/resize",
            "resizeVolume",
            200,
            true,
        ),
        &["host"],
    ),
    q(
        r(
            "POST",
            "/api/v1/pools/{pool}/volumes/{volume}/snapshots",
            "snapshotVolume",
            201,
            true,
        ),
        &["host"],
    ),
    q(
        r(
            "GET",
            "/api/v1/pools/{pool}/volumes/{volume}/snapshots",
            "listSnapshots",
            200,
            false,
        ),
        &["host"],
    ),
    q(
        r(
            "POST",
            "/api/v1/pools/{pool}/volumes/{volume}/snapshots/{snapshot}/revert",
            "revertSnapshot",
            200,
            false,
        ),
        &["host"],
    ),
    q(
        r(
            "DELETE",
            "/api/v1/pools/{pool}/volumes/{volume}/snapshots/{snapshot}",
            "deleteSnapshot",
            204,
            false,
        ),
        &["host"],
    ),
    q(
        r(
            "POST",
            "/api/v1/pools/{pool}/volumes/{volume}/clone",
            "cloneVolume",
            201,
            true,
        ),
        &["host"],
    ),
    r("GET", "/api/v1/images", "listImages", 200, false),
    r("POST", "/api/v1/images", "addImage", 202, true),
    q(
        raw(r(
            "POST",
            "/api/v1/images/{name}/upload",
            "uploadImage",
            202,
            true,
        )),
        IMAGE_META_QUERY,
    ),
    r("DELETE", "/api/v1/images/{name}", "deleteImage", 204, false),
    r("GET", "/api/v1/vswitches", "listVswitches", 200, false),
    r("POST", "/api/v1/vswitches", "createVswitch", 201, true),
    r(
        "DELETE",
        "/api/v1/vswitches/{name}",
        "deleteVswitch",
        204,
        false,
    ),
    r("GET", "/api/v1/jobs", "listJobs", 200, false),
    r("GET", "/api/v1/jobs/{id}", "getJob", 200, false),
    operator(r(
        "POST",
        "/api/v1/jobs/{id}/cancel",
        "cancelJob",
        200,
        false,
    )),
    r("GET", "/api/v1/plugins", "listPlugins", 200, false),
    q(
        r("GET", "/api/v1/decisions", "listDecisions", 200, false),
        &["world", "limit", "host"],
    ),
    q(
        r("GET", "/api/v1/events", "listEvents", 200, false),
        &["since", "limit"],
    ),
    r("GET", "/api/v1/cluster", "getCluster", 200, false),
    r("POST", "/api/v1/cluster", "createCluster", 201, true),
    r(
        "POST",
        "/api/v1/cluster/join-tokens",
        "issueJoinToken",
        201,
        true,
    ),
    r(
        "DELETE",
        "/api/v1/cluster/members/{node}",
        "removeMember",
        204,
        false,
    ),
    r("POST", "/api/v1/cluster/join", "joinCluster", 200, true),
    r(
        "GET",
        "/api/v1/cluster/update",
        "getClusterUpdate",
        200,
        false,
    ),
    q(
        raw(r(
            "POST",
            "/api/v1/cluster/update",
            "startClusterUpdate",
            202,
            true,
        )),
        &["move_back"],
    ),
    r(
        "POST",
        "/api/v1/cluster/update/resume",
        "resumeClusterUpdate",
        202,
        false,
    ),
    r(
        "POST",
        "/api/v1/cluster/update/abort",
        "abortClusterUpdate",
        200,
        false,
    ),
    r("GET", "/api/v1/hosts", "listHosts", 200, false),
    r(
        "POST",
        "/api/v1/hosts/{host}/cordon",
        "cordonHost",
        200,
        false,
    ),
    r(
        "POST",
        "/api/v1/hosts/{host}/uncordon",
        "uncordonHost",
        200,
        false,
    ),
    r(
        "POST",
        "/api/v1/hosts/{host}/degrade",
        "degradeHost",
        200,
        true,
    ),
    r(
        "POST",
        "/api/v1/hosts/{host}/undegrade",
        "undegradeHost",
        200,
        false,
    ),
    r(
        "POST",
        "/api/v1/hosts/{host}/evacuate",
        "evacuateHost",
        202,
        false,
    ),
    operator(r(
        "POST",
        "/api/v1/vms/{id}/migrate",
        "migrateVm",
        202,
        true,
    )),
    r("POST", "/api/v1/vms/{id}/recover", "recoverVm", 200, true),
    r("POST", "/api/v1/plugins", "installPlugin", 201, true),
    r(
        "DELETE",
        "/api/v1/plugins/{world}",
        "uninstallPlugin",
        204,
        false,
    ),
    r(
        "POST",
        "/api/v1/plugins/{world}/reset",
        "resetPlugin",
        200,
        false,
    ),
];
