use super::*;
use serde_json::json;
use tokio::io::AsyncWriteExt;
use tokio::net::UnixListener;

const GREETING: &str = r#"{"QMP": {"version": {"qemu": {"micro": 2, "minor": 0, "major": 10}, "package": "test"}, "capabilities": ["oob"]}}"#;

/// A fake QMP server: greets, accepts `qmp_capabilities`, then hands the
/// connection to `script`.
pub(crate) async fn fake_server<F, Fut>(script: F) -> (tempfile::TempDir, PathBuf)
where
    F: FnOnce(BufReader<OwnedReadHalf>, OwnedWriteHalf) -> Fut + Send + 'static,
    Fut: std::future::Future<Output = ()> + Send,
{
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("qmp.sock");
    let listener = UnixListener::bind(&path).unwrap();
    tokio::spawn(async move {
        let (stream, _) = listener.accept().await.unwrap();
        let (r, mut w) = stream.into_split();
        let mut r = BufReader::new(r);
        w.write_all(format!("{GREETING}\n").as_bytes())
            .await
            .unwrap();
        let mut line = String::new();
        r.read_line(&mut line).await.unwrap();
        let msg: Value = serde_json::from_str(&line).unwrap();
        assert_eq!(msg["execute"], "qmp_capabilities");
        let reply = json!({"return": {}, "id": msg["id"]});
        w.write_all(format!("{reply}\n").as_bytes()).await.unwrap();
        script(r, w).await;
    });
    (dir, path)
}

pub(crate) async fn read_msg(r: &mut BufReader<OwnedReadHalf>) -> Value {
    let mut line = String::new();
    r.read_line(&mut line).await.unwrap();
    serde_json::from_str(&line).unwrap()
}

pub(crate) async fn send(w: &mut OwnedWriteHalf, v: Value) {
    w.write_all(format!("{v}\n").as_bytes()).await.unwrap();
}

#[tokio::test]
async fn concurrent_commands_are_matched_by_id_and_events_broadcast() {
    let (_dir, path) = fake_server(|mut r, mut w| async move {
        let a = read_msg(&mut r).await;
        let b = read_msg(&mut r).await;
        // An event, then the replies in reverse order.
        send(
            &mut w,
            json!({"event": "STOP", "timestamp": {"seconds": 1, "microseconds": 0}}),
        )
        .await;
        for m in [&b, &a] {
            let ret = json!({"cmd": m["execute"]});
            send(&mut w, json!({"return": ret, "id": m["id"]})).await;
        }
        let c = read_msg(&mut r).await;
        send(
            &mut w,
            json!({"error": {"class": "GenericError", "desc": "nope"}, "id": c["id"]}),
        )
        .await;
        // Keep the connection open until the client is done.
        let mut rest = String::new();
        let _ = r.read_line(&mut rest).await;
    })
    .await;
    let qmp = QmpClient::connect(&path).await.unwrap();
    assert_eq!(qmp.greeting().version.qemu.major, 10);
    let mut events = qmp.events();
    let (a, b) = tokio::join!(qmp.execute("first", None), async {
        // Make sure "first" is written first.
        tokio::time::sleep(Duration::from_millis(50)).await;
        qmp.execute("second", Some(json!({"x": 1}))).await
    });
    assert_eq!(a.unwrap()["cmd"], "first");
    assert_eq!(b.unwrap()["cmd"], "second");
    let ev = events.recv().await.unwrap();
    assert_eq!(ev.kind(), EventKind::Stop);
    let err = qmp.execute("third", None).await.unwrap_err();
    assert_eq!(err.class(), Some("GenericError"));
    assert!(err.to_string().contains("third") && err.to_string().contains("nope"));
}

#[tokio::test]
async fn socket_closed_mid_command_fails_pending_and_later_commands() {
    let (_dir, path) = fake_server(|mut r, w| async move {
        let _ = read_msg(&mut r).await; // never answered
        drop(w);
        drop(r);
    })
    .await;
    let qmp = QmpClient::connect(&path).await.unwrap();
    let mut events = qmp.events();
    let err = qmp.execute("query-status", None).await.unwrap_err();
    assert!(err.is_disconnected(), "{err}");
    let msg = err.to_string();
    assert!(
        msg.contains("query-status") && msg.contains("qmp.sock"),
        "{msg}"
    );
    qmp.closed().await;
    assert!(qmp.is_closed());
    assert!(matches!(
        events.recv().await,
        Err(broadcast::error::RecvError::Closed)
    ));
    let err = qmp.execute("cont", None).await.unwrap_err();
    assert!(err.is_disconnected(), "{err}");
    // quit treats a closed connection as done.
    qmp.quit().await.unwrap();
}

#[tokio::test]
async fn command_timeout_is_reported() {
    let (_dir, path) = fake_server(|mut r, w| async move {
        let _keep_open = w;
        let _ = read_msg(&mut r).await;
        tokio::time::sleep(Duration::from_secs(30)).await;
    })
    .await;
    let qmp = QmpClient::connect(&path).await.unwrap();
    let err = qmp
        .execute_with_timeout("slow", None, Duration::from_millis(100))
        .await
        .unwrap_err();
    assert!(matches!(err, QmpError::Timeout { .. }), "{err}");
}

#[tokio::test]
async fn missing_or_bad_greeting() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("silent.sock");
    let listener = UnixListener::bind(&path).unwrap();
    let _keep = tokio::spawn(async move {
        let (s, _) = listener.accept().await.unwrap();
        tokio::time::sleep(Duration::from_secs(30)).await;
        drop(s);
    });
    let err = QmpClient::connect_with(
        &path,
        QmpOptions {
            greeting_timeout: Duration::from_millis(200),
            ..Default::default()
        },
    )
    .await
    .unwrap_err();
    assert!(matches!(err, QmpError::GreetingTimeout { .. }), "{err}");

    let path2 = dir.path().join("rude.sock");
    let listener = UnixListener::bind(&path2).unwrap();
    tokio::spawn(async move {
        let (mut s, _) = listener.accept().await.unwrap();
        s.write_all(b"HELLO\n").await.unwrap();
        tokio::time::sleep(Duration::from_secs(1)).await;
    });
    let err = QmpClient::connect(&path2).await.unwrap_err();
    assert!(matches!(err, QmpError::BadGreeting { .. }), "{err}");

    let err = QmpClient::connect(dir.path().join("none.sock"))
        .await
        .unwrap_err();
    assert!(err.to_string().contains("none.sock"), "{err}");
}
