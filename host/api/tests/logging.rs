//! The server's request log: every request is logged, no token ever is.

mod common;

use common::{FakeCore, Running};
use std::sync::Arc;

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

#[derive(Clone, Default)]
struct LogBuf(Arc<std::sync::Mutex<Vec<u8>>>);

impl std::io::Write for LogBuf {
    fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(b);
        Ok(b.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// Requests are logged, the token never is. Its own test binary, so the
/// subscriber can be the global one (a thread-local one misses events whose
/// callsites other test threads already registered).
#[tokio::test]
async fn requests_are_logged_without_the_token() {
    let logs = LogBuf::default();
    let writer = logs.clone();
    let subscriber = tracing_subscriber::fmt()
        .with_max_level(tracing::Level::TRACE)
        .with_ansi(false)
        .with_writer(move || writer.clone())
        .finish();
    tracing::subscriber::set_global_default(subscriber).unwrap();
    let (_dir, _core, server, token) = start().await;
    let c = server.client();
    assert_eq!(c.get("/api/v1/vms", Some(&token)).await.status, 200);
    assert_eq!(
        c.get("/api/v1/vms", Some("not-the-token")).await.status,
        401
    );
    // A login's password and session, and a new token's secret, stay out.
    let session = c
        .login(br#"{"user":"alice","password":"correct horse"}"#)
        .await
        .json()["token"]
        .as_str()
        .unwrap()
        .to_string();
    assert_eq!(c.get("/api/v1/vms", Some(&session)).await.status, 200);
    let created = c
        .json("POST", "/api/v1/tokens", &token, r#"{"name":"ci"}"#)
        .await
        .json()["token"]
        .as_str()
        .unwrap()
        .to_string();
    server.stop().await;
    let text = String::from_utf8(logs.0.lock().unwrap().clone()).unwrap();
    assert!(
        text.contains("/api/v1/vms") && text.contains("status=200") && text.contains("status=401"),
        "{text}"
    );
    assert!(text.contains("fingerprint"), "{text}");
    for secret in [
        &token,
        &session,
        &created,
        &"not-the-token".to_string(),
        &"correct horse".to_string(),
    ] {
        assert!(!text.contains(secret.as_str()), "token in logs:\n{text}");
    }
}
