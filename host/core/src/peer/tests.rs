//! Version skew through the real cluster channel: three cores in this
//! process, each with its own store and 127.0.0.1 port, talking over the
//! mutual-TLS transport of `nasvisor-cluster-net`. One member pretends to
//! speak the next protocol version only (not served by the others), one
//! the next version and this one (a member in the middle of a rolling
//! update).

use crate::{AccelSetting, CoreConfig, NasCore};
use nasvisor_api_types::peer::{PeerWindow, PEER_PROTOCOL};
use nasvisor_api_types::{
    Action, Answer, ClusterCreate, ClusterJoin, CoreError, HostView, JoinTokenCreate, PoolCreate,
};
use nasvisor_plugin_host::{PolicyHost, Runtime, RuntimeConfig};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// A free port on a loopback address of this test's own (127.77.x.y, one
/// per call): a port picked on 127.0.0.1 and bound later can be taken
/// meanwhile by another test of the process (it happened).
fn free_addr() -> String {
    static N: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
    let n = N.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let ip = format!("127.77.{}.{}", std::process::id() % 250 + 1, n % 250 + 1);
    let l = std::net::TcpListener::bind(format!("{ip}:0")).unwrap();
    l.local_addr().unwrap().to_string()
}

pub(crate) async fn start(
    dir: &std::path::Path,
    name: &str,
    window: Option<PeerWindow>,
) -> NasCore {
    start_with(dir, name, |cfg| cfg.test_peer_window = window).await
}

/// [`start`], with `tweak` applied to the configuration.
pub(crate) async fn start_with(
    dir: &std::path::Path,
    name: &str,
    tweak: impl FnOnce(&mut CoreConfig),
) -> NasCore {
    let mut cfg = CoreConfig::new(dir.join(name));
    cfg.host_name = name.into();
    cfg.accel = AccelSetting::Tcg;
    cfg.cluster_address = free_addr();
    cfg.heartbeat_interval = Duration::from_millis(200);
    tweak(&mut cfg);
    let rt = Arc::new(Runtime::new(RuntimeConfig::default(), Vec::new()).unwrap());
    let policy = Arc::new(PolicyHost::new(rt, None));
    let downloader = Arc::new(nasvisor_download::HttpDownloader::new().unwrap());
    NasCore::start(
        cfg,
        policy,
        nasvisor_cluster_net::TlsNet::shared(),
        downloader,
    )
    .await
    .unwrap()
}

pub(crate) async fn join(founder: &NasCore, member: &NasCore) {
    let Answer::JoinToken(t) = founder
        .admin(Action::IssueJoinToken(JoinTokenCreate::default()))
        .await
        .unwrap()
    else {
        panic!("not a join token")
    };
    let token = t.token;
    member
        .admin(Action::JoinCluster(ClusterJoin {
            address: founder.inner.cfg.cluster_address.clone(),
            token,
        }))
        .await
        .unwrap();
}

fn create_pool_on(host: &str, dir: &std::path::Path, name: &str) -> Action {
    Action::OnHost {
        host: host.into(),
        request: Box::new(Action::CreatePool(PoolCreate {
            name: name.into(),
            path: dir.join(name).to_string_lossy().into_owned(),
            shared: false,
        })),
    }
}

async fn hosts(c: &NasCore) -> Vec<HostView> {
    match c.admin(Action::ListHosts).await.unwrap() {
        Answer::Hosts(hs) => hs,
        other => panic!("not a list of hosts: {other:?}"),
    }
}

async fn pools(c: &NasCore) -> Vec<String> {
    // As the API sends it.
    let v = c.admin(Action::ListPools).await.unwrap().to_json().unwrap();
    v.as_array()
        .unwrap()
        .iter()
        .map(|p| format!("{}@{}", p["name"], p["host"]))
        .collect()
}

fn unsupported(e: &CoreError) -> Option<(&str, u32, u32)> {
    match e {
        CoreError::UnsupportedVersion {
            host, ours, theirs, ..
        } => Some((host.as_str(), *ours, *theirs)),
        _ => None,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn members_more_than_one_version_apart_refuse_each_other_typed_and_read_nothing() {
    let tmp = tempfile::tempdir().unwrap();
    let now = PEER_PROTOCOL;
    let next = now + 1;
    let a = start(tmp.path(), "a", None).await;
    // b speaks only the next version: a cannot write it, and b does not
    // serve a's.
    let b = start(
        tmp.path(),
        "b",
        Some(PeerWindow {
            oldest: next,
            current: next,
        }),
    )
    .await;
    // c is one version ahead and still serves a's: a rolling update.
    let c = start(
        tmp.path(),
        "c",
        Some(PeerWindow {
            oldest: now,
            current: next,
        }),
    )
    .await;
    a.admin(Action::CreateCluster(ClusterCreate::default()))
        .await
        .unwrap();
    join(&a, &b).await;
    join(&a, &c).await;

    // 1. a → b: refused before the call is read, naming both versions and
    // b; the pool is not created.
    let err = a
        .admin(create_pool_on("b", tmp.path(), "from-a"))
        .await
        .unwrap_err();
    assert_eq!(unsupported(&err), Some(("b", next, now)), "{err:?}");
    let text = err.to_string();
    assert!(
        text.contains("host b") && text.contains(&format!("version {now}")),
        "{text}"
    );
    assert!(
        !tmp.path().join("from-a").exists(),
        "b read the refused call"
    );

    // 2. b → a: the other way round.
    let err = b
        .admin(create_pool_on("a", tmp.path(), "from-b"))
        .await
        .unwrap_err();
    assert_eq!(unsupported(&err), Some(("a", now, next)), "{err:?}");
    assert!(
        !tmp.path().join("from-b").exists(),
        "a read the refused call"
    );

    // 3. Within one version both ways: c writes a's version to a, a its
    // own to c.
    c.admin(create_pool_on("a", tmp.path(), "from-c"))
        .await
        .unwrap();
    a.admin(create_pool_on("c", tmp.path(), "to-c"))
        .await
        .unwrap();
    let p = pools(&a).await;
    assert!(p.contains(&"\"from-c\"@\"a\"".to_string()), "{p:?}");
    assert!(p.contains(&"\"to-c\"@\"c\"".to_string()), "{p:?}");
    assert!(
        !p.iter()
            .any(|p| p.contains("from-a") || p.contains("from-b")),
        "{p:?}"
    );

    // 4. The leader's heartbeats record every member's version; b is shown
    // as not served, c as served.
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let hs = hosts(&a).await;
        let get = |id: &str| hs.iter().find(|h| h.id == id).cloned().unwrap();
        let (hb, hc) = (get("b"), get("c"));
        if hb.protocol == Some(next)
            && !hb.protocol_compatible
            && hc.protocol == Some(next)
            && hc.protocol_compatible
            && get("a").protocol == Some(now)
        {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the hosts never showed their versions: {hs:#?}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let ev = a
        .admin(Action::ListEvents {
            since: None,
            limit: 1000,
        })
        .await
        .unwrap()
        .to_json()
        .unwrap();
    assert!(
        ev.to_string().contains("host-protocol-unsupported"),
        "no event says b is not served: {ev}"
    );

    for core in [c, b, a] {
        core.shutdown().await.unwrap();
    }
}

#[test]
fn a_failed_call_says_whether_it_was_carried_out_and_what_to_do() {
    use nasvisor_cluster::{CallError, StoreError};
    let rec: crate::model::HostRecord = serde_json::from_value(serde_json::json!({
        "id": "nas2", "name": "nas2", "version": "0.1.0", "cpus": 2, "memory_mib": 1024,
        "accel": "tcg", "accel_reason": "", "qemu_version": "10", "node_id": 2
    }))
    .unwrap();
    let addr = "127.0.0.1:9".to_string();
    let reason_of = |e: CoreError| match e {
        CoreError::Unavailable { reason } => ("unavailable", reason),
        CoreError::Conflict { reason } => ("conflict", reason),
        CoreError::Internal { reason } => ("internal", reason),
        e => panic!("unexpected {e:?}"),
    };
    let cases = [
        (
            StoreError::Transport(CallError::Connect {
                target: 2,
                addr: addr.clone(),
                reason: "connection refused".into(),
            }),
            "unavailable",
            "nothing was sent",
        ),
        (
            StoreError::Transport(CallError::Timeout {
                target: 2,
                addr: addr.clone(),
                timeout: Duration::from_secs(10),
            }),
            "unavailable",
            "the outcome is unknown",
        ),
        (
            StoreError::Transport(CallError::Refused {
                target: 2,
                addr: addr.clone(),
                reason: "not a member".into(),
            }),
            "conflict",
            "does not count this host as a member",
        ),
        (
            StoreError::Invalid {
                field: "node_id",
                reason: "node 2 is not a member of this cluster".into(),
            },
            "conflict",
            "no longer a member",
        ),
        (
            StoreError::Transport(CallError::BadAnswer {
                target: 2,
                addr,
                reason: "HTTP 500".into(),
            }),
            "internal",
            "unreadable",
        ),
    ];
    for (e, status, says) in cases {
        let (got, reason) = reason_of(super::transport_error(&rec, "action", e));
        assert_eq!(got, status, "{reason}");
        assert!(
            reason.contains("host nas2") && reason.contains(says),
            "{reason}"
        );
    }
}

impl NasCore {
    /// Test support: `action` asked through the API by an admin's token
    /// from loopback.
    pub(crate) async fn admin(
        &self,
        action: nasvisor_api_types::Action,
    ) -> Result<nasvisor_api_types::Answer, nasvisor_api_types::CoreError> {
        let request = nasvisor_api_types::Request {
            caller: nasvisor_api_types::Caller {
                user: "admin".into(),
                role: nasvisor_api_types::Role::Admin,
                via: nasvisor_api_types::CredentialKind::Token,
                credential: "test".into(),
                expires_at: None,
                csrf: None,
            },
            address: std::net::Ipv4Addr::LOCALHOST.into(),
            operation: "test",
            method: "POST",
            path: "/test".into(),
        };
        nasvisor_api_types::Core::handle(self, &request, action).await
    }
}
