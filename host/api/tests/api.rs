//! End-to-end tests of the admin endpoint: the real server on 127.0.0.1:0
//! with a generated certificate, a real TLS client, and a fake core (the
//! layer below the one under test).

mod common;

use common::{schema, FakeCore, Running};
use nasvisor_api::action::{ImageAdd, ImageSource, VmCreate, VmUpdate};
use nasvisor_api::router::ROUTES;
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

    for route in ROUTES.iter().filter(|r| r.operation != "health") {
        let path = route
            .path
            .replace("{id}", "x1")
            .replace("{pool}", "p1")
            .replace("{volume}", "v1")
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
    // Unknown paths do not reveal themselves either.
    assert_eq!(c.get("/api/v1/nope", None).await.status, 401);
    assert_eq!(c.get("/", Some("wrong")).await.status, 401);
    assert!(
        core.take().is_empty(),
        "the core was called without a valid token"
    );
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
            delete_disks: true
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
            source: ImageSource::Url("https://example.invalid/deb.qcow2".into())
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
async fn cert_and_token_persist_across_restart_and_rotation_works() {
    let dir = tempfile::tempdir().unwrap();
    let core = Arc::new(FakeCore::default());
    let first = Running::start(dir.path(), core.clone()).await;
    let token = first.new_token.clone().expect("token on first start");
    let fp = first.fingerprint.clone();
    first.stop().await;

    let second = Running::start(dir.path(), core.clone()).await;
    assert_eq!(second.fingerprint, fp, "certificate regenerated");
    assert!(
        second.new_token.is_none(),
        "a new token was printed on restart"
    );
    let c = second.client();
    assert_eq!(c.get("/api/v1/host", Some(&token)).await.status, 200);

    let r = c
        .send("POST", "/api/v1/auth/token/rotate", Some(&token), None, b"")
        .await;
    assert_eq!(r.status, 200);
    let new = r.json()["token"].as_str().unwrap().to_string();
    assert_ne!(new, token);
    assert_eq!(c.get("/api/v1/host", Some(&token)).await.status, 401);
    assert_eq!(c.get("/api/v1/host", Some(&new)).await.status, 200);
    second.stop().await;

    let third = Running::start(dir.path(), core).await;
    assert_eq!(
        third.client().get("/api/v1/host", Some(&new)).await.status,
        200
    );
    third.stop().await;
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
            in_spec.insert((
                method.to_uppercase(),
                path.clone(),
                op["operationId"].as_str().unwrap().to_string(),
                success[0].parse::<u16>().unwrap(),
                op.get("requestBody").is_some(),
            ));
        }
    }
    let in_router: BTreeSet<_> = ROUTES
        .iter()
        .map(|r| {
            (
                r.method.to_string(),
                r.path.to_string(),
                r.operation.to_string(),
                r.success,
                r.body,
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

/// A valid request for every route.
fn sample(operation: &str) -> (&'static str, Option<&'static str>) {
    match operation {
        "health" => ("/healthz", None),
        "rotateToken" => ("/api/v1/auth/token/rotate", None),
        "getHost" => ("/api/v1/host", None),
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
        other => panic!("no sample request for {other}: add one"),
    }
}

fn response_schema<'a>(
    doc: &'a Value,
    path_template: &str,
    method: &str,
    status: u16,
) -> Option<&'a Value> {
    let responses = &doc["paths"][path_template][method.to_lowercase()]["responses"];
    let r = responses
        .get(status.to_string())
        .or_else(|| responses.get("default"))?;
    r.pointer("/content/application~1json/schema")
}

#[tokio::test]
async fn real_responses_match_the_openapi_schemas() {
    let doc = spec();
    let (_dir, _core, server, mut token) = start().await;
    let c = server.client();
    for route in ROUTES {
        let (path, body) = sample(route.operation);
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
            None => assert!(r.body.is_empty(), "{}: undocumented body", route.operation),
        }
        if route.operation == "rotateToken" {
            token = r.json()["token"].as_str().unwrap().to_string();
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
    assert!(schema::validate(&doc, &vm, &common::vm("vm1"), "vm").is_ok());
    let mut bad = common::vm("vm1");
    bad["state"] = "exploded".into();
    assert!(schema::validate(&doc, &vm, &bad, "vm").is_err());
    let mut bad = common::vm("vm1");
    bad["extra"] = 1.into();
    assert!(schema::validate(&doc, &vm, &bad, "vm").is_err());
    let mut bad = common::vm("vm1");
    bad.as_object_mut().unwrap().remove("vcpus");
    assert!(schema::validate(&doc, &vm, &bad, "vm").is_err());
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
