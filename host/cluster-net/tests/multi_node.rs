//! A cluster of several hosts, in process: each node has its own data
//! directory and its own 127.0.0.1 port, and the nodes talk over the real
//! mutual-TLS transport.
//!
//! One file although over 700 lines: no fixture is shared (each test forms
//! its own cluster), but the host helpers here (founder, join, raw transports,
//! minted certificates) serve tests all through it; a split would move them
//! into a shared module and add a test binary to build.

use std::sync::Arc;
use std::time::{Duration, Instant};

use nasvisor_cluster::wire::{Forward, ForwardError, ForwardReply, PATH_FORWARD};
use nasvisor_cluster::{
    ClusterNet, ClusterSettings, ClusterStore, JoinRefused, NodeStatus, StoreError,
};
use nasvisor_cluster_net::ca::{new_node_key, node_name, ClusterCa, Pki};
use nasvisor_cluster_net::client::PeerTransport;
use nasvisor_cluster_net::TlsNet;
use serde_json::json;

fn init_logs() {
    let _ = tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
        .with_test_writer()
        .try_init();
}

/// The real network, as the daemon hands it to the store.
fn net() -> Arc<dyn ClusterNet> {
    TlsNet::shared()
}

fn free_addr() -> String {
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    l.local_addr().unwrap().to_string()
}

struct Host {
    dir: tempfile::TempDir,
    addr: String,
    store: Option<ClusterStore>,
}

impl Host {
    fn store(&self) -> &ClusterStore {
        self.store.as_ref().expect("running")
    }

    fn id(&self) -> u64 {
        self.store().node_id()
    }
}

async fn founder(settings: ClusterSettings) -> Host {
    let dir = tempfile::tempdir().unwrap();
    let addr = free_addr();
    let store = ClusterStore::create(dir.path(), 1, addr.clone(), settings, net())
        .await
        .expect("create");
    store.serve(addr.parse().unwrap()).await.expect("serve");
    Host {
        dir,
        addr,
        store: Some(store),
    }
}

async fn try_join(
    via: &Host,
    token: &str,
) -> (tempfile::TempDir, String, Result<ClusterStore, StoreError>) {
    let dir = tempfile::tempdir().unwrap();
    let addr = free_addr();
    let r = ClusterStore::join(dir.path(), None, addr.clone(), &via.addr, token, net()).await;
    (dir, addr, r)
}

async fn join(via: &Host) -> Host {
    let token = via
        .store()
        .issue_join_token(Duration::from_secs(60))
        .await
        .unwrap();
    let (dir, addr, r) = try_join(via, &token).await;
    Host {
        dir,
        addr,
        store: Some(r.expect("join")),
    }
}

async fn eventually<T>(what: &str, timeout: Duration, mut f: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(v) = f() {
            return v;
        }
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

async fn shutdown(hosts: Vec<Host>) {
    for mut h in hosts {
        if let Some(s) = h.store.take() {
            s.shutdown().await.unwrap();
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn three_hosts_follower_writes_failover_and_catch_up() {
    init_logs();
    let t0 = Instant::now();
    let h1 = founder(ClusterSettings::default()).await;
    let info = h1.store().cluster_info().unwrap();
    assert_eq!(info.max_members, 7);
    assert_eq!(info.cluster_id.len(), 16);
    let h2 = join(&h1).await;
    let h3 = join(&h2).await; // through a follower: it points the host to the leader
    eprintln!("cluster of 3 formed in {:?}", t0.elapsed());
    assert_eq!((h2.id(), h3.id()), (2, 3));
    for h in [&h1, &h2, &h3] {
        assert!(h.dir.path().join("pki/node.pem").exists());
        assert!(
            h.dir.path().join("pki/ca.key").exists(),
            "every voter keeps the CA key"
        );
    }
    let members = h1.store().members();
    assert_eq!(members.len(), 3);
    assert!(
        members
            .iter()
            .all(|m| m.voter && m.status == NodeStatus::Member),
        "{members:?}"
    );
    let mut hosts = vec![h1, h2, h3];

    // A write on a follower is forwarded, committed and visible everywhere.
    let leader = hosts.iter().position(|h| h.store().is_leader()).unwrap();
    let follower = (leader + 1) % 3;
    let rev = hosts[follower]
        .store()
        .put("vm", "web", json!({ "cpus": 2 }), Some(0))
        .await
        .unwrap();
    for h in &hosts {
        eventually("the write on every host", Duration::from_secs(5), || {
            (h.store().get("vm", "web") == Some((json!({ "cpus": 2 }), rev))).then_some(())
        })
        .await;
    }
    assert_eq!(
        hosts[follower]
            .store()
            .get_linearizable("vm", "web")
            .await
            .unwrap(),
        Some((json!({ "cpus": 2 }), rev))
    );
    // A compare-and-swap conflict through a follower is still typed.
    let err = hosts[follower]
        .store()
        .put("vm", "web", json!({}), Some(0))
        .await
        .unwrap_err();
    assert!(
        matches!(err, StoreError::Conflict { actual: Some(r), .. } if r == rev),
        "{err}"
    );
    assert_eq!(
        hosts[follower]
            .store()
            .delete("vm", "nope", None)
            .await
            .unwrap_err()
            .to_string(),
        "vm/nope does not exist"
    );

    // Acknowledged writes from every host.
    let mut acked = Vec::new();
    for i in 0..30u64 {
        let h = &hosts[i as usize % 3];
        let key = format!("obj-{i}");
        let rev = h.store().put("volume", &key, json!(i), None).await.unwrap();
        acked.push((key, i, rev));
    }

    // Shut the leader down: a new leader within a few seconds, nothing lost.
    let old = hosts.iter().position(|h| h.store().is_leader()).unwrap();
    let old_id = hosts[old].id();
    let down = Instant::now();
    let s = hosts[old].store.take().unwrap();
    s.shutdown().await.unwrap();
    let rest: Vec<usize> = (0..3).filter(|i| *i != old).collect();
    let new_leader = eventually("a new leader", Duration::from_secs(10), || {
        rest.iter().copied().find(|i| hosts[*i].store().is_leader())
    })
    .await;
    let failover = down.elapsed();
    eprintln!(
        "new leader {} elected {failover:?} after the leader stopped",
        hosts[new_leader].id()
    );
    assert!(failover < Duration::from_secs(5), "{failover:?}");
    for (key, i, rev) in &acked {
        assert_eq!(
            hosts[new_leader]
                .store()
                .get_linearizable("volume", key)
                .await
                .unwrap(),
            Some((json!(i), *rev)),
            "{key}"
        );
    }
    // The cluster goes on with two of three hosts, writes through the follower.
    let other = rest.into_iter().find(|i| *i != new_leader).unwrap();
    let during = hosts[other]
        .store()
        .put("vm", "during-outage", json!(true), None)
        .await
        .unwrap();

    // The old leader restarts and catches up.
    let h = &mut hosts[old];
    let store = ClusterStore::open_with_network(h.dir.path(), old_id, h.addr.clone(), net())
        .await
        .unwrap();
    store.serve(h.addr.parse().unwrap()).await.unwrap();
    h.store = Some(store);
    let back = Instant::now();
    eventually(
        "the old leader to catch up",
        Duration::from_secs(10),
        || {
            (hosts[old].store().get("vm", "during-outage") == Some((json!(true), during)))
                .then_some(())
        },
    )
    .await;
    eprintln!("old leader caught up in {:?}", back.elapsed());
    for (key, i, rev) in &acked {
        assert_eq!(
            hosts[old].store().get("volume", key),
            Some((json!(i), *rev))
        );
    }
    // And it takes writes again (forwarded to whoever leads).
    hosts[old]
        .store()
        .put("vm", "after", json!(1), None)
        .await
        .unwrap();
    eprintln!("whole test {:?}", t0.elapsed());
    shutdown(hosts).await;
}

fn refused(r: Result<ClusterStore, StoreError>) -> JoinRefused {
    match r {
        Err(StoreError::JoinRefused(e)) => e,
        Err(e) => panic!("expected a join refusal, got {e}"),
        Ok(s) => panic!("expected a join refusal, joined as node {}", s.node_id()),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn bad_reused_and_expired_tokens_and_the_member_limit() {
    init_logs();
    let h1 = founder(ClusterSettings { max_members: 2 }).await;
    let s1 = h1.store();
    let token = s1.issue_join_token(Duration::from_secs(60)).await.unwrap();
    let rev0 = s1.revision();
    let log0 = s1.metrics().last_log_index;

    // Malformed: refused before anything is sent.
    let (dir, _, r) = try_join(&h1, "nvjt1.garbage").await;
    assert!(matches!(refused(r), JoinRefused::InvalidToken { .. }));
    assert!(
        std::fs::read_dir(dir.path()).unwrap().next().is_none(),
        "nothing written"
    );

    // Unknown secret of the right cluster.
    let (head, _) = token.rsplit_once('.').unwrap();
    let forged = format!("{head}.{}", "0".repeat(64));
    let (dir, _, r) = try_join(&h1, &forged).await;
    let e = refused(r);
    assert!(matches!(e, JoinRefused::InvalidToken { .. }), "{e}");
    assert!(e.to_string().contains("unknown token"), "{e}");
    assert!(
        std::fs::read_dir(dir.path()).unwrap().next().is_none(),
        "nothing written"
    );

    // A token pinning another CA: the server is not trusted.
    let mut parts: Vec<String> = token.split('.').map(str::to_owned).collect();
    parts[2] = "ab".repeat(32);
    let (_, _, r) = try_join(&h1, &parts.join(".")).await;
    match r {
        Err(StoreError::Transport(e)) => assert!(e.to_string().contains("TLS"), "{e}"),
        other => panic!("expected a TLS failure, got {other:?}"),
    }

    // Expired.
    let short = s1.issue_join_token(Duration::from_secs(1)).await.unwrap();
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let (_, _, r) = try_join(&h1, &short).await;
    let e = refused(r);
    assert!(matches!(e, JoinRefused::TokenExpired { .. }), "{e}");

    // Nothing changed but the two tokens issued: the refused joins did not
    // even reach the log.
    assert_eq!(s1.revision(), rev0 + 1);
    assert_eq!(
        s1.metrics().last_log_index,
        log0.map(|i| i + 1),
        "one entry: the second token"
    );
    assert_eq!(s1.members().len(), 1);

    // The good token joins; a second use is refused.
    let (dir2, addr2, r) = try_join(&h1, &token).await;
    let h2 = Host {
        dir: dir2,
        addr: addr2,
        store: Some(r.expect("join")),
    };
    let (dir, _, r) = try_join(&h1, &token).await;
    let e = refused(r);
    assert_eq!(e, JoinRefused::TokenUsed { node_id: 2 });
    assert!(!dir.path().join("pki").exists());

    // The limit: a third host is refused, naming the limit; its token stays
    // usable once the limit is raised.
    let t3 = s1.issue_join_token(Duration::from_secs(60)).await.unwrap();
    let (dir, _, r) = try_join(&h2, &t3).await;
    let e = refused(r);
    assert_eq!(
        e,
        JoinRefused::MemberLimit {
            limit: 2,
            members: 2
        }
    );
    let msg = e.to_string();
    assert!(msg.contains("max_members = 2"), "{msg}");
    assert!(!dir.path().join("pki").exists());
    assert!(matches!(
        s1.set_max_members(1).await,
        Err(StoreError::Invalid {
            field: "max_members",
            ..
        })
    ));
    assert!(matches!(
        s1.set_max_members(8).await,
        Err(StoreError::Invalid {
            field: "max_members",
            ..
        })
    ));
    h2.store().set_max_members(3).await.unwrap();
    let (dir3, addr3, r) = try_join(&h1, &t3).await;
    let h3 = Host {
        dir: dir3,
        addr: addr3,
        store: Some(r.expect("join after raising the limit")),
    };
    assert_eq!(h3.id(), 3);
    shutdown(vec![h1, h2, h3]).await;
}

/// A rustls client for the cluster endpoint of node `target`, trusting the
/// cluster's CA, presenting `identity` (or no certificate).
fn raw_transport(trust: &Pki, identity: Option<&Pki>) -> PeerTransport {
    let mut roots = rustls::RootCertStore::empty();
    roots.add(trust.ca.cert_der().clone()).unwrap();
    let builder = nasvisor_tls::client_config_builder()
        .unwrap()
        .with_root_certificates(roots);
    let mut config = match identity {
        Some(p) => builder
            .with_client_auth_cert(p.node_chain().unwrap(), p.node_key().unwrap())
            .unwrap(),
        None => builder.with_no_client_auth(),
    };
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    PeerTransport::new(identity.map_or(0, |p| p.node_id), Arc::new(config))
}

async fn raw_ping(t: &PeerTransport, target: u64, addr: &str) -> Result<(), String> {
    let r: Result<Result<ForwardReply, ForwardError>, _> = t
        .call(
            target,
            addr,
            PATH_FORWARD,
            &Forward::Ping,
            Duration::from_secs(5),
        )
        .await;
    match r {
        Ok(Ok(_)) => Ok(()),
        Ok(Err(e)) => Err(e.to_string()),
        Err(e) => Err(e.to_string()),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn removed_hosts_and_foreign_clients_are_refused() {
    init_logs();
    let h1 = founder(ClusterSettings::default()).await;
    let h2 = join(&h1).await;
    let h3 = join(&h1).await;
    let pki1 = Pki::load(h1.dir.path()).unwrap().unwrap();
    let pki3 = Pki::load(h3.dir.path()).unwrap().unwrap();
    assert_eq!(node_name(3), "node-3.nasvisor.cluster");

    // Before: node 3 talks to everyone, with the store and with a raw client.
    h3.store().ping(1, &h1.addr).await.unwrap();
    raw_ping(&raw_transport(&pki1, Some(&pki3)), 1, &h1.addr)
        .await
        .unwrap();

    // No client certificate, or one of another cluster's CA: refused.
    let err = raw_ping(&raw_transport(&pki1, None), 1, &h1.addr)
        .await
        .unwrap_err();
    eprintln!("no client certificate: {err}");
    let foreign = Pki::create(9, "127.0.0.1:1").unwrap();
    let err = raw_ping(&raw_transport(&pki1, Some(&foreign)), 1, &h1.addr)
        .await
        .unwrap_err();
    eprintln!("foreign CA: {err}");
    // A foreign cluster's node id 2 does not help either.
    let foreign2 = Pki::create(2, "127.0.0.1:1").unwrap();
    assert!(
        raw_ping(&raw_transport(&pki1, Some(&foreign2)), 1, &h1.addr)
            .await
            .is_err()
    );

    // Remove node 3 from a follower (the leader carries it out).
    let follower = if h1.store().is_leader() { &h2 } else { &h1 };
    follower.store().remove_member(3).await.unwrap();
    let members = h1.store().members();
    let m3 = members.iter().find(|m| m.node_id == 3).unwrap();
    assert_eq!((m3.status, m3.voter), (NodeStatus::Removed, false));
    assert!(matches!(
        h1.store().remove_member(3).await,
        Err(StoreError::Remote { .. }) | Err(StoreError::Invalid { .. })
    ));

    // Every member now refuses node 3: its store, and a fresh TLS
    // connection with its (still CA-signed) certificate.
    for (id, addr) in [(1, &h1.addr), (2, &h2.addr)] {
        // Each member refuses node 3 once it has the new membership.
        let deadline = Instant::now() + Duration::from_secs(5);
        let err = loop {
            match h3.store().ping(id, addr).await {
                Err(e) => break e,
                Ok(()) => assert!(Instant::now() < deadline, "node {id} still accepts node 3"),
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        };
        eprintln!("removed node 3 -> node {id}: {err}");
        let err = raw_ping(&raw_transport(&pki1, Some(&pki3)), id, addr)
            .await
            .unwrap_err();
        eprintln!("removed node 3 (raw) -> node {id}: {err}");
    }
    // Its writes go nowhere; the remaining two hosts go on.
    assert!(h3.store().put("vm", "x", json!(1), None).await.is_err());
    h2.store().put("vm", "y", json!(1), None).await.unwrap();
    h1.store().ping(2, &h2.addr).await.unwrap();
    // The removed id is never reused.
    let h4 = join(&h2).await;
    assert_eq!(h4.id(), 4);
    shutdown(vec![h1, h2, h3, h4]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_single_host_store_is_no_cluster_until_created() {
    let dir = tempfile::tempdir().unwrap();
    let addr = free_addr();
    let store = ClusterStore::open_with_network(dir.path(), 1, addr.clone(), net())
        .await
        .unwrap();
    store.put("vm", "kept", json!(1), None).await.unwrap();
    assert!(store.cluster_info().is_none());
    assert!(matches!(
        store.issue_join_token(Duration::from_secs(60)).await,
        Err(StoreError::NotClustered)
    ));
    assert!(matches!(
        store.serve(addr.parse().unwrap()).await,
        Err(StoreError::NotClustered)
    ));
    assert!(!dir.path().join("pki").exists());
    // `cluster create` on the running host keeps its desired state.
    let info = store
        .create_cluster(ClusterSettings::default())
        .await
        .unwrap();
    assert!(matches!(
        store.create_cluster(ClusterSettings::default()).await,
        Err(StoreError::AlreadyClustered { .. })
    ));
    assert_eq!(store.get("vm", "kept").unwrap().0, json!(1));
    assert_eq!(
        store.kinds(),
        ["vm"],
        "the cluster's own records are hidden"
    );
    store.shutdown().await.unwrap();
    // Reopened as a member of its cluster, still leading itself.
    let store = ClusterStore::open_with_network(dir.path(), 1, addr.clone(), net())
        .await
        .unwrap();
    assert_eq!(store.cluster_info().unwrap(), info);
    assert!(store.is_leader());
    store.put("vm", "again", json!(2), None).await.unwrap();
    store.serve(addr.parse().unwrap()).await.unwrap();
    store.shutdown().await.unwrap();
    // A host holding desired state cannot join another cluster.
    let other = founder(ClusterSettings::default()).await;
    let token = other
        .store()
        .issue_join_token(Duration::from_secs(60))
        .await
        .unwrap();
    let r = ClusterStore::join(dir.path(), None, free_addr(), &other.addr, &token, net()).await;
    assert!(
        matches!(r, Err(StoreError::AlreadyClustered { .. })),
        "{r:?}"
    );
    let fresh = tempfile::tempdir().unwrap();
    {
        let s = ClusterStore::open(fresh.path(), 5, free_addr())
            .await
            .unwrap();
        s.put("vm", "mine", json!(1), None).await.unwrap();
        s.shutdown().await.unwrap();
    }
    let r = ClusterStore::join(fresh.path(), None, free_addr(), &other.addr, &token, net()).await;
    assert!(
        matches!(r, Err(StoreError::NotEmpty { objects: 1, .. })),
        "{r:?}"
    );
    shutdown(vec![other]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_host_joining_after_a_log_purge_gets_a_snapshot() {
    init_logs();
    let h1 = founder(ClusterSettings::default()).await;
    let s1 = h1.store();
    for i in 0..50u64 {
        s1.put("vm", &format!("vm-{i}"), json!({ "i": i }), None)
            .await
            .unwrap();
    }
    // Snapshot, then purge the whole log: a new host can only be brought up
    // to date with a snapshot (sent in chunks over the transport).
    let applied = s1.metrics().last_applied.unwrap();
    s1.raft().trigger().snapshot().await.unwrap();
    let m = s1
        .raft()
        .wait(Some(Duration::from_secs(10)))
        .metrics(
            |m| m.snapshot.is_some_and(|s| s.index >= applied.index),
            "snapshot built",
        )
        .await
        .unwrap_or_else(|e| panic!("{e}: {}", s1.metrics()));
    let snap = m.snapshot.unwrap();
    s1.raft().trigger().purge_log(snap.index).await.unwrap();
    s1.raft()
        .wait(Some(Duration::from_secs(10)))
        .purged(Some(snap), "log purged")
        .await
        .unwrap_or_else(|e| panic!("{e}: {}", s1.metrics()));

    let h2 = join(&h1).await;
    let s2 = h2.store();
    assert_eq!(s2.list("vm").len(), 50);
    assert_eq!(s2.get("vm", "vm-7"), s1.get("vm", "vm-7"));
    assert!(s2.metrics().snapshot.is_some(), "installed from a snapshot");
    // And it then follows the log as usual.
    let rev = s2.put("vm", "after", json!(1), None).await.unwrap();
    assert_eq!(s1.get("vm", "after"), Some((json!(1), rev)));
    shutdown(vec![h1, h2]).await;
}

/// A certificate for member `node_id`, freshly signed with the real CA key
/// read from `member_dir` (a stolen disk, or a removed host that kept it),
/// with a key of its own.
fn mint(member_dir: &std::path::Path, node_id: u64, addr: &str) -> Pki {
    let pki = Pki::load(member_dir).unwrap().unwrap();
    let ca_key = std::fs::read_to_string(member_dir.join("pki/ca.key")).unwrap();
    let ca = ClusterCa::from_pem(pki.ca.cert_pem(), Some(&ca_key)).unwrap();
    let (node_key_pem, csr) = new_node_key().unwrap();
    let node_cert_pem = ca.issue(node_id, addr, &csr).unwrap();
    Pki {
        cluster_id: pki.cluster_id,
        node_id,
        ca,
        node_cert_pem,
        node_key_pem,
    }
}

/// POSTs `body` to `path` on node `target` with a raw client presenting
/// `identity`; the answer's body, or why the call failed.
async fn raw_post(
    trust: &Pki,
    identity: &Pki,
    target: u64,
    addr: &str,
    path: &str,
    body: &serde_json::Value,
) -> Result<serde_json::Value, String> {
    raw_transport(trust, Some(identity))
        .call(target, addr, path, body, Duration::from_secs(5))
        .await
        .map_err(|e| e.to_string())
}

/// A server that claims to be node `identity.node_id` and answers every
/// request `{"Ok": "done"}`: what a host holding the CA key could put at a
/// member's address.
async fn impostor_server(identity: &Pki) -> (String, tokio::task::JoinHandle<()>) {
    let config = nasvisor_tls::server_config_builder()
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(identity.node_chain().unwrap(), identity.node_key().unwrap())
        .unwrap();
    let mut config = config;
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    let task = tokio::spawn(async move {
        while let Ok((tcp, _)) = listener.accept().await {
            let acceptor = acceptor.clone();
            tokio::spawn(async move {
                let Ok(tls) = acceptor.accept(tcp).await else {
                    return;
                };
                let svc = hyper::service::service_fn(|_req| async {
                    Ok::<_, std::convert::Infallible>(hyper::Response::new(
                        http_body_util::Full::new(bytes::Bytes::from_static(b"{\"Ok\":\"done\"}")),
                    ))
                });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(hyper_util::rt::TokioIo::new(tls), svc)
                    .await;
            });
        }
    });
    (addr, task)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_certificate_minted_with_the_real_ca_key_for_a_member_is_refused() {
    init_logs();
    let h1 = founder(ClusterSettings::default()).await;
    let h2 = join(&h1).await;
    let h3 = join(&h1).await;
    let pki1 = Pki::load(h1.dir.path()).unwrap().unwrap();
    let pki2 = Pki::load(h2.dir.path()).unwrap().unwrap();
    // Every member's key is recorded, on every member.
    for h in [&h1, &h2, &h3] {
        let keys: Vec<_> = h.store().members().into_iter().map(|m| m.key).collect();
        assert!(keys.iter().all(Option::is_some), "{keys:?}");
    }
    let recorded = h1.store().members()[1].key.clone().unwrap();
    assert_eq!(recorded, pki2.node_key_pin().unwrap());

    // Node 2's name, signed by the real CA key taken from node 3's disk,
    // with another key.
    let forged = mint(h3.dir.path(), 2, &h2.addr);
    let vote = json!({ "vote": { "leader_id": { "term": 0, "node_id": 2 }, "committed": false },
                       "last_log_id": null });
    let peer_call = json!({ "method": "read", "body": {} });
    // The real node 2 is served on the raft and peer routes...
    raw_post(&pki1, &pki2, 1, &h1.addr, "/v1/raft/vote", &vote)
        .await
        .expect("the real node 2 votes");
    raw_post(&pki1, &pki2, 1, &h1.addr, "/v1/peer", &peer_call)
        .await
        .expect("the real node 2 calls its peers");
    // ...the forged one nowhere: raft RPC, peer call, forwarded write.
    for (path, body) in [
        ("/v1/raft/vote", &vote),
        ("/v1/peer", &peer_call),
        (
            "/v1/cluster/forward",
            &json!({ "write": { "op": "put", "kind": "vm", "key": "x", "value": 1,
                                "expected_revision": null } }),
        ),
    ] {
        for (id, addr) in [(1, &h1.addr), (3, &h3.addr)] {
            let err = raw_post(&pki1, &forged, id, addr, path, body)
                .await
                .expect_err("a minted certificate must be refused");
            eprintln!("minted node 2 -> node {id} {path}: {err}");
        }
    }
    assert!(h1.store().get("vm", "x").is_none(), "nothing was written");

    // A member dialling node 1 at an address where an impostor presents a
    // minted node-1 certificate refuses it; at node 1's real address it
    // works.
    let impostor = mint(h2.dir.path(), 1, &h1.addr);
    let (fake_addr, fake) = impostor_server(&impostor).await;
    let err = h2
        .store()
        .ping(1, &fake_addr)
        .await
        .expect_err("an impostor of node 1 must be refused");
    assert!(err.to_string().contains("key"), "{err}");
    fake.abort();
    h2.store().ping(1, &h1.addr).await.unwrap();
    h3.store().ping(2, &h2.addr).await.unwrap();

    // A removed host is refused, with its own certificate and with a fresh
    // one for its id. (The leader cannot be removed: take the other one.)
    let (victim, other) = if h2.store().is_leader() {
        (&h3, &h2)
    } else {
        (&h2, &h3)
    };
    let victim_id = victim.id();
    let victim_pki = Pki::load(victim.dir.path()).unwrap().unwrap();
    h1.store().remove_member(victim_id).await.unwrap();
    let fresh = mint(other.dir.path(), victim_id, &victim.addr);
    for pki in [&victim_pki, &fresh] {
        let deadline = Instant::now() + Duration::from_secs(5);
        let err = loop {
            match raw_post(&pki1, pki, 1, &h1.addr, "/v1/peer", &peer_call).await {
                Err(e) => break e,
                Ok(_) => assert!(
                    Instant::now() < deadline,
                    "node 1 still accepts node {victim_id}"
                ),
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        };
        eprintln!("removed node {victim_id} -> node 1: {err}");
    }
    // The remaining members still work.
    other
        .store()
        .put("vm", "after", json!(1), None)
        .await
        .unwrap();
    h1.store().ping(other.id(), &other.addr).await.unwrap();
    shutdown(vec![h1, h2, h3]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn members_cannot_rewrite_the_membership_records_through_the_leader() {
    init_logs();
    let h1 = founder(ClusterSettings::default()).await;
    let h2 = join(&h1).await;
    let pki1 = Pki::load(h1.dir.path()).unwrap().unwrap();
    let pki2 = Pki::load(h2.dir.path()).unwrap().unwrap();
    // Node 2 tries to re-pin node 1 to a key of its choice, and to admit a
    // host of its own without a token.
    let attempts = [
        json!({ "write": { "op": "put", "kind": "@node", "key": "1",
                           "value": { "addr": h1.addr, "status": "member", "key": "00" },
                           "expected_revision": null } }),
        json!({ "write": { "op": "admit", "token_hash": "x", "now_ms": 0, "node_id": 9,
                           "addr": "127.0.0.1:1", "key": "00" } }),
        json!({ "write": { "op": "delete", "kind": "@node", "key": "1",
                           "expected_revision": null } }),
    ];
    for a in &attempts {
        let answer = raw_post(&pki1, &pki2, 1, &h1.addr, "/v1/cluster/forward", a)
            .await
            .unwrap();
        let err = answer["Err"]["failed"].as_str().unwrap_or_default();
        assert!(err.contains("may not write the membership"), "{answer}");
    }
    assert_eq!(
        h1.store().members()[0].key,
        Some(pki1.node_key_pin().unwrap())
    );
    assert_eq!(h1.store().members().len(), 2);
    // Ordinary forwarded writes still work.
    h2.store().put("vm", "y", json!(1), None).await.unwrap();
    shutdown(vec![h1, h2]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_leader_records_the_keys_of_hosts_that_joined_before_keys_were_recorded() {
    init_logs();
    let h1 = founder(ClusterSettings::default()).await;
    let h2 = join(&h1).await;
    let mut hosts = vec![h1, h2];
    let pki1 = Pki::load(hosts[0].dir.path()).unwrap().unwrap();
    let pki2 = Pki::load(hosts[1].dir.path()).unwrap().unwrap();
    // Make both records look like an older release's: no key.
    for (id, h) in [(1u64, 0usize), (2, 1)] {
        let leader = hosts.iter().find(|h| h.store().is_leader()).unwrap();
        let value = json!({ "addr": hosts[h].addr, "status": "member" });
        leader
            .store()
            .raft()
            .client_write(nasvisor_cluster::Command::Put {
                kind: "@node".into(),
                key: id.to_string(),
                value,
                expected_revision: None,
            })
            .await
            .unwrap();
    }
    eventually("the keys gone on node 2", Duration::from_secs(5), || {
        hosts[1]
            .store()
            .members()
            .iter()
            .all(|m| m.key.is_none())
            .then_some(())
    })
    .await;
    // Unpinned, a minted certificate passes on its name alone (the upgrade
    // window the docs describe)...
    let forged = mint(hosts[0].dir.path(), 2, &hosts[1].addr);
    let ping = json!("ping");
    raw_post(
        &pki1,
        &forged,
        1,
        &hosts[0].addr,
        "/v1/cluster/forward",
        &ping,
    )
    .await
    .expect("an unpinned member is admitted by name");
    // ...until the leader dials node 2 again (here: node 2 restarts) and
    // records the key node 2 presents, and its own.
    let h = &mut hosts[1];
    let store = h.store.take().unwrap();
    store.shutdown().await.unwrap();
    let store = ClusterStore::open_with_network(h.dir.path(), 2, h.addr.clone(), net())
        .await
        .unwrap();
    store.serve(h.addr.parse().unwrap()).await.unwrap();
    h.store = Some(store);
    for h in &hosts {
        eventually("both keys recorded", Duration::from_secs(10), || {
            let keys: Vec<_> = h.store().members().into_iter().map(|m| m.key).collect();
            let want = [
                Some(pki1.node_key_pin().unwrap()),
                Some(pki2.node_key_pin().unwrap()),
            ];
            (keys == want).then_some(())
        })
        .await;
    }
    let err = raw_post(
        &pki1,
        &forged,
        1,
        &hosts[0].addr,
        "/v1/cluster/forward",
        &ping,
    )
    .await
    .expect_err("pinned now");
    eprintln!("after the key was recorded: {err}");
    hosts[1]
        .store()
        .put("vm", "z", json!(1), None)
        .await
        .unwrap();
    shutdown(hosts).await;
}

/// A TLS connection to the cluster endpoint at `addr` from the local
/// address `source`, as a joining host makes it (no client certificate):
/// what anyone on the network can open.
async fn stranger(
    ca_fingerprint: &str,
    addr: &str,
    source: &str,
) -> std::io::Result<tokio_rustls::client::TlsStream<tokio::net::TcpStream>> {
    let socket = tokio::net::TcpSocket::new_v4()?;
    socket.bind(format!("{source}:0").parse().unwrap())?;
    let tcp = socket.connect(addr.parse().unwrap()).await?;
    let config = nasvisor_cluster_net::tls::join_client_config(ca_fingerprint).unwrap();
    tokio_rustls::TlsConnector::from(config)
        .connect(nasvisor_cluster_net::tls::join_server_name(), tcp)
        .await
}

/// Sends `at_once` into `tls`, then trickles `data` (then `a`s) a byte
/// every 100 ms; returns how long after `at_once` the server closed the
/// connection, and what it answered.
async fn trickle(
    mut tls: tokio_rustls::client::TlsStream<tokio::net::TcpStream>,
    at_once: Vec<u8>,
    data: Vec<u8>,
) -> (Duration, String) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    tls.write_all(&at_once).await.unwrap();
    let t0 = Instant::now();
    let mut answer = String::new();
    let mut buf = [0u8; 1024];
    for i in 0.. {
        let byte = data.get(i).copied().unwrap_or(b'a');
        if tls.write_all(&[byte]).await.is_err() || tls.flush().await.is_err() {
            return (t0.elapsed(), answer);
        }
        match tokio::time::timeout(Duration::from_millis(100), tls.read(&mut buf)).await {
            Ok(Ok(0)) | Ok(Err(_)) => return (t0.elapsed(), answer),
            Ok(Ok(n)) => answer.push_str(&String::from_utf8_lossy(&buf[..n])),
            Err(_) => {}
        }
        assert!(t0.elapsed() < Duration::from_secs(30), "never closed");
    }
    unreachable!()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn strangers_filling_the_cluster_endpoint_cannot_cut_the_members_off() {
    init_logs();
    let limits = nasvisor_cluster::ServerLimits {
        max_connections: 6,
        max_connections_per_address: 2,
        header_timeout: Duration::from_millis(1500),
        idle_timeout: Duration::from_millis(1000),
        body_timeout: Duration::from_millis(800),
        ..nasvisor_cluster::ServerLimits::default()
    };
    let dir = tempfile::tempdir().unwrap();
    let addr = free_addr();
    let store = ClusterStore::create(
        dir.path(),
        1,
        addr.clone(),
        ClusterSettings::default(),
        net(),
    )
    .await
    .unwrap();
    store.set_server_limits(limits.clone()).unwrap();
    store.serve(addr.parse().unwrap()).await.unwrap();
    let h1 = Host {
        dir,
        addr,
        store: Some(store),
    };
    let token = h1
        .store()
        .issue_join_token(Duration::from_secs(60))
        .await
        .unwrap();
    let dir2 = tempfile::tempdir().unwrap();
    let addr2 = free_addr();
    let s2 = ClusterStore::join_with_limits(
        dir2.path(),
        None,
        addr2.clone(),
        &h1.addr,
        &token,
        limits,
        net(),
    )
    .await
    .unwrap();
    let h2 = Host {
        dir: dir2,
        addr: addr2,
        store: Some(s2),
    };
    let fp = h1.store().cluster_info().unwrap().ca_fingerprint;
    let head = b"POST /v1/cluster/join HTTP/1.1\r\nHost: join.nasvisor.cluster\r\n".to_vec();

    // Strangers from 127.0.0.2-5 take every slot of node 1's endpoint
    // (2 per address, 6 in all) and trickle request heads into them.
    let mut held = Vec::new();
    let mut refused = 0;
    for source in [
        "127.0.0.2",
        "127.0.0.2",
        "127.0.0.2",
        "127.0.0.3",
        "127.0.0.3",
        "127.0.0.4",
        "127.0.0.4",
        "127.0.0.5",
    ] {
        match stranger(&fp, &h1.addr, source).await {
            Ok(tls) => held.push(tokio::spawn(trickle(tls, Vec::new(), head.clone()))),
            Err(e) => {
                eprintln!("{source}: {e}");
                refused += 1;
            }
        }
    }
    assert_eq!((held.len(), refused), (6, 2));

    // The members are not counted: node 2 opens new connections to node 1
    // and the cluster commits.
    let pki2 = Pki::load(h2.dir.path()).unwrap().unwrap();
    let pki1 = Pki::load(h1.dir.path()).unwrap().unwrap();
    for _ in 0..3 {
        raw_ping(&raw_transport(&pki1, Some(&pki2)), 1, &h1.addr)
            .await
            .expect("a member connects while strangers hold every slot");
    }
    h2.store()
        .put("vm", "during", json!(1), None)
        .await
        .unwrap();
    assert!(
        held.iter().all(|h| !h.is_finished()),
        "all strangers still held"
    );

    // The trickling strangers are closed by the header timeout.
    for h in held {
        let (after, _) = h.await.unwrap();
        eprintln!("stranger closed after {after:?}");
        assert!(after >= Duration::from_millis(1400), "{after:?}");
        assert!(after < Duration::from_secs(5), "{after:?}");
    }

    // A join body (its sender is not authenticated) trickled in a byte at
    // a time is refused after the body timeout, although bytes keep
    // arriving.
    let tls = stranger(&fp, &h1.addr, "127.0.0.2").await.unwrap();
    let mut request = head.clone();
    request.extend_from_slice(b"Content-Type: application/json\r\nContent-Length: 5000\r\n\r\n");
    let (after, answer) = tokio::spawn(trickle(tls, request, b"{\"cluster_id\": ".to_vec()))
        .await
        .unwrap();
    eprintln!("trickled join body closed after {after:?}: {answer}");
    assert!(answer.starts_with("HTTP/1.1 408"), "{answer}");
    assert!(answer.contains("body-timeout-ms"), "{answer}");
    assert!(
        after >= Duration::from_millis(700) && after < Duration::from_secs(5),
        "{after:?}"
    );
    h1.store().put("vm", "after", json!(1), None).await.unwrap();
    shutdown(vec![h1, h2]).await;
}

/// A change the leader proposes while its majority is gone answers
/// "unconfirmed, outcome unknown" (not a plain timeout), and it does get
/// applied once the majority is back: the answer must not tell the caller
/// that nothing happened.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_change_the_majority_did_not_confirm_is_reported_unknown_and_may_apply_later() {
    init_logs();
    let h1 = founder(ClusterSettings::default()).await;
    let h2 = join(&h1).await;
    let mut hosts = vec![h1, h2];
    let leader = eventually("a leader", Duration::from_secs(10), || {
        hosts.iter().position(|h| h.store().is_leader())
    })
    .await;
    let other = 1 - leader;
    let other_id = hosts[other].id();
    // The follower goes away: the leader has no majority (1 of 2).
    hosts[other].store.take().unwrap().shutdown().await.unwrap();

    let started = Instant::now();
    let err = hosts[leader]
        .store()
        .put("vm", "late", json!({ "cpus": 1 }), Some(0))
        .await
        .unwrap_err();
    assert!(matches!(err, StoreError::Unconfirmed(_)), "{err:?}");
    let text = err.to_string();
    assert!(
        text.contains("outcome is unknown") && text.contains("may still be applied"),
        "{text}"
    );
    assert!(
        started.elapsed() < Duration::from_secs(15),
        "{:?}",
        started.elapsed()
    );

    // The follower comes back: the change commits after all.
    let h = &mut hosts[other];
    let store = ClusterStore::open_with_network(h.dir.path(), other_id, h.addr.clone(), net())
        .await
        .unwrap();
    store.serve(h.addr.parse().unwrap()).await.unwrap();
    h.store = Some(store);
    for h in &hosts {
        eventually(
            "the unconfirmed change applied after the heal",
            Duration::from_secs(20),
            || h.store().get("vm", "late").map(|_| ()),
        )
        .await;
    }
    shutdown(hosts).await;
}
