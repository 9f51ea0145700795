//! The two streamed routes: the console (a chunked answer fed by the core's
//! stream) and the image upload (the raw request body handed to the core as
//! it arrives).

mod common;

use bytes::Bytes;
use common::{FakeCore, Running};
use http_body_util::{BodyExt, Full, StreamBody};
use hyper::body::Frame;
use nasvisor_api::types::{FirmwareKind, ImageMetaSpec};
use nasvisor_api::ServerSettings;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

async fn start_with(
    max_upload: Option<u64>,
) -> (tempfile::TempDir, Arc<FakeCore>, Running, String) {
    let dir = tempfile::tempdir().unwrap();
    let core = Arc::new(FakeCore::default());
    let mut settings = ServerSettings::new("127.0.0.1:0".parse().unwrap(), dir.path());
    if let Some(m) = max_upload {
        settings.max_upload = m;
    }
    let mut server = Running::start_with(settings, core.clone()).await;
    let token = server.new_token.take().unwrap();
    (dir, core, server, token)
}

const OCTET: Option<&str> = Some("application/octet-stream");

#[tokio::test]
async fn console_streams_history_then_live_output() {
    let (_dir, core, server, token) = start_with(None).await;
    let c = server.client();
    let r = c.get("/api/v1/vms/vm1/console", Some(&token)).await;
    assert_eq!(r.status, 200);
    assert_eq!(
        r.headers.get("content-type").unwrap(),
        "application/octet-stream"
    );
    assert_eq!(r.headers.get("transfer-encoding").unwrap(), "chunked");
    assert_eq!(r.body, b"history of vm1 (65536)\n");
    let r = c
        .get("/api/v1/vms/vm1/console?follow=true&tail=10", Some(&token))
        .await;
    assert_eq!(r.status, 200);
    assert_eq!(r.body, b"history of vm1 (10)\nlive 1\nlive 2\n");
    assert_eq!(
        core.consoles.lock().unwrap().clone(),
        vec![
            ("vm1".to_string(), false, 65536),
            ("vm1".to_string(), true, 10)
        ]
    );
    // A core error is a normal JSON error.
    let r = c.get("/api/v1/vms/missing/console", Some(&token)).await;
    assert_eq!(r.status, 404);
    assert!(r.json()["error"]["reason"]
        .as_str()
        .unwrap()
        .contains("missing"));
    // The token is checked first.
    let r = c.get("/api/v1/vms/vm1/console?tail=x", None).await;
    assert_eq!(r.status, 401);
    assert_eq!(core.consoles.lock().unwrap().len(), 3);
    server.stop().await;
}

#[tokio::test]
async fn console_stream_is_dropped_when_the_client_goes_away() {
    let (_dir, core, server, token) = start_with(None).await;
    let c = server.client();
    let resp = c
        .open(
            "GET",
            "/api/v1/vms/endless/console?follow=1",
            Some(&token),
            None,
            Full::new(Bytes::new()),
        )
        .await;
    assert_eq!(resp.status(), 200);
    let mut body = resp.into_body();
    let mut got = Vec::new();
    while !String::from_utf8_lossy(&got).contains("line 3\n") {
        let frame = tokio::time::timeout(Duration::from_secs(5), body.frame())
            .await
            .expect("a chunk in time")
            .unwrap()
            .unwrap();
        if let Ok(d) = frame.into_data() {
            got.extend_from_slice(&d);
        }
    }
    assert!(got.starts_with(b"line 1\nline 2\n"));
    drop(body);
    let deadline = Instant::now() + Duration::from_secs(5);
    while !core.console_dropped.load(Ordering::SeqCst) {
        assert!(
            Instant::now() < deadline,
            "the core's stream was never dropped"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    server.stop().await;
}

#[tokio::test]
async fn upload_is_streamed_to_the_core_without_buffering() {
    let (_dir, core, server, token) = start_with(None).await;
    let c = server.client();
    let (tx, rx) = tokio::sync::mpsc::channel::<Result<Frame<Bytes>, std::io::Error>>(1);
    let body = StreamBody::new(common::FrameChannel(rx));
    let path = "/api/v1/images/deb/upload?os_family=linux&os_variant=debian12&cloud_init=false&firmware=uefi&ready_marker=READY%20ok+now";
    let client = tokio::spawn({
        let token = token.clone();
        async move { c.open("POST", path, Some(&token), OCTET, body).await }
    });
    // 3 MiB (more than the 1 MiB JSON limit), chunk by chunk: the next chunk
    // is sent only when the core has seen the previous one, which would
    // deadlock if the server buffered the body.
    let chunk = vec![7u8; 1024 * 1024];
    for i in 1..=3u64 {
        tx.send(Ok(Frame::data(Bytes::from(chunk.clone()))))
            .await
            .unwrap();
        let deadline = Instant::now() + Duration::from_secs(10);
        while core.upload_progress.load(Ordering::SeqCst) < i * chunk.len() as u64 {
            assert!(
                Instant::now() < deadline,
                "chunk {i} never reached the core"
            );
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }
    drop(tx);
    let resp = client.await.unwrap();
    assert_eq!(resp.status(), 202);
    let body = resp.into_body().collect().await.unwrap().to_bytes();
    let job: serde_json::Value = serde_json::from_slice(&body).unwrap();
    nasvisor_schema_check::check_response("POST", "/api/v1/images/{name}/upload", 202, &job)
        .unwrap();
    let uploads = core.uploads.lock().unwrap().clone();
    assert_eq!(uploads.len(), 1);
    let (up, bytes, err) = &uploads[0];
    assert_eq!(up.name, "deb");
    assert_eq!(
        up.meta,
        ImageMetaSpec {
            os_family: "linux".into(),
            os_variant: "debian12".into(),
            cloud_init: false,
            firmware: FirmwareKind::Uefi,
            ready_marker: Some("READY ok now".into()),
        }
    );
    assert_eq!(bytes.len(), 3 * 1024 * 1024);
    assert!(err.is_none());
    server.stop().await;
}

#[tokio::test]
async fn upload_checks_type_size_and_metadata_before_the_core() {
    let (_dir, core, server, token) = start_with(Some(1000)).await;
    let c = server.client();
    let t = Some(token.as_str());
    // Token first.
    let r = c
        .send(
            "POST",
            "/api/v1/images/i/upload",
            None,
            Some("text/plain"),
            b"x",
        )
        .await;
    assert_eq!(r.status, 401);
    // Then the content type.
    let r = c
        .send(
            "POST",
            "/api/v1/images/i/upload",
            t,
            Some("application/json"),
            b"{}",
        )
        .await;
    assert_eq!(r.status, 415);
    let r = c
        .send("POST", "/api/v1/images/i/upload", t, None, b"x")
        .await;
    assert_eq!(r.status, 415);
    // Content-Length over the limit: refused before the core.
    let r = c
        .send("POST", "/api/v1/images/i/upload", t, OCTET, &[0u8; 1001])
        .await;
    assert_eq!(r.status, 413);
    // Metadata and name.
    for (q, field) in [
        ("?firmware=efi", "firmware"),
        ("?cloud_init=perhaps", "cloud_init"),
        ("?os_family=", "os_family"),
        ("?os_variant=a/b", "os_variant"),
        ("?ready_marker=%07bell", "ready_marker"),
        ("?ready_marker=%zz", "ready_marker"),
        ("?colour=red", "colour"),
    ] {
        let r = c
            .send(
                "POST",
                &format!("/api/v1/images/i/upload{q}"),
                t,
                OCTET,
                b"x",
            )
            .await;
        assert_eq!((r.status, r.field().as_deref()), (400, Some(field)), "{q}");
    }
    let r = c
        .send("POST", "/api/v1/images/..%2F/upload", t, OCTET, b"x")
        .await;
    assert_eq!((r.status, r.field().as_deref()), (400, Some("name")));
    assert!(
        core.uploads.lock().unwrap().is_empty(),
        "the core saw a bad upload"
    );
    // Exactly the limit is fine, and an empty os_variant too.
    let r = c
        .send(
            "POST",
            "/api/v1/images/i/upload?os_variant=",
            t,
            OCTET,
            &[1u8; 1000],
        )
        .await;
    assert_eq!(r.status, 202, "{}", String::from_utf8_lossy(&r.body));
    assert_eq!(core.uploads.lock().unwrap()[0].1.len(), 1000);
    assert_eq!(
        core.uploads.lock().unwrap()[0].0.meta,
        ImageMetaSpec::default()
    );

    // Chunked (no Content-Length) over the limit: the stream yields an
    // error to the core and the client gets 413.
    let (tx, rx) = tokio::sync::mpsc::channel::<Result<Frame<Bytes>, std::io::Error>>(4);
    let body = StreamBody::new(common::FrameChannel(rx));
    tokio::spawn(async move {
        for _ in 0..3 {
            if tx
                .send(Ok(Frame::data(Bytes::from(vec![2u8; 600]))))
                .await
                .is_err()
            {
                break;
            }
        }
    });
    let resp = c
        .open("POST", "/api/v1/images/j/upload", t, OCTET, body)
        .await;
    assert_eq!(resp.status(), 413);
    let uploads = core.uploads.lock().unwrap().clone();
    let (_, bytes, err) = &uploads[1];
    assert_eq!(bytes.len(), 600, "bytes beyond the limit reached the core");
    assert!(
        err.as_deref().unwrap().contains("larger than 1000"),
        "{err:?}"
    );
    server.stop().await;
}

/// A client that sends its whole body before reading the answer (as ureq
/// does) still gets the error of an upload refused before it was read.
#[tokio::test]
async fn refused_upload_is_drained_so_the_client_reads_the_error() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let (_dir, core, server, token) = start_with(Some(12 << 20)).await;
    let c = server.client();
    for (query, ctype, len, status) in [
        ("?firmware=efi", "application/octet-stream", 10 << 20, "400"),
        ("", "text/plain", 10 << 20, "415"),
        ("", "application/octet-stream", 16 << 20, "413"),
    ] {
        let mut s = c.raw().await;
        let head = format!(
            "POST /api/v1/images/i/upload{query} HTTP/1.1\r\nHost: localhost\r\n\
             Authorization: Bearer {token}\r\nContent-Type: {ctype}\r\n\
             Content-Length: {len}\r\n\r\n"
        );
        s.write_all(head.as_bytes()).await.unwrap();
        let body = vec![0u8; len];
        tokio::time::timeout(Duration::from_secs(20), s.write_all(&body))
            .await
            .expect("the server stopped reading the body")
            .unwrap();
        s.flush().await.unwrap();
        let mut answer = Vec::new();
        let mut buf = [0u8; 4096];
        while !answer.windows(4).any(|w| w == b"\r\n\r\n") {
            let n = tokio::time::timeout(Duration::from_secs(10), s.read(&mut buf))
                .await
                .unwrap()
                .unwrap();
            assert!(n > 0, "connection closed without an answer");
            answer.extend_from_slice(&buf[..n]);
        }
        let text = String::from_utf8_lossy(&answer);
        assert!(text.starts_with(&format!("HTTP/1.1 {status} ")), "{text}");
    }
    assert!(core.uploads.lock().unwrap().is_empty());
    server.stop().await;
}
