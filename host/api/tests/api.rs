//! End-to-end tests of the admin endpoint: the real server on 127.0.0.1:0
//! with a generated certificate, a real TLS client, and a fake core (the
//! layer below the one under test).
//!
//! One file although over 700 lines: no fixture is shared (each test starts
//! its own server, in milliseconds) and most of the length is the request
//! tables of a few tests; a split would save no setup time and add a test
//! binary to build.

mod common;

use common::{schema, FakeCore, Running, ADMIN_TOKEN, CSRF, OPERATOR_TOKEN, SESSION, VIEWER_TOKEN};
use nasvisor_api::router::{Access, ROUTES};
use nasvisor_api::types::Role;
use nasvisor_api::types::{
    FirmwareKind, ImageAdd, ImageMetaSpec, ImageSource, InstallNetwork, InstallSpec, InstallUser,
    NicSpec, VmCreate, VmUpdate,
};
use nasvisor_api::{Action, PowerOp, ServerSettings, OPENAPI_JSON};
use serde_json::Value;
use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Duration;

async fn start() -> (tempfile::TempDir, Arc<FakeCore>, Running, String) {
    let dir = tempfile::tempdir().unwrap();
    let core = Arc::new(FakeCore::default());
    let mut server = Running::start(dir.path(), core.clone()).await;
    let token = server
        .new_token
        .take()
        .expect("first start creates a token");
    (dir, core, server, token)
}

const VM_OK: &str = r#"{"name":"vm1","vcpus":2,"memory_mib":2048}"#;

#[tokio::test]
async fn health_needs_no_token_and_nothing_else_answers_without_one() {
    let (_dir, core, server, token) = start().await;
    let c = server.client();
    let r = c.get("/healthz", None).await;
    assert_eq!(r.status, 200);
    assert_eq!(r.json(), serde_json::json!({"status": "ok"}));
    // The generated certificate is valid for the loopback addresses too.
    for name in ["127.0.0.1", "::1"] {
        let r = server.client().with_name(name).get("/healthz", None).await;
        assert_eq!(r.status, 200, "{name}");
    }

    for route in ROUTES.iter().filter(|r| r.access != Access::Public) {
        let path = route
            .path
            .replace("{id}", "x1")
            .replace("{pool}", "p1")
            .replace("{volume}", "v1")
            .replace("{snapshot}", "s1")
            .replace("{name}", "n1");
        for bad in [None, Some("wrong"), Some(&token[1..])] {
            let r = c
                .send(route.method, &path, bad, Some("application/json"), b"{}")
                .await;
            assert_eq!(r.status, 401, "{} {path} with {bad:?}", route.method);
            let www = r
                .headers
                .get("www-authenticate")
                .expect("WWW-Authenticate")
                .to_str()
                .unwrap();
            assert!(www.starts_with("Bearer"), "{www}");
            assert!(r.json()["error"]["reason"].is_string());
        }
    }
    // Unknown paths do not reveal themselves either (only the web
    // console's own files are public).
    assert_eq!(c.get("/api/v1/nope", None).await.status, 401);
    assert_eq!(c.get("/index.php", Some("wrong")).await.status, 401);
    assert_eq!(c.get("/ui/nope.js", None).await.status, 401);
    assert!(
        core.take().is_empty(),
        "the core was called without a valid token"
    );
    server.stop().await;
}

#[tokio::test]
async fn a_public_route_answers_another_method_with_405_without_a_credential() {
    // benches/fuzz-api.sh found `TRACE /api/v1/auth/login` answered 401.
    let (_dir, core, server, _token) = start().await;
    let c = server.client();
    for (method, path, allow) in [
        ("GET", "/api/v1/auth/login", "POST"),
        ("TRACE", "/api/v1/auth/login", "POST"),
        ("PUT", "/api/v1/auth/login", "POST"),
        ("DELETE", "/healthz", "GET"),
    ] {
        let r = c.send(method, path, None, None, b"").await;
        assert_eq!(r.status, 405, "{method} {path}");
        assert_eq!(r.headers.get("allow").unwrap(), allow, "{method} {path}");
        assert!(r.headers.get("www-authenticate").is_none());
    }
    assert!(core.take().is_empty(), "the core saw a refused method");
    server.stop().await;
}

#[tokio::test]
async fn valid_requests_are_forwarded_as_the_right_action() {
    let (_dir, core, server, token) = start().await;
    let c = server.client();
    let t = token.as_str();

    let r = c.get("/api/v1/vms", Some(t)).await;
    assert_eq!(r.status, 200);
    assert_eq!(core.take(), vec![Action::ListVms]);

    let r = c.json("POST", "/api/v1/vms", t, r#"{"name":"vm1","vcpus":2,"memory_mib":2048,
        "disks":[{"pool":"p1","size_mib":10240}],"nics":[{"vswitch":"sw0","mac":"52:54:00:aa:bb:cc"}]}"#).await;
    assert_eq!(r.status, 201, "{}", String::from_utf8_lossy(&r.body));
    let calls = core.take();
    let Action::CreateVm(VmCreate {
        name,
        vcpus,
        memory_mib,
        disks,
        nics,
        ..
    }) = &calls[0]
    else {
        panic!("{calls:?}")
    };
    assert_eq!(
        (name.as_str(), *vcpus, *memory_mib, disks.len(), nics.len()),
        ("vm1", 2, 2048, 1, 1)
    );

    let r = c
        .json("PATCH", "/api/v1/vms/vm1", t, r#"{"vcpus":4}"#)
        .await;
    assert_eq!(r.status, 200);
    assert_eq!(
        core.take(),
        vec![Action::UpdateVm {
            id: "vm1".into(),
            update: VmUpdate {
                vcpus: Some(4),
                ..Default::default()
            }
        }]
    );

    let r = c
        .json(
            "POST",
            "/api/v1/vms/vm1/power",
            t,
            r#"{"op":"start","host":"nas2"}"#,
        )
        .await;
    assert_eq!(r.status, 202);
    assert_eq!(
        core.take(),
        vec![Action::VmPower {
            id: "vm1".into(),
            op: PowerOp::Start {
                host: Some("nas2".into())
            }
        }]
    );

    let r = c
        .json(
            "POST",
            "/api/v1/vms/vm1/power",
            t,
            r#"{"op":"shutdown","timeout_s":30}"#,
        )
        .await;
    assert_eq!(r.status, 202);
    assert_eq!(
        core.take(),
        vec![Action::VmPower {
            id: "vm1".into(),
            op: PowerOp::Shutdown { timeout_s: 30 }
        }]
    );

    let r = c
        .send(
            "DELETE",
            "/api/v1/vms/vm1?delete_disks=true",
            Some(t),
            None,
            b"",
        )
        .await;
    assert_eq!(r.status, 202);
    assert_eq!(
        core.take(),
        vec![Action::DeleteVm {
            id: "vm1".into(),
            delete_disks: true,
            force: false,
        }]
    );

    let r = c
        .json(
            "POST",
            "/api/v1/images",
            t,
            r#"{"name":"deb","url":"https://example.invalid/deb.qcow2"}"#,
        )
        .await;
    assert_eq!(r.status, 202);
    assert_eq!(
        core.take(),
        vec![Action::AddImage(ImageAdd {
            name: "deb".into(),
            source: ImageSource::Url("https://example.invalid/deb.qcow2".into()),
            sha256: None,
            meta: ImageMetaSpec::default(),
        })]
    );

    let r = c
        .json(
            "POST",
            "/api/v1/images",
            t,
            r#"{"name":"win","path":"/srv/win.iso","os_family":"windows","os_variant":"win11",
                "cloud_init":false,"firmware":"uefi","ready_marker":"READY now"}"#,
        )
        .await;
    assert_eq!(r.status, 202, "{}", String::from_utf8_lossy(&r.body));
    assert_eq!(
        core.take(),
        vec![Action::AddImage(ImageAdd {
            name: "win".into(),
            source: ImageSource::Path("/srv/win.iso".into()),
            sha256: None,
            meta: ImageMetaSpec {
                os_family: "windows".into(),
                os_variant: "win11".into(),
                cloud_init: false,
                firmware: FirmwareKind::Uefi,
                ready_marker: Some("READY now".into()),
            },
        })]
    );

    let r = c
        .json(
            "POST",
            "/api/v1/pools/p1/volumes/v1/resize",
            t,
            r#"{"size_mib":2048}"#,
        )
        .await;
    assert_eq!(r.status, 200);
    assert_eq!(
        core.take(),
        vec![Action::ResizeVolume {
            pool: "p1".into(),
            volume: "v1".into(),
            size_mib: 2048
        }]
    );

    let r = c
        .send("DELETE", "/api/v1/pools/p1/volumes/v1", Some(t), None, b"")
        .await;
    assert_eq!(r.status, 204);
    assert!(r.body.is_empty());
    assert_eq!(
        core.take(),
        vec![Action::DeleteVolume {
            pool: "p1".into(),
            volume: "v1".into()
        }]
    );

    let r = c
        .send("POST", "/api/v1/jobs/j9/cancel", Some(t), None, b"")
        .await;
    assert_eq!(r.status, 200);
    assert_eq!(core.take(), vec![Action::CancelJob { id: "j9".into() }]);
    server.stop().await;
}

#[tokio::test]
async fn bad_input_names_the_field_and_never_reaches_the_core() {
    let (_dir, core, server, token) = start().await;
    let c = server.client();
    let t = token.as_str();
    let cases: &[(&str, &str, &str, &str)] = &[
        ("POST", "/api/v1/vms", r#"{"name":"vm1","vcpus":2"#, "body"),
        // A body is an object: serde would read a struct from an array of
        // its fields (benches/fuzz-api.sh found `[]` accepted).
        ("POST", "/api/v1/vms", r#"["vm1",2,2048]"#, "body"),
        ("POST", "/api/v1/cluster/join-tokens", " []", "body"),
        (
            "POST",
            "/api/v1/vms",
            r#"{"name":"vm1","vcpus":2,"memory_mib":2048,"colour":"red"}"#,
            "colour",
        ),
        (
            "POST",
            "/api/v1/vms",
            r#"{"name":"../x","vcpus":2,"memory_mib":2048}"#,
            "name",
        ),
        (
            "POST",
            "/api/v1/vms",
            r#"{"name":"a/b","vcpus":2,"memory_mib":2048}"#,
            "name",
        ),
        (
            "POST",
            "/api/v1/vms",
            r#"{"name":"vm1","vcpus":0,"memory_mib":2048}"#,
            "vcpus",
        ),
        (
            "POST",
            "/api/v1/vms",
            r#"{"name":"vm1","vcpus":2,"memory_mib":32}"#,
            "memory_mib",
        ),
        (
            "POST",
            "/api/v1/vms",
            r#"{"name":"vm1","vcpus":2}"#,
            "memory_mib",
        ),
        (
            "POST",
            "/api/v1/vms",
            r#"{"name":"vm1","vcpus":2,"memory_mib":2048,"nics":[{"vswitch":"s","mac":"ff:ff:ff:ff:ff:ff"}]}"#,
            "nics[0].mac",
        ),
        ("POST", "/api/v1/vms/vm1/power", r#"{"op":"explode"}"#, "op"),
        (
            "POST",
            "/api/v1/vms",
            r#"{"name":"vm1","vcpus":2,"memory_mib":2048,"install":{"hostname":"h"}}"#,
            "install",
        ),
        (
            "POST",
            "/api/v1/vms",
            r#"{"name":"vm1","vcpus":2,"memory_mib":2048,"firmware":"efi"}"#,
            "firmware",
        ),
        (
            "POST",
            "/api/v1/vms",
            r#"{"name":"vm1","vcpus":2,"memory_mib":2048,"image":"deb","install":{"users":[{"name":"Root"}]}}"#,
            "install.users[0].name",
        ),
        (
            "POST",
            "/api/v1/vms",
            r#"{"name":"vm1","vcpus":2,"memory_mib":2048,"image":"deb","install":{"users":[{"name":"a","shel":"/bin/sh"}]}}"#,
            "install.users[0].shel",
        ),
        (
            "POST",
            "/api/v1/vms",
            r#"{"name":"vm1","vcpus":2,"memory_mib":2048,"image":"deb","install":{"network":[{"dhcp4":true}]}}"#,
            "install.network",
        ),
        (
            "POST",
            "/api/v1/vms",
            r#"{"name":"vm1","vcpus":2,"memory_mib":2048,"image":"deb","nics":[{"vswitch":"s"}],
                "install":{"network":[{"addresses":["192.0.2.300/24"]}]}}"#,
            "install.network[0].addresses[0]",
        ),
        (
            "POST",
            "/api/v1/vms",
            r#"{"name":"vm1","vcpus":2,"memory_mib":2048,"image":"deb","install":{"disk_size_gib":0}}"#,
            "install.disk_size_gib",
        ),
        (
            "POST",
            "/api/v1/images",
            r#"{"name":"i","path":"/a.img","firmware":"coreboot"}"#,
            "firmware",
        ),
        (
            "POST",
            "/api/v1/images",
            r#"{"name":"i","path":"/a.img","ready_marker":"tab\there"}"#,
            "ready_marker",
        ),
        (
            "POST",
            "/api/v1/images",
            r#"{"name":"i","path":"/a.img","os_family":"../x"}"#,
            "os_family",
        ),
        ("POST", "/api/v1/vms/vm1/console", r#"{"data":""}"#, "data"),
        (
            "POST",
            "/api/v1/pools/p1/imports",
            r#"{"name":"v","path":"/srv/../etc/shadow"}"#,
            "path",
        ),
        (
            "POST",
            "/api/v1/pools/p1/volumes/v1/clone",
            r#"{"name":"a b"}"#,
            "name",
        ),
        (
            "POST",
            "/api/v1/pools",
            r#"{"name":"p","path":"relative"}"#,
            "path",
        ),
        (
            "POST",
            "/api/v1/vswitches",
            r#"{"name":"sw","vlan":5000}"#,
            "vlan",
        ),
        (
            "POST",
            "/api/v1/pools/p1/volumes",
            r#"{"name":"v","size_mib":0}"#,
            "size_mib",
        ),
    ];
    for (method, path, body, field) in cases {
        let r = c.json(method, path, t, body).await;
        assert_eq!(
            r.status,
            400,
            "{method} {path} {body}: {}",
            String::from_utf8_lossy(&r.body)
        );
        assert_eq!(
            r.field().as_deref(),
            Some(*field),
            "{method} {path} {body}: {}",
            r.json()
        );
    }
    let long = format!(r#"{{"data":"{}"}}"#, "x".repeat(4097));
    let r = c.json("POST", "/api/v1/vms/vm1/console", t, &long).await;
    assert_eq!((r.status, r.field().as_deref()), (400, Some("data")));
    // Query parameters name themselves.
    for (path, field) in [
        ("/api/v1/events?limit=0", "limit"),
        ("/api/v1/events?limit=1001", "limit"),
        ("/api/v1/events?since=-1", "since"),
        ("/api/v1/events?since=1&since=2", "since"),
        ("/api/v1/events?colour=red", "colour"),
        ("/api/v1/vms/vm1/console?tail=1048577", "tail"),
        ("/api/v1/vms/vm1/console?follow=maybe", "follow"),
    ] {
        let r = c.get(path, Some(t)).await;
        assert_eq!(
            (r.status, r.field().as_deref()),
            (400, Some(field)),
            "{path}"
        );
    }
    let r = c
        .send(
            "DELETE",
            "/api/v1/pools/p1/volumes/v1/snapshots/s%201",
            Some(t),
            None,
            b"",
        )
        .await;
    assert_eq!((r.status, r.field().as_deref()), (400, Some("snapshot")));
    // Path parameters are names too.
    let r = c.get("/api/v1/vms/..", Some(t)).await;
    assert_eq!((r.status, r.field().as_deref()), (400, Some("id")));
    let r = c.get("/api/v1/vms/a%2Fb", Some(t)).await;
    assert_eq!((r.status, r.field().as_deref()), (400, Some("id")));
    // Not JSON.
    let r = c
        .send(
            "POST",
            "/api/v1/vms",
            Some(t),
            Some("text/plain"),
            VM_OK.as_bytes(),
        )
        .await;
    assert_eq!(r.status, 415);
    let r = c
        .send("POST", "/api/v1/vms", Some(t), None, VM_OK.as_bytes())
        .await;
    assert_eq!(r.status, 415);
    // Too large.
    let big = format!(
        r#"{{"name":"vm1","vcpus":2,"memory_mib":2048,"description":"{}"}}"#,
        "x".repeat(2 * 1024 * 1024)
    );
    let r = c.json("POST", "/api/v1/vms", t, &big).await;
    assert_eq!(r.status, 413);
    // Unknown route and wrong method.
    let r = c.get("/api/v1/nope", Some(t)).await;
    assert_eq!(r.status, 404);
    assert!(r.json()["error"]["field"].is_null());
    let r = c.send("PUT", "/api/v1/vms", Some(t), None, b"").await;
    assert_eq!(r.status, 405);
    assert_eq!(r.headers.get("allow").unwrap(), "GET, POST");
    assert!(core.take().is_empty(), "the core saw invalid input");
    server.stop().await;
}

#[tokio::test]
async fn core_errors_map_to_statuses() {
    let (_dir, _core, server, token) = start().await;
    let c = server.client();
    for (id, status) in [
        ("missing", 404),
        ("busy", 409),
        ("bad", 422),
        ("noquorum", 503),
    ] {
        let r = c.get(&format!("/api/v1/vms/{id}"), Some(&token)).await;
        assert_eq!(r.status, status, "{id}");
        assert!(r.json()["error"]["reason"].is_string());
    }
    let r = c.get("/api/v1/vms/bad", Some(&token)).await;
    assert_eq!(r.field().as_deref(), Some("host"));
    server.stop().await;
}

#[tokio::test]
async fn the_certificate_persists_across_restart() {
    let dir = tempfile::tempdir().unwrap();
    let core = Arc::new(FakeCore::default());
    let first = Running::start(dir.path(), core.clone()).await;
    let fp = first.fingerprint.clone();
    first.stop().await;
    let second = Running::start(dir.path(), core.clone()).await;
    assert_eq!(second.fingerprint, fp, "certificate regenerated");
    assert_eq!(
        second
            .client()
            .get("/api/v1/host", Some(ADMIN_TOKEN))
            .await
            .status,
        200
    );
    second.stop().await;
}

#[tokio::test]
async fn each_route_is_refused_below_its_role_before_the_core_sees_it() {
    let (dir, core, server, _token) = start().await;
    let c = server.client();
    for route in ROUTES.iter() {
        let Access::Role(needed) = route.access else {
            continue;
        };
        let (path, body) = sample_on(dir.path(), route.operation);
        for (token, role) in [
            (VIEWER_TOKEN, Role::Viewer),
            (OPERATOR_TOKEN, Role::Operator),
            (ADMIN_TOKEN, Role::Admin),
        ] {
            core.take();
            let r = match body {
                Some(b) => c.json(route.method, path, token, b).await,
                None if route.raw_body => {
                    let ct = Some("application/octet-stream");
                    c.send(route.method, path, Some(token), ct, b"bytes").await
                }
                None => c.send(route.method, path, Some(token), None, b"").await,
            };
            if role >= needed {
                assert_eq!(r.status, route.success, "{} as {role}", route.operation);
            } else {
                assert_eq!(r.status, 403, "{} as {role}", route.operation);
                let reason = r.json()["error"]["reason"].as_str().unwrap().to_string();
                assert!(
                    reason.contains(route.operation) && reason.contains(needed.as_str()),
                    "{reason}"
                );
                assert!(
                    core.take().is_empty(),
                    "{} reached the core",
                    route.operation
                );
            }
        }
    }
    server.stop().await;
}

#[tokio::test]
async fn the_role_table_matches_what_each_role_may_do() {
    let needs = |op: &str| {
        ROUTES
            .iter()
            .find(|r| r.operation == op)
            .unwrap_or_else(|| panic!("no route {op}"))
            .access
    };
    let table: [(Access, &[&str]); 4] = [
        (Access::Public, &["health", "login"]),
        (
            Access::Role(Role::Operator),
            &[
                "vmPower",
                "getConsole",
                "consoleInput",
                "migrateVm",
                "cancelJob",
            ],
        ),
        (
            Access::Role(Role::Viewer),
            &[
                "listVms",
                "getVm",
                "listHosts",
                "getFirmware",
                "getClusterUpdate",
                "listEvents",
                "whoami",
                "listTokens",
                "createToken",
                "revokeToken",
                "logout",
                "changePassword",
            ],
        ),
        (
            Access::Role(Role::Admin),
            &[
                "listUsers",
                "createUser",
                "listAudit",
                "createVm",
                "deleteVm",
                "installPlugin",
                "createCluster",
                "evacuateHost",
                "uploadImage",
                "installFirmware",
                "rebootHost",
                "startClusterUpdate",
                "resumeClusterUpdate",
                "abortClusterUpdate",
            ],
        ),
    ];
    for (access, ops) in table {
        for op in ops {
            assert_eq!(needs(op), access, "{op}");
        }
    }
}

#[tokio::test]
async fn login_sets_a_strict_cookie_and_cookie_changes_need_the_csrf_header() {
    let (_dir, core, server, _token) = start().await;
    let c = server.client();
    let r = c
        .login(br#"{"user":"alice","password":"wrong password"}"#)
        .await;
    assert_eq!(r.status, 401, "{}", String::from_utf8_lossy(&r.body));
    let r = c
        .login(br#"{"user":"alice","password":"correct horse"}"#)
        .await;
    assert_eq!(r.status, 200);
    assert_eq!(r.json()["token"], SESSION);
    let cookie = r
        .headers
        .get("set-cookie")
        .unwrap()
        .to_str()
        .unwrap()
        .to_string();
    for part in [
        "nasvisor_session=nvs_alice-session",
        "HttpOnly",
        "Secure",
        "SameSite=Strict",
    ] {
        assert!(cookie.contains(part), "{cookie}");
    }
    let with_cookie = |csrf: Option<&'static str>| {
        let mut h = vec![("cookie", "nasvisor_session=nvs_alice-session".to_string())];
        if let Some(t) = csrf {
            h.push(("x-csrf-token", t.to_string()));
        }
        h
    };
    // A read with the cookie alone works.
    let r = c
        .send_headers("GET", "/api/v1/vms", &with_cookie(None), None, b"")
        .await;
    assert_eq!(r.status, 200);
    // A change needs the CSRF header, and the right one.
    let power = br#"{"op":"force_off"}"#;
    core.take();
    for bad in [None, Some("forged")] {
        let r = c
            .send_headers(
                "POST",
                "/api/v1/vms/vm1/power",
                &with_cookie(bad),
                Some("application/json"),
                power,
            )
            .await;
        assert_eq!(r.status, 403, "csrf {bad:?}");
        assert_eq!(r.field().as_deref(), Some("x-csrf-token"));
    }
    assert!(core.take().is_empty(), "a forged change reached the core");
    let r = c
        .send_headers(
            "POST",
            "/api/v1/vms/vm1/power",
            &with_cookie(Some(CSRF)),
            Some("application/json"),
            power,
        )
        .await;
    assert_eq!(r.status, 202);
    // The same session as a bearer token needs no CSRF header.
    let r = c
        .json(
            "POST",
            "/api/v1/vms/vm1/power",
            SESSION,
            r#"{"op":"force_off"}"#,
        )
        .await;
    assert_eq!(r.status, 202);
    // Logout clears the cookie.
    let r = c
        .send_headers(
            "POST",
            "/api/v1/auth/logout",
            &with_cookie(Some(CSRF)),
            None,
            b"",
        )
        .await;
    assert_eq!(r.status, 204);
    let cleared = r.headers.get("set-cookie").unwrap().to_str().unwrap();
    assert!(
        cleared.starts_with("nasvisor_session=;") && cleared.contains("Max-Age=0"),
        "{cleared}"
    );
    server.stop().await;
}

#[tokio::test]
async fn a_throttled_login_answers_429_with_retry_after() {
    let (_dir, _core, server, _token) = start().await;
    let r = server
        .client()
        .login(br#"{"user":"throttled","password":"whatever1"}"#)
        .await;
    assert_eq!(r.status, 429);
    assert_eq!(r.headers.get("retry-after").unwrap(), "7");
    // A login body is small: a large one is refused before the core.
    let big = format!(r#"{{"user":"alice","password":"{}"}}"#, "x".repeat(8000));
    let r = server.client().login(big.as_bytes()).await;
    assert_eq!(r.status, 413);
    server.stop().await;
}

#[tokio::test]
async fn changes_and_logins_are_audited_with_caller_address_and_status_reads_are_not() {
    let (_dir, core, server, _token) = start().await;
    let c = server.client();
    assert_eq!(c.get("/api/v1/vms", Some(VIEWER_TOKEN)).await.status, 200);
    let r = c
        .json(
            "POST",
            "/api/v1/vms/vm1/power",
            VIEWER_TOKEN,
            r#"{"op":"force_off"}"#,
        )
        .await;
    assert_eq!(r.status, 403);
    let r = c
        .json(
            "POST",
            "/api/v1/vms/vm1/power",
            OPERATOR_TOKEN,
            r#"{"op":"force_off"}"#,
        )
        .await;
    assert_eq!(r.status, 202);
    let r = c
        .json(
            "POST",
            "/api/v1/vms",
            ADMIN_TOKEN,
            r#"{"name":"-bad","vcpus":1,"memory_mib":512}"#,
        )
        .await;
    assert_eq!(r.status, 400);
    let r = c
        .login(br#"{"user":"mallory","password":"guess1234"}"#)
        .await;
    assert_eq!(r.status, 401);
    let _ = c
        .json(
            "POST",
            "/api/v1/vms/vm1/power",
            "nvt_forged",
            r#"{"op":"force_off"}"#,
        )
        .await;
    let audits = std::mem::take(&mut *core.audits.lock().unwrap());
    let seen: Vec<(String, Option<Role>, &str, u16)> = audits
        .iter()
        .map(|a| (a.user.clone(), a.role, a.operation, a.status))
        .collect();
    assert_eq!(
        seen,
        vec![
            ("vera".to_string(), Some(Role::Viewer), "vmPower", 403),
            ("oscar".to_string(), Some(Role::Operator), "vmPower", 202),
            ("admin".to_string(), Some(Role::Admin), "createVm", 400),
            ("mallory".to_string(), None, "login", 401),
        ],
        "reads and unauthenticated requests are not audited"
    );
    assert_eq!(audits[1].request, "POST /api/v1/vms/vm1/power");
    assert_eq!(audits[1].result, "ok");
    assert_eq!(audits[1].credential.as_deref(), Some("oscar-id"));
    assert!(
        audits[0].result.contains("operator"),
        "{}",
        audits[0].result
    );
    assert!(
        audits[2].result.starts_with("name: "),
        "{}",
        audits[2].result
    );
    assert_eq!(audits[1].address.to_string(), "127.0.0.1");
    server.stop().await;
}

#[tokio::test]
async fn configured_certificate_is_served() {
    let gen = tempfile::tempdir().unwrap();
    let id = nasvisor_api::tls::load_or_generate(gen.path(), &Default::default()).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let mut settings = ServerSettings::new("127.0.0.1:0".parse().unwrap(), dir.path());
    settings.tls.cert = Some(gen.path().join("tls/cert.pem"));
    settings.tls.key = Some(gen.path().join("tls/key.pem"));
    let server = Running::start_with(settings, Arc::new(FakeCore::default())).await;
    assert_eq!(server.fingerprint, id.fingerprint);
    assert_eq!(server.client().get("/healthz", None).await.status, 200);
    assert!(!dir.path().join("tls").exists());
    server.stop().await;
}

#[tokio::test]
async fn plain_http_gets_no_http_answer() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let (_dir, core, server, _token) = start().await;
    let mut s = tokio::net::TcpStream::connect(server.addr).await.unwrap();
    s.write_all(b"GET /healthz HTTP/1.1\r\nHost: localhost\r\n\r\n")
        .await
        .unwrap();
    let mut buf = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(5), s.read_to_end(&mut buf)).await;
    assert!(
        !buf.starts_with(b"HTTP/"),
        "plain HTTP got an answer: {}",
        String::from_utf8_lossy(&buf)
    );
    assert!(core.take().is_empty());
    server.stop().await;
}

// ---- openapi.json is the source of truth ----

fn spec() -> Value {
    serde_json::from_str(OPENAPI_JSON).expect("openapi.json parses")
}

#[test]
fn router_and_openapi_list_the_same_routes() {
    let doc = spec();
    let mut in_spec = BTreeSet::new();
    for (path, item) in doc["paths"].as_object().unwrap() {
        for (method, op) in item.as_object().unwrap() {
            let success: Vec<&String> = op["responses"]
                .as_object()
                .unwrap()
                .keys()
                .filter(|k| k.starts_with('2'))
                .collect();
            assert_eq!(success.len(), 1, "{method} {path}: one success status");
            let raw = op
                .pointer("/requestBody/content/application~1octet-stream")
                .is_some();
            let mut query: Vec<String> = op
                .get("parameters")
                .and_then(Value::as_array)
                .into_iter()
                .flatten()
                .filter(|p| p["in"] == "query")
                .map(|p| p["name"].as_str().unwrap().to_string())
                .collect();
            query.sort();
            in_spec.insert((
                method.to_uppercase(),
                path.clone(),
                op["operationId"].as_str().unwrap().to_string(),
                success[0].parse::<u16>().unwrap(),
                op.get("requestBody").is_some(),
                raw,
                query,
            ));
        }
    }
    let in_router: BTreeSet<_> = ROUTES
        .iter()
        .map(|r| {
            let mut query: Vec<String> = r.query.iter().map(|q| q.to_string()).collect();
            query.sort();
            (
                r.method.to_string(),
                r.path.to_string(),
                r.operation.to_string(),
                r.success,
                r.body,
                r.raw_body,
                query,
            )
        })
        .collect();
    let missing: Vec<_> = in_router.difference(&in_spec).collect();
    let extra: Vec<_> = in_spec.difference(&in_router).collect();
    assert!(
        missing.is_empty() && extra.is_empty(),
        "router only: {missing:?}\nspec only: {extra:?}"
    );
    // Every $ref resolves.
    fn refs(v: &Value, doc: &Value) {
        match v {
            Value::Object(m) => {
                if let Some(r) = m.get("$ref").and_then(Value::as_str) {
                    assert!(
                        doc.pointer(r.trim_start_matches('#')).is_some(),
                        "dangling {r}"
                    );
                }
                m.values().for_each(|x| refs(x, doc));
            }
            Value::Array(a) => a.iter().for_each(|x| refs(x, doc)),
            _ => {}
        }
    }
    refs(&doc, &doc);
}

/// [`sample`], where the certificate's replacement is the server's own
/// certificate and key again (a valid request that changes nothing the
/// test's client trusts).
fn sample_on(data_dir: &std::path::Path, operation: &str) -> (&'static str, Option<&'static str>) {
    if operation != "replaceCertificate" {
        return sample(operation);
    }
    let read = |f: &str| std::fs::read_to_string(data_dir.join("tls").join(f)).unwrap();
    let body = serde_json::json!({"cert_pem": read("cert.pem"), "key_pem": read("key.pem")});
    let body: &'static str = Box::leak(body.to_string().into_boxed_str());
    ("/api/v1/host/certificate", Some(body))
}

/// A valid request for every route.
fn sample(operation: &str) -> (&'static str, Option<&'static str>) {
    match operation {
        "health" => ("/healthz", None),
        "login" => (
            "/api/v1/auth/login",
            Some(r#"{"user":"alice","password":"correct horse"}"#),
        ),
        "logout" => ("/api/v1/auth/logout", None),
        "whoami" => ("/api/v1/auth/whoami", None),
        "changePassword" => (
            "/api/v1/auth/password",
            Some(r#"{"current":"correct horse","new":"battery staple"}"#),
        ),
        "listUsers" => ("/api/v1/users", None),
        "createUser" => (
            "/api/v1/users",
            Some(r#"{"name":"bob","password":"long enough","role":"viewer"}"#),
        ),
        "updateUser" => ("/api/v1/users/bob", Some(r#"{"role":"operator"}"#)),
        "deleteUser" => ("/api/v1/users/bob", None),
        "listTokens" => ("/api/v1/tokens", None),
        "createToken" => (
            "/api/v1/tokens",
            Some(r#"{"name":"backup","expires_in_s":3600}"#),
        ),
        "revokeToken" => ("/api/v1/tokens/0123456789abcdef", None),
        "listAudit" => ("/api/v1/audit", None),
        "listDecisions" => ("/api/v1/decisions?world=scheduler&limit=5", None),
        "getHost" => ("/api/v1/host", None),
        "getFirmware" => ("/api/v1/host/firmware", None),
        "installFirmware" => ("/api/v1/host/firmware/install", None),
        "rebootHost" => ("/api/v1/host/firmware/reboot", None),
        "getClusterUpdate" => ("/api/v1/cluster/update", None),
        "startClusterUpdate" => ("/api/v1/cluster/update?move_back=false", None),
        "resumeClusterUpdate" => ("/api/v1/cluster/update/resume", None),
        "abortClusterUpdate" => ("/api/v1/cluster/update/abort", None),
        "getCertificate" => ("/api/v1/host/certificate", None),
        "getOpenapi" => ("/api/v1/openapi.json", None),
        "getMetrics" => ("/metrics", None),
        "listVms" => ("/api/v1/vms", None),
        "createVm" => ("/api/v1/vms", Some(VM_OK)),
        "getVm" => ("/api/v1/vms/vm1", None),
        "updateVm" => ("/api/v1/vms/vm1", Some(r#"{"memory_mib":4096}"#)),
        "deleteVm" => ("/api/v1/vms/vm1", None),
        "vmPower" => ("/api/v1/vms/vm1/power", Some(r#"{"op":"force_off"}"#)),
        "listPools" => ("/api/v1/pools", None),
        "createPool" => ("/api/v1/pools", Some(r#"{"name":"p2","path":"/srv/p2"}"#)),
        "listVolumes" => ("/api/v1/pools/p1/volumes", None),
        "createVolume" => (
            "/api/v1/pools/p1/volumes",
            Some(r#"{"name":"v2","size_mib":1024}"#),
        ),
        "deleteVolume" => ("/api/v1/pools/p1/volumes/v1", None),
        "resizeVolume" => (
            "/api/v1/pools/p1/volumes/v1/resize",
            Some(r#"{"size_mib":4096}"#),
        ),
        "snapshotVolume" => (
            "/api/v1/pools/p1/volumes/v1/snapshots",
            Some(r#"{"name":"s1"}"#),
        ),
        "listImages" => ("/api/v1/images", None),
        "addImage" => (
            "/api/v1/images",
            Some(r#"{"name":"deb","path":"/srv/deb.qcow2"}"#),
        ),
        "deleteImage" => ("/api/v1/images/deb", None),
        "listVswitches" => ("/api/v1/vswitches", None),
        "createVswitch" => (
            "/api/v1/vswitches",
            Some(r#"{"name":"sw1","uplink":"eth1","vlan":10}"#),
        ),
        "deleteVswitch" => ("/api/v1/vswitches/sw1", None),
        "listJobs" => ("/api/v1/jobs", None),
        "getJob" => ("/api/v1/jobs/j1", None),
        "cancelJob" => ("/api/v1/jobs/j1/cancel", None),
        "listPlugins" => ("/api/v1/plugins", None),
        "getConsole" => ("/api/v1/vms/vm1/console?tail=100", None),
        "consoleInput" => ("/api/v1/vms/vm1/console", Some(r#"{"data":"root\n"}"#)),
        "deletePool" => ("/api/v1/pools/p2", None),
        "importVolume" => (
            "/api/v1/pools/p1/imports",
            Some(r#"{"name":"v3","path":"/srv/disk.vmdk"}"#),
        ),
        "listSnapshots" => ("/api/v1/pools/p1/volumes/v1/snapshots", None),
        "revertSnapshot" => ("/api/v1/pools/p1/volumes/v1/snapshots/s1/revert", None),
        "deleteSnapshot" => ("/api/v1/pools/p1/volumes/v1/snapshots/s1", None),
        "cloneVolume" => (
            "/api/v1/pools/p1/volumes/v1/clone",
            Some(r#"{"name":"v4","linked":true}"#),
        ),
        "uploadImage" => ("/api/v1/images/up/upload?os_variant=debian12", None),
        "listEvents" => ("/api/v1/events?since=5&limit=2", None),
        "getCluster" => ("/api/v1/cluster", None),
        "createCluster" => ("/api/v1/cluster", Some(r#"{"max_members":5}"#)),
        "issueJoinToken" => ("/api/v1/cluster/join-tokens", Some(r#"{"ttl_s":600}"#)),
        "removeMember" => ("/api/v1/cluster/members/3", None),
        "joinCluster" => (
            "/api/v1/cluster/join",
            Some(r#"{"address":"192.0.2.1:8444","token":"nvjt1.abc"}"#),
        ),
        "getHostSettings" => ("/api/v1/host/settings", None),
        "replaceHostSettings" => (
            "/api/v1/host/settings?restart=true",
            Some(r#"{"text":"[vm]\nreserved-memory-mib = 1024\n"}"#),
        ),
        "clearHostSettings" => ("/api/v1/host/settings?host=nas2", None),
        "listHosts" => ("/api/v1/hosts", None),
        "cordonHost" => ("/api/v1/hosts/nas1/cordon", None),
        "uncordonHost" => ("/api/v1/hosts/nas1/uncordon", None),
        "degradeHost" => (
            "/api/v1/hosts/nas1/degrade",
            Some(r#"{"reason":"disk swap"}"#),
        ),
        "undegradeHost" => ("/api/v1/hosts/nas1/undegrade", None),
        "evacuateHost" => ("/api/v1/hosts/nas1/evacuate", None),
        "migrateVm" => ("/api/v1/vms/vm1/migrate", Some(r#"{"host":"nas2"}"#)),
        "recoverVm" => (
            "/api/v1/vms/vm1/recover",
            Some(r#"{"host":"nas3","confirm_host_down":true}"#),
        ),
        "installPlugin" => ("/api/v1/plugins", Some(r#"{"package":"TlZQTFVHSU4="}"#)),
        "uninstallPlugin" => ("/api/v1/plugins/scheduler", None),
        "resetPlugin" => ("/api/v1/plugins/scheduler/reset", None),
        other => panic!("no sample request for {other}: add one"),
    }
}

fn response_schema<'a>(
    doc: &'a Value,
    path_template: &str,
    method: &str,
    status: u16,
) -> Option<&'a Value> {
    schema::response_schema(doc, method, path_template, status)
}

#[tokio::test]
async fn real_responses_match_the_openapi_schemas() {
    let doc = spec();
    let (dir, _core, server, token) = start().await;
    let c = server.client();
    for route in ROUTES {
        let (path, body) = sample_on(dir.path(), route.operation);
        if let Some(b) = body {
            let req_schema = doc["paths"][route.path][route.method.to_lowercase()]
                .pointer("/requestBody/content/application~1json/schema")
                .expect("request schema");
            schema::validate(
                &doc,
                req_schema,
                &serde_json::from_str(b).unwrap(),
                "request",
            )
            .unwrap_or_else(|e| {
                panic!(
                    "{}: sample request does not match the spec: {e}",
                    route.operation
                )
            });
        }
        let r = match body {
            Some(b) => c.json(route.method, path, &token, b).await,
            None if route.raw_body => {
                c.send(
                    route.method,
                    path,
                    Some(&token),
                    Some("application/octet-stream"),
                    b"image bytes",
                )
                .await
            }
            None => c.send(route.method, path, Some(&token), None, b"").await,
        };
        assert_eq!(
            r.status,
            route.success,
            "{} {path}: {}",
            route.method,
            String::from_utf8_lossy(&r.body)
        );
        match response_schema(&doc, route.path, route.method, r.status) {
            Some(s) => {
                assert_eq!(r.headers.get("content-type").unwrap(), "application/json");
                schema::validate(&doc, s, &r.json(), route.operation).unwrap_or_else(|e| {
                    panic!(
                        "{} {path}: response does not match the spec: {e}",
                        route.method
                    )
                });
            }
            None => {
                // A documented non-JSON body (a stream, the metrics' text):
                // its media type is the one documented.
                let content = &doc["paths"][route.path][route.method.to_lowercase()]["responses"]
                    [route.success.to_string()]["content"];
                match content.as_object().and_then(|c| c.keys().next()) {
                    Some(media) => {
                        let sent = r.headers.get("content-type").unwrap().to_str().unwrap();
                        assert_eq!(
                            sent.split(';').next().unwrap().trim(),
                            media,
                            "{}",
                            route.operation
                        );
                        assert!(!r.body.is_empty(), "{}: empty body", route.operation);
                    }
                    None => {
                        assert!(r.body.is_empty(), "{}: undocumented body", route.operation)
                    }
                }
            }
        }
    }
    // Error answers follow the Error schema too.
    let err = serde_json::json!({"$ref": "#/components/schemas/Error"});
    for (method, path, tok, body) in [
        ("GET", "/api/v1/vms", None, ""),
        ("GET", "/api/v1/nope", Some(token.as_str()), ""),
        ("PUT", "/api/v1/vms", Some(token.as_str()), ""),
        (
            "POST",
            "/api/v1/vms",
            Some(token.as_str()),
            r#"{"bogus":1}"#,
        ),
        ("GET", "/api/v1/vms/missing", Some(token.as_str()), ""),
        ("GET", "/api/v1/vms/bad", Some(token.as_str()), ""),
    ] {
        let ct = (!body.is_empty()).then_some("application/json");
        let r = c.send(method, path, tok, ct, body.as_bytes()).await;
        assert!(r.status >= 400);
        schema::validate(&doc, &err, &r.json(), "error")
            .unwrap_or_else(|e| panic!("{method} {path}: {e}"));
    }
    server.stop().await;
}

#[test]
fn schema_checker_rejects_wrong_shapes() {
    let doc = spec();
    let vm = serde_json::json!({"$ref": "#/components/schemas/Vm"});
    assert!(schema::validate(&doc, &vm, &common::json_of(&common::vm("vm1")), "vm").is_ok());
    assert!(schema::validate(
        &doc,
        &vm,
        &common::json_of(&common::running_vm("vm1")),
        "vm"
    )
    .is_ok());
    let mut bad = common::json_of(&common::vm("vm1"));
    bad["created_at"] = "yesterday".into();
    assert!(schema::validate(&doc, &vm, &bad, "vm").is_err());
    let mut bad = common::json_of(&common::vm("vm1"));
    bad["accel"] = "hvf".into();
    assert!(schema::validate(&doc, &vm, &bad, "vm").is_err());
    let mut bad = common::json_of(&common::vm("vm1"));
    bad["disks"][0].as_object_mut().unwrap().remove("role");
    assert!(schema::validate(&doc, &vm, &bad, "vm").is_err());
    let mut bad = common::json_of(&common::vm("vm1"));
    bad["state"] = "exploded".into();
    assert!(schema::validate(&doc, &vm, &bad, "vm").is_err());
    let mut bad = common::json_of(&common::vm("vm1"));
    bad["extra"] = 1.into();
    assert!(schema::validate(&doc, &vm, &bad, "vm").is_err());
    let mut bad = common::json_of(&common::vm("vm1"));
    bad.as_object_mut().unwrap().remove("vcpus");
    assert!(schema::validate(&doc, &vm, &bad, "vm").is_err());
    let ev = serde_json::json!({"$ref": "#/components/schemas/Event"});
    assert!(schema::validate(&doc, &ev, &common::json_of(&common::event(1)), "ev").is_ok());
    let mut bad = common::json_of(&common::event(1));
    bad["seq"] = 0.into();
    assert!(schema::validate(&doc, &ev, &bad, "ev").is_err());
    assert!(nasvisor_schema_check::check_response(
        "GET",
        "/api/v1/vms/{id}",
        200,
        &common::json_of(&common::vm("a"))
    )
    .is_ok());
    assert!(nasvisor_schema_check::check_response(
        "GET",
        "/api/v1/vms/{id}",
        200,
        &common::json_of(&common::job("a", "b"))
    )
    .is_err());
    assert!(nasvisor_schema_check::check_response(
        "DELETE",
        "/api/v1/pools/{name}",
        204,
        &Value::Null
    )
    .is_ok());
    assert!(
        nasvisor_schema_check::check_response("GET", "/api/v1/nope", 200, &Value::Null).is_err()
    );
    let power = serde_json::json!({"$ref": "#/components/schemas/PowerOp"});
    assert!(schema::validate(&doc, &power, &serde_json::json!({"op": "reboot"}), "p").is_ok());
    assert!(schema::validate(
        &doc,
        &power,
        &serde_json::json!({"op": "reboot", "host": "h"}),
        "p"
    )
    .is_err());
}

#[tokio::test]
async fn new_routes_are_forwarded_as_the_right_action() {
    let (_dir, core, server, token) = start().await;
    let c = server.client();
    let t = token.as_str();
    let cases: Vec<(&str, &str, Option<&str>, u16, Action)> = vec![
        (
            "POST",
            "/api/v1/vms/vm1/console",
            Some(r#"{"data":"ls -l\n"}"#),
            204,
            Action::ConsoleInput {
                id: "vm1".into(),
                data: "ls -l\n".into(),
            },
        ),
        (
            "GET",
            "/api/v1/pools/p1/volumes/v1/snapshots",
            None,
            200,
            Action::ListSnapshots {
                pool: "p1".into(),
                volume: "v1".into(),
            },
        ),
        (
            "POST",
            "/api/v1/pools/p1/volumes/v1/snapshots/s1/revert",
            None,
            200,
            Action::RevertSnapshot {
                pool: "p1".into(),
                volume: "v1".into(),
                name: "s1".into(),
            },
        ),
        (
            "DELETE",
            "/api/v1/pools/p1/volumes/v1/snapshots/s1",
            None,
            204,
            Action::DeleteSnapshot {
                pool: "p1".into(),
                volume: "v1".into(),
                name: "s1".into(),
            },
        ),
        (
            "POST",
            "/api/v1/pools/p1/volumes/v1/clone",
            Some(r#"{"name":"v2"}"#),
            201,
            Action::CloneVolume {
                pool: "p1".into(),
                volume: "v1".into(),
                name: "v2".into(),
                linked: false,
            },
        ),
        (
            "POST",
            "/api/v1/pools/p1/volumes/v1/clone",
            Some(r#"{"name":"v3","linked":true}"#),
            201,
            Action::CloneVolume {
                pool: "p1".into(),
                volume: "v1".into(),
                name: "v3".into(),
                linked: true,
            },
        ),
        (
            "POST",
            "/api/v1/pools/p1/imports",
            Some(r#"{"name":"old","path":"/srv/old.vmdk"}"#),
            202,
            Action::ImportVolume {
                pool: "p1".into(),
                name: "old".into(),
                path: "/srv/old.vmdk".into(),
            },
        ),
        (
            "DELETE",
            "/api/v1/pools/p1",
            None,
            204,
            Action::DeletePool { name: "p1".into() },
        ),
        (
            "GET",
            "/api/v1/events",
            None,
            200,
            Action::ListEvents {
                since: None,
                limit: 100,
            },
        ),
        (
            "GET",
            "/api/v1/events?since=41&limit=1000",
            None,
            200,
            Action::ListEvents {
                since: Some(41),
                limit: 1000,
            },
        ),
        (
            "POST",
            "/api/v1/plugins/ha-policy/reset",
            None,
            200,
            Action::ResetPlugin {
                world: "ha-policy".into(),
            },
        ),
    ];
    for (method, path, body, status, action) in cases {
        let r = match body {
            Some(b) => c.json(method, path, t, b).await,
            None => c.send(method, path, Some(t), None, b"").await,
        };
        assert_eq!(
            r.status,
            status,
            "{method} {path}: {}",
            String::from_utf8_lossy(&r.body)
        );
        if status == 204 {
            assert!(r.body.is_empty());
        }
        assert_eq!(core.take(), vec![action], "{method} {path}");
    }
    // A reset of something that is not a world names the path parameter.
    let r = c
        .send("POST", "/api/v1/plugins/nope/reset", Some(t), None, b"")
        .await;
    assert_eq!((r.status, r.field().as_deref()), (400, Some("world")));
    assert!(r.json()["error"]["reason"]
        .as_str()
        .is_some_and(|m| m.contains("nope") && m.contains("scheduler")));
    assert!(core.take().is_empty());
    server.stop().await;
}

#[tokio::test]
async fn vm_create_with_install_is_parsed_completely() {
    let (_dir, core, server, token) = start().await;
    let c = server.client();
    let body = r#"{"name":"web1","vcpus":2,"memory_mib":1024,"image":"debian-12","firmware":"uefi",
        "nics":[{"vswitch":"sw0"},{"vswitch":"sw1","model":"e1000"}],
        "install":{"hostname":"Web1.example.org",
          "users":[{"name":"admin","ssh_authorized_keys":["ssh-ed25519 AAAAC3Nza admin@x"],
                    "password_hash":"$6$salt$hash","sudo":true,"groups":["adm","_ops"],"shell":"/bin/bash"}],
          "packages":["nginx","libstdc++6","python3.11"],
          "network":[{"addresses":["192.0.2.10/24","2001:db8::10/64"],"gateway4":"192.0.2.1",
                      "nameservers":["192.0.2.53","2001:db8::53"]},{"dhcp4":true}],
          "disk_size_gib":20,"timezone":"Europe/Berlin","pool":"fast","keep_disks_on_failure":true}}"#;
    let r = c.json("POST", "/api/v1/vms", &token, body).await;
    assert_eq!(r.status, 201, "{}", String::from_utf8_lossy(&r.body));
    let expected = Action::CreateVm(VmCreate {
        name: "web1".into(),
        vcpus: 2,
        memory_mib: 1024,
        description: None,
        disks: vec![],
        nics: vec![
            NicSpec {
                vswitch: "sw0".into(),
                mac: None,
                model: None,
            },
            NicSpec {
                vswitch: "sw1".into(),
                mac: None,
                model: Some(nasvisor_api::types::NicModel::E1000),
            },
        ],
        image: Some("debian-12".into()),
        autostart: false,
        ha: false,
        firmware: FirmwareKind::Uefi,
        install: Some(InstallSpec {
            hostname: Some("Web1.example.org".into()),
            users: vec![InstallUser {
                name: "admin".into(),
                ssh_authorized_keys: vec!["ssh-ed25519 AAAAC3Nza admin@x".into()],
                password_hash: Some("$6$salt$hash".into()),
                sudo: true,
                groups: vec!["adm".into(), "_ops".into()],
                shell: Some("/bin/bash".into()),
            }],
            packages: vec!["nginx".into(), "libstdc++6".into(), "python3.11".into()],
            network: vec![
                InstallNetwork {
                    dhcp4: false,
                    addresses: vec!["192.0.2.10/24".into(), "2001:db8::10/64".into()],
                    gateway4: Some("192.0.2.1".into()),
                    nameservers: vec!["192.0.2.53".into(), "2001:db8::53".into()],
                },
                InstallNetwork {
                    dhcp4: true,
                    ..Default::default()
                },
            ],
            disk_size_gib: Some(20),
            timezone: Some("Europe/Berlin".into()),
            pool: Some("fast".into()),
            keep_disks_on_failure: true,
        }),
        host: None,
    });
    assert_eq!(core.take(), vec![expected]);
    // The sample body follows the spec's request schema too.
    let doc = spec();
    schema::validate(
        &doc,
        &serde_json::json!({"$ref": "#/components/schemas/VmCreate"}),
        &serde_json::from_str(body).unwrap(),
        "request",
    )
    .unwrap();

    // Image without install: defaults, firmware bios.
    let r = c
        .json(
            "POST",
            "/api/v1/vms",
            &token,
            r#"{"name":"web2","vcpus":1,"memory_mib":512,"image":"debian-12"}"#,
        )
        .await;
    assert_eq!(r.status, 201);
    let calls = core.take();
    let Action::CreateVm(v) = &calls[0] else {
        panic!("{calls:?}")
    };
    assert_eq!(
        (v.firmware, v.install.as_ref(), v.image.as_deref()),
        (FirmwareKind::Bios, None, Some("debian-12"))
    );
    server.stop().await;
}

#[tokio::test]
async fn install_field_errors_name_the_path() {
    let (_dir, core, server, token) = start().await;
    let c = server.client();
    let base = |install: &str| {
        format!(
            r#"{{"name":"v","vcpus":1,"memory_mib":512,"image":"img","nics":[{{"vswitch":"s"}}],"install":{install}}}"#
        )
    };
    let many_users = format!(
        r#"{{"users":[{}]}}"#,
        (0..33)
            .map(|i| format!(r#"{{"name":"u{i}"}}"#))
            .collect::<Vec<_>>()
            .join(",")
    );
    let long_key = format!(
        r#"{{"users":[{{"name":"a","ssh_authorized_keys":["ssh-rsa {}"]}}]}}"#,
        "A".repeat(8200)
    );
    let cases: Vec<(String, &str)> = vec![
        (r#"{"hostname":"-web"}"#.into(), "install.hostname"),
        (r#"{"hostname":"a..b"}"#.into(), "install.hostname"),
        (r#"{"hostname":"web_1"}"#.into(), "install.hostname"),
        (
            format!(r#"{{"hostname":"{}"}}"#, "a".repeat(64)),
            "install.hostname",
        ),
        (many_users, "install.users"),
        (
            r#"{"users":[{"name":"ok"},{"name":"9lives"}]}"#.into(),
            "install.users[1].name",
        ),
        (
            r#"{"users":[{"name":"a"},{"name":"a"}]}"#.into(),
            "install.users[1].name",
        ),
        (
            r#"{"users":[{"name":"a","ssh_authorized_keys":["ssh-rsa AAA","rsa AAA"]}]}"#.into(),
            "install.users[0].ssh_authorized_keys[1]",
        ),
        (
            r#"{"users":[{"name":"a","ssh_authorized_keys":["ssh-rsa A\nssh-rsa B"]}]}"#.into(),
            "install.users[0].ssh_authorized_keys[0]",
        ),
        (long_key, "install.users[0].ssh_authorized_keys[0]"),
        (
            r#"{"users":[{"name":"a","password_hash":"secret"}]}"#.into(),
            "install.users[0].password_hash",
        ),
        (
            r#"{"users":[{"name":"a","password_hash":"$6$a b"}]}"#.into(),
            "install.users[0].password_hash",
        ),
        (
            r#"{"users":[{"name":"a","groups":["Wheel"]}]}"#.into(),
            "install.users[0].groups[0]",
        ),
        (
            r#"{"users":[{"name":"a","shell":"bash"}]}"#.into(),
            "install.users[0].shell",
        ),
        (
            r#"{"users":[{"name":"a","sudo":"yes"}]}"#.into(),
            "install.users[0].sudo",
        ),
        (r#"{"packages":["Nginx"]}"#.into(), "install.packages[0]"),
        (r#"{"packages":["ok","a"]}"#.into(), "install.packages[1]"),
        (r#"{"packages":["ng inx"]}"#.into(), "install.packages[0]"),
        (
            r#"{"network":[{"addresses":["192.0.2.1"]}]}"#.into(),
            "install.network[0].addresses[0]",
        ),
        (
            r#"{"network":[{"addresses":["192.0.2.1/33"]}]}"#.into(),
            "install.network[0].addresses[0]",
        ),
        (
            r#"{"network":[{"addresses":["2001:db8::1/129"]}]}"#.into(),
            "install.network[0].addresses[0]",
        ),
        (
            r#"{"network":[{"gateway4":"2001:db8::1"}]}"#.into(),
            "install.network[0].gateway4",
        ),
        (
            r#"{"network":[{"nameservers":["dns.example"]}]}"#.into(),
            "install.network[0].nameservers[0]",
        ),
        (r#"{"network":[{},{}]}"#.into(), "install.network"),
        (r#"{"disk_size_gib":65537}"#.into(), "install.disk_size_gib"),
        (
            r#"{"timezone":"Europe/Berlin;rm"}"#.into(),
            "install.timezone",
        ),
        (r#"{"timezone":"../etc"}"#.into(), "install.timezone"),
        (r#"{"pool":".."}"#.into(), "install.pool"),
        (r#"{"colour":"red"}"#.into(), "install.colour"),
    ];
    for (install, field) in cases {
        let r = c.json("POST", "/api/v1/vms", &token, &base(&install)).await;
        assert_eq!(
            (r.status, r.field().as_deref()),
            (400, Some(field)),
            "{install}: {}",
            String::from_utf8_lossy(&r.body)
        );
        let reason = r.json()["error"]["reason"].as_str().unwrap().to_string();
        assert!(!reason.is_empty());
    }
    // Upper-case host names are fine (case-insensitive), as are 253 bytes.
    let name = [
        "a".repeat(63),
        "b".repeat(63),
        "c".repeat(63),
        "d".repeat(61),
    ]
    .join(".");
    assert_eq!(name.len(), 253);
    let r = c
        .json(
            "POST",
            "/api/v1/vms",
            &token,
            &base(&format!(r#"{{"hostname":"{name}"}}"#)),
        )
        .await;
    assert_eq!(r.status, 201, "{}", String::from_utf8_lossy(&r.body));
    assert_eq!(core.take().len(), 1);
    server.stop().await;
}

/// A certificate and key, PEM, valid from `from` to `to` (days from now).
fn make_cert(name: &str, from: i64, to: i64) -> (String, String) {
    let names = vec![name.to_string(), "localhost".into(), "127.0.0.1".into()];
    let mut p = rcgen::CertificateParams::new(names).unwrap();
    let now = time::OffsetDateTime::now_utc();
    p.not_before = now + time::Duration::days(from);
    p.not_after = now + time::Duration::days(to);
    p.distinguished_name.push(rcgen::DnType::CommonName, name);
    let key = rcgen::KeyPair::generate().unwrap();
    (p.self_signed(&key).unwrap().pem(), key.serialize_pem())
}

#[tokio::test]
async fn the_certificate_is_replaced_without_a_restart_and_bad_ones_change_nothing() {
    let (dir, _core, server, token) = start().await;
    let c = server.client();
    let before = c.get("/api/v1/host/certificate", Some(VIEWER_TOKEN)).await;
    assert_eq!(before.status, 200);
    assert_eq!(before.json()["fingerprint"], server.fingerprint.as_str());
    let (cert, key) = make_cert("nas.example.com", -1, 365);
    let (_, other_key) = make_cert("other", -1, 365);
    let (old_cert, old_key) = make_cert("old.example.com", -400, -30);
    let body = |c: &str, k: &str| serde_json::json!({"cert_pem": c, "key_pem": k}).to_string();
    let files = || {
        (
            std::fs::read(dir.path().join("tls/cert.pem")).unwrap(),
            std::fs::read(dir.path().join("tls/key.pem")).unwrap(),
        )
    };
    let kept = files();
    for (b, field, why) in [
        (body(&cert, &other_key), "key_pem", "does not match"),
        (body(&old_cert, &old_key), "cert_pem", "expired"),
        (body("not pem", &key), "cert_pem", "PEM"),
        (
            body(
                &cert,
                "-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n",
            ),
            "key_pem",
            "",
        ),
    ] {
        let r = c.json("PUT", "/api/v1/host/certificate", &token, &b).await;
        assert!(
            r.status == 422 || r.status == 400,
            "{}",
            String::from_utf8_lossy(&r.body)
        );
        assert_eq!(r.field().as_deref(), Some(field));
        assert!(
            r.json()["error"]["reason"].as_str().unwrap().contains(why),
            "{}",
            r.json()
        );
        assert_eq!(files(), kept, "a refused certificate changed the files");
    }
    // A viewer may look, not replace.
    let r = c
        .json(
            "PUT",
            "/api/v1/host/certificate",
            VIEWER_TOKEN,
            &body(&cert, &key),
        )
        .await;
    assert_eq!(r.status, 403);
    let r = c
        .json(
            "PUT",
            "/api/v1/host/certificate",
            &token,
            &body(&cert, &key),
        )
        .await;
    assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
    let new_fp = r.json()["fingerprint"].as_str().unwrap().to_string();
    assert_ne!(new_fp, server.fingerprint);
    assert!(r.json()["names"]
        .as_array()
        .unwrap()
        .iter()
        .any(|n| n == "nas.example.com"));
    // New connections get the new certificate: a client that trusts the
    // old one fails, one that trusts the new one works; the files hold it.
    assert_eq!(
        std::fs::read_to_string(dir.path().join("tls/cert.pem")).unwrap(),
        cert
    );
    // (A fresh client: one that kept a TLS session may resume it.)
    let old_trust = server.client_trusting(&server.cert_pem);
    assert!(
        old_trust.try_raw().await.is_err(),
        "the old certificate still served"
    );
    let fresh = server.client_trusting(cert.as_bytes());
    let r = fresh.get("/api/v1/host/certificate", Some(&token)).await;
    assert_eq!(r.json()["fingerprint"], new_fp.as_str());
    server.stop().await;
    // A restart serves it too.
    let again = Running::start(dir.path(), Arc::new(FakeCore::default())).await;
    assert_eq!(again.fingerprint, new_fp);
    again.stop().await;
}

#[tokio::test]
async fn the_openapi_document_is_served_to_any_authenticated_caller() {
    let (_dir, _core, server, _token) = start().await;
    let c = server.client();
    assert_eq!(c.get("/api/v1/openapi.json", None).await.status, 401);
    let r = c.get("/api/v1/openapi.json", Some(VIEWER_TOKEN)).await;
    assert_eq!(r.status, 200);
    assert_eq!(r.body, OPENAPI_JSON.as_bytes());
    server.stop().await;
}

#[tokio::test]
async fn metrics_need_a_viewer_and_count_requests_by_route_with_bounded_labels() {
    let (_dir, _core, server, _token) = start().await;
    let c = server.client();
    let r = c.get("/metrics", None).await;
    assert_eq!(r.status, 401);
    assert!(r.headers.contains_key("www-authenticate"));
    c.get("/api/v1/vms", Some(VIEWER_TOKEN)).await;
    // A client's own method and path never become label values.
    c.send(
        "BREW",
        "/api/v1/no-such-route",
        Some(VIEWER_TOKEN),
        None,
        b"",
    )
    .await;
    let r = c.get("/metrics", Some(VIEWER_TOKEN)).await;
    assert_eq!(r.status, 200);
    assert_eq!(
        r.headers["content-type"],
        "application/openmetrics-text; version=1.0.0; charset=utf-8"
    );
    let text = String::from_utf8(r.body).unwrap();
    assert!(text.ends_with("# EOF\n"));
    assert!(
        text.contains("nasvisor_vms{state=\"running\"} 2\n"),
        "{text}"
    );
    assert!(
        text.contains("nasvisor_build_info{host=\"fake-host\""),
        "{text}"
    );
    assert!(
        text.contains(
            "nasvisor_api_request_duration_seconds_count{operation=\"listVms\",method=\"GET\",code=\"200\"}"
        ),
        "{text}"
    );
    assert!(
        text.contains("operation=\"unmatched\",method=\"other\""),
        "{text}"
    );
    assert!(!text.contains("BREW") && !text.contains("no-such-route"));
    server.stop().await;
}

#[tokio::test]
async fn the_web_console_answers_without_a_credential_under_a_strict_csp() {
    use nasvisor_api::console_ui::{ASSETS, CONTENT_SECURITY_POLICY};
    let (_dir, core, server, _token) = start().await;
    let c = server.client();
    let r = c.get("/", None).await;
    assert_eq!(r.status, 200);
    let header = |r: &common::Reply, name: &str| {
        r.headers
            .get(name)
            .unwrap_or_else(|| panic!("no {name} header"))
            .to_str()
            .unwrap()
            .to_string()
    };
    assert_eq!(header(&r, "content-type"), "text/html; charset=utf-8");
    let html = String::from_utf8(r.body.clone()).unwrap();
    assert!(html.contains("/ui/js/main.js"), "{html}");
    // Every file of the console: its type, the security headers, and
    // revalidation on each load.
    for asset in ASSETS {
        let r = c.get(asset.path, None).await;
        assert_eq!(r.status, 200, "{}", asset.path);
        assert_eq!(
            header(&r, "content-type"),
            asset.content_type,
            "{}",
            asset.path
        );
        assert_eq!(r.body, asset.body, "{}", asset.path);
        assert_eq!(
            header(&r, "content-security-policy"),
            CONTENT_SECURITY_POLICY
        );
        assert_eq!(header(&r, "x-content-type-options"), "nosniff");
        assert_eq!(header(&r, "referrer-policy"), "no-referrer");
        assert_eq!(header(&r, "x-frame-options"), "DENY");
        assert_eq!(header(&r, "cache-control"), "no-cache");
        assert!(header(&r, "etag").starts_with('"'), "{}", asset.path);
    }
    for part in [
        "default-src 'none'",
        "script-src 'self'",
        "style-src 'self'",
        "connect-src 'self'",
        "frame-ancestors 'none'",
        "base-uri 'none'",
    ] {
        assert!(CONTENT_SECURITY_POLICY.contains(part), "{part}");
    }
    // A known ETag: 304, no body.
    let etag = header(&r, "etag");
    let r = c
        .send_headers("GET", "/", &[("if-none-match", etag)], None, b"")
        .await;
    assert_eq!(r.status, 304);
    assert!(r.body.is_empty());
    // HEAD: the headers only.
    let r = c.send("HEAD", "/", None, None, b"").await;
    assert_eq!(r.status, 200);
    assert!(r.body.is_empty());
    // The files are public, a wrong credential does not matter there.
    assert_eq!(c.get("/", Some("wrong")).await.status, 200);
    // Anything else still needs a credential: another method on the page,
    // a path that is not one of its files, and every API route.
    let r = c.send("POST", "/", None, Some("text/plain"), b"x").await;
    assert_eq!(r.status, 401);
    for path in ["/ui/", "/ui/js/nope.js", "/ui/../api/v1/vms", "/api/v1/vms"] {
        let r = c.get(path, None).await;
        assert_eq!(r.status, 401, "{path}");
        assert!(r.headers.get("www-authenticate").is_some(), "{path}");
    }
    assert!(
        core.take().is_empty(),
        "the console's files reached the core"
    );
    server.stop().await;
}
