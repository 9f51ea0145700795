//! A damaged database file gives a clear error (or, where redb can verify
//! and repair it, the intact store), never a panic or silently wrong data.

use std::time::Instant;

use nasvisor_cluster::store::DB_FILE;
use nasvisor_cluster::{ClusterStore, StoreError};
use serde_json::json;

const ADDR: &str = "127.0.0.1:7443";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_damaged_page_is_an_error_or_the_verified_store() {
    let dir = tempfile::tempdir().unwrap();
    let store = ClusterStore::open(dir.path(), 1, ADDR).await.unwrap();
    for i in 0..30 {
        store
            .put(
                "vm",
                &format!("k{i}"),
                json!({ "x": "y".repeat(100) }),
                None,
            )
            .await
            .unwrap();
    }
    let expected = store.list("vm");
    store.shutdown().await.unwrap();

    let path = dir.path().join(DB_FILE);
    let orig = std::fs::read(&path).unwrap();
    let started = Instant::now();
    let (mut errors, mut intact) = (0, 0);
    // Pages ever written (the rest is preallocated zeros): the first ones
    // (header, allocator state) and an even sample of the others, to keep
    // the test fast and deterministic.
    let written: Vec<usize> = orig
        .chunks(4096)
        .enumerate()
        .filter(|(_, page)| page.iter().any(|b| *b != 0))
        .map(|(p, _)| p)
        .collect();
    let stride = (written.len() / 16).max(1);
    let sample: Vec<usize> = written
        .iter()
        .enumerate()
        .filter(|(i, _)| *i < 8 || i % stride == 0)
        .map(|(_, p)| *p)
        .collect();
    for p in sample {
        let mut bytes = orig.clone();
        let start = p * 4096;
        let end = (start + 4096).min(bytes.len());
        // Keep the magic number so that redb reads on; flip the rest.
        for b in &mut bytes[start.max(64)..end] {
            *b ^= 0x5a;
        }
        std::fs::write(&path, &bytes).unwrap();
        // A panic here would fail the test through the join handle.
        let res = tokio::spawn(ClusterStore::open(dir.path().to_owned(), 1, ADDR))
            .await
            .unwrap_or_else(|e| panic!("page {p}: open panicked: {e}"));
        match res {
            Ok(s) => {
                assert_eq!(
                    s.list("vm"),
                    expected,
                    "page {p}: store opened with other data"
                );
                s.shutdown().await.unwrap();
                intact += 1;
            }
            Err(
                e @ (StoreError::Open { .. }
                | StoreError::Corrupt { .. }
                | StoreError::Damaged { .. }),
            ) => {
                assert!(e.to_string().contains(DB_FILE), "{e}");
                errors += 1;
            }
            Err(e) => panic!("page {p}: unexpected error {e}"),
        }
    }
    eprintln!(
        "{errors} damaged pages refused, {intact} opened intact, in {:?}",
        started.elapsed()
    );
    assert!(errors > 0);
}
