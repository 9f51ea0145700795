//! A single host is a cluster of one: the store end to end on one node.

use std::sync::Arc;
use std::time::Duration;

use nasvisor_cluster::db::WriteWatch;
use nasvisor_cluster::state_machine::StateMachineStore;
use nasvisor_cluster::store::DB_FILE;
use nasvisor_cluster::{ClusterStore, StoreError};
use openraft::storage::{RaftSnapshotBuilder, RaftStateMachine};
use serde_json::json;

const ADDR: &str = "127.0.0.1:7443";

async fn open(dir: &std::path::Path) -> ClusterStore {
    ClusterStore::open(dir, 1, ADDR).await.expect("open")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn initialize_write_100_read_back() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path()).await;
    assert!(store.is_leader());
    let m = store.metrics();
    assert_eq!(m.current_leader, Some(1));
    assert_eq!(
        m.membership_config
            .membership()
            .voter_ids()
            .collect::<Vec<_>>(),
        [1]
    );

    for i in 0..100u64 {
        let rev = store
            .put("vm", &format!("vm-{i:03}"), json!({ "i": i }), None)
            .await
            .unwrap();
        assert_eq!(rev, i + 1);
    }
    for i in 0..100u64 {
        let (v, rev) = store.get("vm", &format!("vm-{i:03}")).unwrap();
        assert_eq!(v, json!({ "i": i }));
        assert_eq!(rev, i + 1);
    }
    let list = store.list("vm");
    assert_eq!(list.len(), 100);
    assert_eq!(list[0].0, "vm-000");
    assert_eq!(list[99].0, "vm-099");
    assert!(store.list("volume").is_empty());
    assert_eq!(store.revision(), 100);
    assert_eq!(
        store.get_linearizable("vm", "vm-042").await.unwrap(),
        Some((json!({ "i": 42 }), 43))
    );

    // Delete, then the object is gone and the revision moved on.
    assert_eq!(store.delete("vm", "vm-000", Some(1)).await.unwrap(), 101);
    assert_eq!(store.get("vm", "vm-000"), None);
    match store.delete("vm", "vm-000", None).await {
        Err(StoreError::NotFound { kind, key }) => {
            assert_eq!((kind.as_str(), key.as_str()), ("vm", "vm-000"))
        }
        other => panic!("expected NotFound, got {other:?}"),
    }
    assert_eq!(store.revision(), 101);
    store.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn compare_and_swap_conflict_is_typed_and_changes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path()).await;
    let r1 = store
        .put("volume", "disk0", json!({ "size": 1 }), Some(0))
        .await
        .unwrap();
    let r2 = store
        .put("volume", "disk0", json!({ "size": 2 }), Some(r1))
        .await
        .unwrap();
    assert!(r2 > r1);

    // Create-only on an existing object.
    match store
        .put("volume", "disk0", json!({ "size": 3 }), Some(0))
        .await
    {
        Err(StoreError::Conflict {
            kind,
            key,
            expected,
            actual,
        }) => {
            assert_eq!((kind.as_str(), key.as_str()), ("volume", "disk0"));
            assert_eq!(expected, Some(0));
            assert_eq!(actual, Some(r2));
        }
        other => panic!("expected Conflict, got {other:?}"),
    }
    // Stale revision.
    let err = store
        .put("volume", "disk0", json!({ "size": 3 }), Some(r1))
        .await
        .unwrap_err();
    assert!(
        matches!(err, StoreError::Conflict { actual: Some(a), .. } if a == r2),
        "{err}"
    );
    assert!(err.to_string().contains("volume/disk0"), "{err}");
    // Delete with a stale revision, and a put expecting a missing object.
    let err = store.delete("volume", "disk0", Some(r1)).await.unwrap_err();
    assert!(matches!(err, StoreError::Conflict { .. }), "{err}");
    let err = store
        .put("volume", "nope", json!(1), Some(5))
        .await
        .unwrap_err();
    assert!(
        matches!(err, StoreError::Conflict { actual: None, .. }),
        "{err}"
    );

    // Nothing changed, the cluster revision included.
    assert_eq!(
        store.get("volume", "disk0"),
        Some((json!({ "size": 2 }), r2))
    );
    assert_eq!(store.get("volume", "nope"), None);
    assert_eq!(store.revision(), r2);

    // Bad input names the field and changes nothing.
    for (kind, key, field) in [
        ("", "k", "kind"),
        ("VM", "k", "kind"),
        ("vm", "", "key"),
        ("vm", "a\nb", "key"),
    ] {
        match store.put(kind, key, json!(1), None).await {
            Err(StoreError::Invalid { field: f, .. }) => assert_eq!(f, field),
            other => panic!("expected Invalid {field}, got {other:?}"),
        }
    }
    assert_eq!(store.revision(), r2);
    store.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn restart_keeps_everything_and_accepts_writes() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path()).await;
    for i in 0..20u64 {
        store
            .put("vswitch", &format!("sw{i}"), json!(i), None)
            .await
            .unwrap();
    }
    store.delete("vswitch", "sw3", None).await.unwrap();
    let before: Vec<_> = store.list("vswitch");
    let applied_before = store.metrics().last_applied;
    store.shutdown().await.unwrap();

    for round in 0..2u64 {
        let store = open(dir.path()).await;
        assert!(store.is_leader());
        let m = store.metrics();
        assert!(
            m.last_applied >= applied_before,
            "{:?} < {applied_before:?}",
            m.last_applied
        );
        if round == 0 {
            assert_eq!(store.list("vswitch"), before);
            assert_eq!(store.revision(), 21);
            let rev = store
                .put("vswitch", "sw-new", json!("x"), Some(0))
                .await
                .unwrap();
            assert_eq!(rev, 22);
        } else {
            assert_eq!(store.list("vswitch").len(), before.len() + 1);
            assert_eq!(store.get("vswitch", "sw-new"), Some((json!("x"), 22)));
            assert_eq!(store.revision(), 22);
        }
        store.shutdown().await.unwrap();
    }

    // The directory belongs to node 1.
    let err = ClusterStore::open(dir.path(), 2, ADDR).await.unwrap_err();
    assert!(
        matches!(
            err,
            StoreError::NodeIdMismatch {
                stored: 1,
                given: 2,
                ..
            }
        ),
        "{err}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_open_of_the_same_dir_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path()).await;
    let err = ClusterStore::open(dir.path(), 1, ADDR).await.unwrap_err();
    assert!(matches!(err, StoreError::Open { .. }), "{err}");
    store.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn corrupted_or_torn_file_is_a_clear_error() {
    // Garbage where the database should be.
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join(DB_FILE), vec![0xA5u8; 64 * 1024]).unwrap();
    let err = ClusterStore::open(dir.path(), 1, ADDR).await.unwrap_err();
    assert!(
        matches!(err, StoreError::Open { .. } | StoreError::Corrupt { .. }),
        "{err}"
    );
    assert!(err.to_string().contains(DB_FILE), "{err}");

    // A real store, torn: its header overwritten.
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path()).await;
    store.put("vm", "a", json!(1), None).await.unwrap();
    store.shutdown().await.unwrap();
    let path = dir.path().join(DB_FILE);
    let mut bytes = std::fs::read(&path).unwrap();
    for b in bytes.iter_mut().take(4096) {
        *b = 0;
    }
    std::fs::write(&path, &bytes).unwrap();
    let err = ClusterStore::open(dir.path(), 1, ADDR).await.unwrap_err();
    assert!(
        matches!(err, StoreError::Open { .. } | StoreError::Corrupt { .. }),
        "{err}"
    );

    // A real store, truncated to a few bytes.
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path()).await;
    store.put("vm", "a", json!(1), None).await.unwrap();
    store.shutdown().await.unwrap();
    let path = dir.path().join(DB_FILE);
    let f = std::fs::OpenOptions::new().write(true).open(&path).unwrap();
    f.set_len(100).unwrap();
    drop(f);
    let err = ClusterStore::open(dir.path(), 1, ADDR).await.unwrap_err();
    assert!(
        matches!(err, StoreError::Open { .. } | StoreError::Corrupt { .. }),
        "{err}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_writers_get_unique_increasing_revisions() {
    const TASKS: u64 = 8;
    const PER_TASK: u64 = 25;
    let dir = tempfile::tempdir().unwrap();
    let store = Arc::new(open(dir.path()).await);
    let mut handles = Vec::new();
    for t in 0..TASKS {
        let store = store.clone();
        handles.push(tokio::spawn(async move {
            let mut revs = Vec::new();
            for i in 0..PER_TASK {
                let rev = store
                    .put(
                        "job",
                        &format!("t{t}-{i}"),
                        json!({ "t": t, "i": i }),
                        Some(0),
                    )
                    .await
                    .unwrap();
                revs.push(rev);
            }
            revs
        }));
    }
    let mut all = Vec::new();
    for h in handles {
        let revs = h.await.unwrap();
        assert!(
            revs.windows(2).all(|w| w[0] < w[1]),
            "not increasing: {revs:?}"
        );
        all.extend(revs);
    }
    all.sort_unstable();
    assert_eq!(all, (1..=TASKS * PER_TASK).collect::<Vec<_>>());
    assert_eq!(store.list("job").len() as u64, TASKS * PER_TASK);
    assert_eq!(store.revision(), TASKS * PER_TASK);
    Arc::into_inner(store).unwrap().shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn snapshot_purge_and_restart() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path()).await;
    for i in 0..50u64 {
        store
            .put("image", &format!("img{i}"), json!(i), None)
            .await
            .unwrap();
    }
    let applied = store.metrics().last_applied.unwrap();
    store.raft().trigger().snapshot().await.unwrap();
    let m = store
        .raft()
        .wait(Some(Duration::from_secs(10)))
        .metrics(
            |m| m.snapshot.is_some_and(|s| s.index >= applied.index),
            "snapshot built",
        )
        .await
        .unwrap();
    // Every write was acknowledged, so the snapshot holds all of them.
    let applied = m.snapshot.unwrap();
    store
        .raft()
        .trigger()
        .purge_log(applied.index)
        .await
        .unwrap();
    store
        .raft()
        .wait(Some(Duration::from_secs(10)))
        .purged(Some(applied), "log purged")
        .await
        .unwrap();
    assert_eq!(store.stored_log_entries().unwrap(), 0);
    let snap = store.raft().get_snapshot().await.unwrap().unwrap();
    assert_eq!(snap.meta.last_log_id, Some(applied));
    store.shutdown().await.unwrap();

    let store = open(dir.path()).await;
    let m = store.metrics();
    assert_eq!(m.purged, Some(applied));
    assert_eq!(m.snapshot, Some(applied));
    assert_eq!(store.list("image").len(), 50);
    assert_eq!(store.get("image", "img7"), Some((json!(7), 8)));
    assert_eq!(
        store
            .put("image", "img50", json!(50), Some(0))
            .await
            .unwrap(),
        51
    );
    store.shutdown().await.unwrap();

    // The snapshot alone rebuilds the same state in an empty state machine
    // (what a new host joining the cluster will do).
    let db = redb::Database::create(dir.path().join(DB_FILE)).unwrap();
    let mut sm = StateMachineStore::new(Arc::new(db), WriteWatch::default()).unwrap();
    let snap = sm.get_current_snapshot().await.unwrap().unwrap();
    let built = sm
        .get_snapshot_builder()
        .await
        .build_snapshot()
        .await
        .unwrap();
    let expected = sm.read().state.clone();
    assert_eq!(built.meta.last_log_id, store_last_applied(&sm));

    let other = tempfile::tempdir().unwrap();
    let db2 = redb::Database::create(other.path().join("fresh.redb")).unwrap();
    let mut fresh = StateMachineStore::new(Arc::new(db2), WriteWatch::default()).unwrap();
    fresh
        .install_snapshot(&built.meta, built.snapshot)
        .await
        .unwrap();
    assert_eq!(fresh.read().state, expected);
    assert_eq!(fresh.read().state.revision, 51);
    let (last, membership) = fresh.applied_state().await.unwrap();
    assert_eq!(last, built.meta.last_log_id);
    assert_eq!(membership.voter_ids().collect::<Vec<_>>(), [1]);
    // The older snapshot (taken at `applied`) still installs: 50 images.
    let mut older = StateMachineStore::new(
        Arc::new(redb::Database::create(other.path().join("older.redb")).unwrap()),
        WriteWatch::default(),
    )
    .unwrap();
    older
        .install_snapshot(&snap.meta, snap.snapshot)
        .await
        .unwrap();
    assert_eq!(older.read().state.len(), 50);
    assert_eq!(older.read().state.revision, 50);
}

fn store_last_applied(sm: &StateMachineStore) -> Option<nasvisor_cluster::types::LogId> {
    sm.read().last_applied
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_state_machine_behind_the_log_is_replayed_from_the_log() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path()).await;
    for i in 0..10u64 {
        store
            .put("net", &format!("n{i}"), json!(i), None)
            .await
            .unwrap();
    }
    store.delete("net", "n4", None).await.unwrap();
    let before = store.list("net");
    store.shutdown().await.unwrap();

    // Simulate a crash between the log fsync and the state machine commit,
    // the worst case: the state machine lost everything, the log did not.
    {
        let db = redb::Database::create(dir.path().join(DB_FILE)).unwrap();
        let txn = db.begin_write().unwrap();
        let objects = redb::TableDefinition::<(&str, &str), &[u8]>::new("sm_objects");
        let meta = redb::TableDefinition::<&str, &[u8]>::new("sm_meta");
        assert!(txn.delete_table(objects).unwrap());
        assert!(txn.delete_table(meta).unwrap());
        txn.commit().unwrap();
    }

    let store = open(dir.path()).await;
    // `open` returns once leader; the committed entries are re-applied by then
    // or shortly after (a linearizable read waits for them).
    store.get_linearizable("net", "n0").await.unwrap();
    assert_eq!(store.list("net"), before);
    assert_eq!(store.revision(), 11);
    assert_eq!(
        store.put("net", "n10", json!(10), Some(0)).await.unwrap(),
        12
    );
    store.shutdown().await.unwrap();

    let store = open(dir.path()).await;
    assert_eq!(store.revision(), 12);
    assert_eq!(store.list("net").len(), before.len() + 1);
    store.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lost_state_is_rebuilt_from_snapshot_plus_log_tail() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path()).await;
    for i in 0..30u64 {
        store
            .put("ha", &format!("h{i}"), json!(i), None)
            .await
            .unwrap();
    }
    let applied = store.metrics().last_applied.unwrap();
    store.raft().trigger().snapshot().await.unwrap();
    let m = store
        .raft()
        .wait(Some(Duration::from_secs(10)))
        .metrics(
            |m| m.snapshot.is_some_and(|s| s.index >= applied.index),
            "snapshot built",
        )
        .await
        .unwrap();
    let snap = m.snapshot.unwrap();
    store.raft().trigger().purge_log(snap.index).await.unwrap();
    store
        .raft()
        .wait(Some(Duration::from_secs(10)))
        .purged(Some(snap), "log purged")
        .await
        .unwrap();
    // A tail of entries after the snapshot.
    for i in 30..40u64 {
        store
            .put("ha", &format!("h{i}"), json!(i), None)
            .await
            .unwrap();
    }
    store.delete("ha", "h0", None).await.unwrap();
    let before = store.list("ha");
    assert_eq!(store.stored_log_entries().unwrap(), 11);
    store.shutdown().await.unwrap();

    // Lose the state machine tables: only the snapshot and the log tail remain.
    {
        let db = redb::Database::create(dir.path().join(DB_FILE)).unwrap();
        let txn = db.begin_write().unwrap();
        let objects = redb::TableDefinition::<(&str, &str), &[u8]>::new("sm_objects");
        let meta = redb::TableDefinition::<&str, &[u8]>::new("sm_meta");
        assert!(txn.delete_table(objects).unwrap());
        assert!(txn.delete_table(meta).unwrap());
        txn.commit().unwrap();
    }

    let store = open(dir.path()).await;
    store.get_linearizable("ha", "h1").await.unwrap();
    assert_eq!(store.list("ha"), before);
    assert_eq!(store.revision(), 41);
    assert_eq!(store.metrics().purged, Some(snap));
    assert_eq!(
        store.put("ha", "h40", json!(40), Some(0)).await.unwrap(),
        42
    );
    store.shutdown().await.unwrap();
}

#[tokio::test]
async fn a_member_store_opened_without_a_network_is_refused_and_left_untouched() {
    let dir = tempfile::tempdir().unwrap();
    nasvisor_cluster::Identity {
        cluster_id: "0123456789abcdef".into(),
        node_id: 1,
        ca_cert_pem: "ca".into(),
        ca_key_pem: None,
        node_cert_pem: "cert".into(),
        node_key_pem: "key".into(),
    }
    .save(dir.path())
    .unwrap();
    let err = ClusterStore::open(dir.path(), 1, ADDR).await.unwrap_err();
    assert!(matches!(err, StoreError::NoNetwork(_)), "{err}");
    assert!(
        err.to_string().contains("without a cluster network"),
        "{err}"
    );
    assert!(
        !dir.path().join(DB_FILE).exists(),
        "no database was created"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_leaders_decision_is_made_only_in_the_term_it_leads() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path()).await;
    let term = store.leader_term().expect("a sole voter leads");
    assert_eq!(term, store.metrics().current_term);
    let rev = store
        .put_in_term(term, "host", "a", json!({ "fenced": true }), None)
        .await
        .expect("written in the term it leads");
    assert_eq!(
        store.get("host", "a"),
        Some((json!({ "fenced": true }), rev))
    );

    // A decision of an earlier (or any other) term changes nothing, and
    // says so.
    for other in [term - 1, term + 1] {
        match store
            .put_in_term(other, "host", "a", json!({ "fenced": false }), None)
            .await
        {
            Err(e @ StoreError::Deposed { .. }) => {
                assert!(e.to_string().contains(&format!("term {other}")), "{e}")
            }
            r => panic!("term {other}: {r:?}"),
        }
    }
    assert_eq!(
        store.get("host", "a"),
        Some((json!({ "fenced": true }), rev))
    );
    assert_eq!(store.revision(), rev);
    // The usual checks still hold inside a term.
    match store
        .put_in_term(term, "host", "a", json!({}), Some(rev + 5))
        .await
    {
        Err(StoreError::Conflict { .. }) => {}
        r => panic!("{r:?}"),
    }
    match store.put_in_term(term, "", "a", json!({}), None).await {
        Err(StoreError::Invalid { field, .. }) => assert_eq!(field, "kind"),
        r => panic!("{r:?}"),
    }
    store.shutdown().await.unwrap();
}
