//! The admin endpoint's limits against hostile clients, on loopback: each
//! 127.0.0.0/8 address is another client to the server. Timeouts are small
//! so that the tests are short; the assertions are on what happens in what
//! order, with wide margins for a loaded machine.

mod common;

use bytes::Bytes;
use common::{Client, FakeCore, FrameChannel, Running};
use http_body_util::{BodyExt, StreamBody};
use hyper::body::Frame;
use nasvisor_api::{ServerLimits, ServerSettings};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

type Tls = tokio_rustls::client::TlsStream<tokio::net::TcpStream>;

async fn start(limits: ServerLimits) -> (tempfile::TempDir, Arc<FakeCore>, Running, String) {
    let dir = tempfile::tempdir().unwrap();
    let core = Arc::new(FakeCore::default());
    let mut settings = ServerSettings::new("127.0.0.1:0".parse().unwrap(), dir.path());
    settings.limits = limits;
    let mut server = Running::start_with(settings, core.clone()).await;
    let token = server.new_token.take().unwrap();
    (dir, core, server, token)
}

fn ms(n: u64) -> Duration {
    Duration::from_millis(n)
}

/// Reads until the server closes the connection (or `within` passes):
/// how long that took, `None` if it stayed open.
async fn closed_within(tls: &mut Tls, within: Duration) -> Option<Duration> {
    let t0 = Instant::now();
    let mut buf = [0u8; 4096];
    loop {
        let left = within.checked_sub(t0.elapsed())?;
        match tokio::time::timeout(left, tls.read(&mut buf)).await {
            Err(_) => return None,
            Ok(Ok(0)) | Ok(Err(_)) => return Some(t0.elapsed()),
            Ok(Ok(_)) => {}
        }
    }
}

/// A slowloris connection: sends a request head one byte every 100 ms,
/// never finishing it; returns when the server closed it, with how long
/// after the TLS handshake.
async fn slowloris(mut tls: Tls) -> Duration {
    let t0 = Instant::now();
    let head = b"GET /healthz HTTP/1.1\r\nHost: localhost\r\nX-Padding: ";
    let mut buf = [0u8; 1024];
    for i in 0.. {
        let byte = head.get(i).copied().unwrap_or(b'a');
        if tls.write_all(&[byte]).await.is_err() || tls.flush().await.is_err() {
            return t0.elapsed();
        }
        match tokio::time::timeout(ms(100), tls.read(&mut buf)).await {
            Ok(Ok(0)) | Ok(Err(_)) => return t0.elapsed(),
            _ => {}
        }
        assert!(t0.elapsed() < Duration::from_secs(30), "never closed");
    }
    unreachable!()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slowloris_client_cannot_deny_service_to_a_normal_client_and_is_closed_after_the_header_timeout(
) {
    let header = ms(2000);
    let (_dir, _core, server, token) = start(ServerLimits {
        max_connections: 16,
        max_connections_per_address: 4,
        header_timeout: header,
        idle_timeout: ms(1000),
        ..ServerLimits::default()
    })
    .await;
    // The attacker opens 20 connections from 127.0.0.1 and trickles a
    // request head into each it gets.
    let attacker = server.client();
    let mut held = Vec::new();
    let mut refused = 0;
    for _ in 0..20 {
        match attacker.try_raw().await {
            Ok(tls) => held.push(tokio::spawn(slowloris(tls))),
            Err(_) => refused += 1,
        }
    }
    eprintln!(
        "slowloris: {} connections held, {refused} refused",
        held.len()
    );
    assert_eq!(held.len(), 4, "the per-address cap");
    // A normal client from another address is answered at once, while the
    // slowloris connections are all still open.
    let normal = server.client().with_source("127.0.0.2");
    for _ in 0..5 {
        let t = Instant::now();
        let r = normal.get("/api/v1/vms", Some(&token)).await;
        assert_eq!(r.status, 200);
        eprintln!("normal client answered in {:?}", t.elapsed());
    }
    assert!(
        held.iter().all(|h| !h.is_finished()),
        "the normal client was served while the slowloris held its slots"
    );
    // Each slowloris connection is closed by the header timeout: not
    // before it (bytes keep arriving, so the idle timeout does not apply),
    // and not long after.
    for h in held {
        let after = h.await.unwrap();
        eprintln!("slowloris connection closed after {after:?}");
        assert!(after >= header - ms(100), "{after:?}");
        assert!(after < header + Duration::from_secs(3), "{after:?}");
    }
    // Its slots are free again.
    attacker.try_raw().await.expect("a slot after the close");
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connections_beyond_the_caps_are_closed_at_once_and_their_slots_come_back() {
    let (_dir, _core, server, token) = start(ServerLimits {
        max_connections: 3,
        max_connections_per_address: 2,
        ..ServerLimits::default()
    })
    .await;
    let c = |a: &str| server.client().with_source(a);
    let a1 = c("127.0.0.1").raw().await;
    let _a2 = c("127.0.0.1").raw().await;
    // A third from the same address: closed at once.
    let t = Instant::now();
    let err = c("127.0.0.1").try_raw().await.unwrap_err();
    eprintln!(
        "third connection of one address: {err} after {:?}",
        t.elapsed()
    );
    let _b1 = c("127.0.0.2").raw().await;
    // The total cap: a fourth connection is closed, whoever opens it.
    assert!(c("127.0.0.3").try_raw().await.is_err());
    assert!(c("127.0.0.4").try_raw().await.is_err());
    // A closed connection gives its slot back.
    drop(a1);
    let deadline = Instant::now() + Duration::from_secs(5);
    let mut freed = loop {
        if let Ok(tls) = c("127.0.0.3").try_raw().await {
            break tls;
        }
        assert!(Instant::now() < deadline, "the slot never came back");
        tokio::time::sleep(ms(50)).await;
    };
    // And it serves requests.
    freed
        .write_all(b"GET /healthz HTTP/1.1\r\nHost: localhost\r\n\r\n")
        .await
        .unwrap();
    let mut buf = [0u8; 64];
    let n = freed.read(&mut buf).await.unwrap();
    assert!(buf[..n].starts_with(b"HTTP/1.1 200"), "{:?}", &buf[..n]);
    let _ = token;
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn silent_connections_are_closed_after_the_idle_timeout_but_a_quiet_answer_is_not() {
    let idle = ms(500);
    let (_dir, _core, server, token) = start(ServerLimits {
        idle_timeout: idle,
        header_timeout: Duration::from_secs(10),
        ..ServerLimits::default()
    })
    .await;
    // Connected, never a byte.
    let mut silent = server.client().raw().await;
    let after = closed_within(&mut silent, Duration::from_secs(5))
        .await
        .expect("an idle connection is closed");
    eprintln!("silent connection closed after {after:?}");
    assert!(
        after >= idle - ms(50) && after < Duration::from_secs(4),
        "{after:?}"
    );

    // Kept alive after an answer, then silent.
    let mut kept = server.client().raw().await;
    kept.write_all(b"GET /healthz HTTP/1.1\r\nHost: localhost\r\n\r\n")
        .await
        .unwrap();
    let mut buf = [0u8; 256];
    let n = kept.read(&mut buf).await.unwrap();
    assert!(buf[..n].starts_with(b"HTTP/1.1 200"));
    let after = closed_within(&mut kept, Duration::from_secs(5))
        .await
        .expect("a kept-alive connection is closed when idle");
    assert!(after < Duration::from_secs(4), "{after:?}");

    // An answer that is silent for 1.5 s (3 idle timeouts) is in progress,
    // not idle: it arrives whole.
    let r = server
        .client()
        .get("/api/v1/vms/quiet/console?follow=true", Some(&token))
        .await;
    assert_eq!(r.status, 200);
    assert_eq!(r.body, b"start\nend\n");
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_that_never_finishes_the_tls_handshake_is_dropped() {
    let (_dir, _core, server, _token) = start(ServerLimits {
        handshake_timeout: ms(500),
        ..ServerLimits::default()
    })
    .await;
    let mut tcp = server.client().tcp().await.unwrap();
    tcp.write_all(&[0x16, 0x03, 0x01]).await.unwrap(); // the start of a hello
    let t = Instant::now();
    let mut buf = [0u8; 64];
    let r = tokio::time::timeout(Duration::from_secs(5), tcp.read(&mut buf))
        .await
        .expect("dropped");
    eprintln!("handshake dropped after {:?}: {r:?}", t.elapsed());
    assert!(matches!(r, Ok(0) | Err(_)), "{r:?}");
    assert!(t.elapsed() >= ms(400));
    server.stop().await;
}

/// Sends `first` of a body announced as `len` bytes, then nothing; the
/// answer and how long it took.
async fn stalled_body(
    client: &Client,
    path: &str,
    token: &str,
    content_type: &str,
    first: &[u8],
) -> (u16, serde_json::Value, Duration) {
    let (tx, rx) = tokio::sync::mpsc::channel(1);
    tx.send(Ok(Frame::data(Bytes::copy_from_slice(first))))
        .await
        .unwrap();
    let body = StreamBody::new(FrameChannel(rx));
    let t = Instant::now();
    let resp = tokio::time::timeout(
        Duration::from_secs(10),
        client.open("POST", path, Some(token), Some(content_type), body),
    )
    .await
    .expect("an answer while the body is stalled");
    let status = resp.status().as_u16();
    let body = resp.into_body().collect().await.unwrap().to_bytes();
    drop(tx); // kept open until the answer arrived: the body stalled
    (status, serde_json::from_slice(&body).unwrap(), t.elapsed())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_body_that_stops_arriving_fails_after_the_body_timeout() {
    let body_timeout = ms(700);
    let (_dir, core, server, token) = start(ServerLimits {
        body_timeout,
        ..ServerLimits::default()
    })
    .await;
    let c = server.client();
    // A JSON body.
    let (status, answer, took) = stalled_body(
        &c,
        "/api/v1/vms",
        &token,
        "application/json",
        b"{\"name\": ",
    )
    .await;
    eprintln!("stalled JSON body: {status} after {took:?}: {answer}");
    assert_eq!(status, 408, "{answer}");
    assert_eq!(answer["error"]["field"], "body");
    assert!(answer["error"]["reason"]
        .as_str()
        .unwrap()
        .contains("body-timeout-ms"));
    assert!(took >= body_timeout - ms(50), "{took:?}");
    assert!(core.take().is_empty(), "nothing reached the core");

    // An upload: the core's stream ends with the error, and the client
    // gets 408.
    let (status, answer, took) = stalled_body(
        &c,
        "/api/v1/images/stalled/upload",
        &token,
        "application/octet-stream",
        &[7u8; 4096],
    )
    .await;
    eprintln!("stalled upload: {status} after {took:?}: {answer}");
    assert_eq!(status, 408, "{answer}");
    assert_eq!(answer["error"]["field"], "body");
    let uploads = core.uploads.lock().unwrap().clone();
    let (upload, got, err) = &uploads[0];
    assert_eq!(upload.name, "stalled");
    assert_eq!(got.len(), 4096);
    assert!(
        err.as_deref().unwrap().contains("stopped arriving"),
        "{err:?}"
    );
    server.stop().await;
}

#[tokio::test]
async fn unusable_limits_are_refused_naming_the_setting() {
    let dir = tempfile::tempdir().unwrap();
    let mut settings = ServerSettings::new("127.0.0.1:0".parse().unwrap(), dir.path());
    settings.limits.max_connections_per_address = 0;
    let err = nasvisor_api::Server::bind(settings, Arc::new(FakeCore::default()))
        .await
        .unwrap_err();
    assert!(
        err.to_string()
            .starts_with("admin endpoint limits: max-connections-per-address: must be 1 to"),
        "{err}"
    );
}

/// Sends `head` and then a body of `len` bytes in one go, as a client that
/// does not wait for an early answer does, and reads the answer: its head
/// (lower case), or the error that lost it.
async fn send_with_body(server: &Running, head: String, len: usize) -> Result<String, String> {
    let mut tls = server.client().raw().await;
    let mut request = head.into_bytes();
    request.extend(std::iter::repeat_n(b' ', len));
    // The write may fail once the server has answered and closed; the
    // answer must still be readable.
    let _ = tls.write_all(&request).await;
    let _ = tls.flush().await;
    let mut answer = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        match tokio::time::timeout(Duration::from_secs(10), tls.read(&mut buf)).await {
            Err(_) => return Err("no answer within 10 s".into()),
            Ok(Ok(0)) => break,
            Ok(Ok(n)) => {
                answer.extend_from_slice(&buf[..n]);
                if answer.windows(4).any(|w| w == b"\r\n\r\n") {
                    break;
                }
            }
            Ok(Err(e)) if answer.is_empty() => return Err(e.to_string()),
            Ok(Err(_)) => break,
        }
    }
    Ok(String::from_utf8_lossy(&answer).to_lowercase())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_early_refusal_of_a_request_with_a_large_body_reaches_the_client() {
    // benches/fuzz-api.sh found it: the server refused a request before
    // reading its body (wrong token, no such method), closed the connection
    // with the body's bytes unread, and the kernel's reset threw the answer
    // away before the client read it; a smaller body's refusal closed the
    // connection without `Connection: close`, and the client's next request
    // on it was lost.
    let (_dir, _core, server, token) = start(ServerLimits::default()).await;
    let len = 256 * 1024;
    for i in 0..10 {
        for (head, want) in [
            (
                format!(
                    "POST /api/v1/vms HTTP/1.1\r\nHost: localhost\r\nAuthorization: Bearer wrong\r\n\
                     Content-Type: application/json\r\nContent-Length: {len}\r\n\r\n"
                ),
                "http/1.1 401",
            ),
            (
                format!(
                    "DELETE /api/v1/vms/x1/power HTTP/1.1\r\nHost: localhost\r\nAuthorization: Bearer {token}\r\n\
                     Content-Type: application/json\r\nContent-Length: {len}\r\n\r\n"
                ),
                "http/1.1 405",
            ),
        ] {
            let got = send_with_body(&server, head, len).await;
            assert!(
                got.as_deref().is_ok_and(|s| s.starts_with(want)),
                "attempt {i}: wanted {want}, got {got:?}"
            );
            // The body was left unread: the connection closes, and says so.
            assert!(
                got.as_deref().is_ok_and(|s| s.contains("\r\nconnection: close\r\n")),
                "{got:?}"
            );
        }
    }
    server.stop().await;
}
