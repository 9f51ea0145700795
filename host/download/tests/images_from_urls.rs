//! Image imports from URLs through the real downloader: local HTTP and
//! HTTPS servers on 127.0.0.1 (rustls, a self-signed certificate the
//! downloader is told to trust, or not), the image library of
//! nasvisor-storage and real qemu-img.

use nasvisor_download::HttpDownloader;
use nasvisor_storage::{Image, ImageLibrary, ImageSpec, DOWNLOAD_READ_TIMEOUT};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use rustls::{RootCertStore, ServerConfig};
use sha2::Digest;
use std::io::{Read, Write};
use std::net::TcpListener;
use std::path::Path;
use std::process::Command;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

fn files(dir: &Path) -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().to_string())
        .collect();
    v.sort();
    v
}

/// A 4 MiB qcow2 image (of a raw disk with an MBR signature), as bytes.
fn qcow2_image(dir: &Path) -> Vec<u8> {
    let raw = dir.join("disk.raw");
    let mut b = vec![0u8; 4 << 20];
    b[510] = 0x55;
    b[511] = 0xaa;
    b[1 << 20..(1 << 20) + 4096].fill(0x5a);
    std::fs::write(&raw, b).unwrap();
    let q = dir.join("disk.qcow2");
    assert!(Command::new("qemu-img")
        .args(["convert", "-f", "raw", "-O", "qcow2"])
        .arg(&raw)
        .arg(&q)
        .status()
        .unwrap()
        .success());
    std::fs::read(q).unwrap()
}

fn sha(b: &[u8]) -> String {
    hex::encode(sha2::Sha256::digest(b))
}

fn http() -> HttpDownloader {
    HttpDownloader::new().unwrap()
}

/// Adds image `name` from `url` through `d`, with the default read timeout
/// and image spec; the error as text.
fn add(
    lib: &ImageLibrary,
    d: &HttpDownloader,
    name: &str,
    url: &str,
    sha: Option<&str>,
) -> Result<Image, String> {
    lib.add_url(
        d,
        name,
        url,
        sha,
        DOWNLOAD_READ_TIMEOUT,
        ImageSpec::default(),
        |_, _| {},
    )
    .map_err(|e| e.to_string())
}

/// What a test server answers.
#[derive(Clone)]
enum Answer {
    /// 200 with this body, claiming this length.
    Body(Vec<u8>, usize),
    /// 302 to this location.
    Redirect(String),
}

/// A server on 127.0.0.1 (HTTPS when given a configuration) that answers
/// every request with `answer`, one connection at a time, and records the
/// request lines it got.
struct Server {
    url: String,
    requests: Arc<Mutex<Vec<String>>>,
}

impl Server {
    fn start(tls: Option<Arc<ServerConfig>>, answer: Answer) -> Server {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        let scheme = if tls.is_some() { "https" } else { "http" };
        let url = format!("{scheme}://{}/image", l.local_addr().unwrap());
        let requests = Arc::new(Mutex::new(Vec::new()));
        let seen = requests.clone();
        std::thread::spawn(move || {
            for tcp in l.incoming() {
                let Ok(tcp) = tcp else { return };
                let seen = seen.clone();
                let answer = answer.clone();
                // A handshake the client refused ends this connection only.
                let r = match &tls {
                    Some(cfg) => {
                        let conn = rustls::ServerConnection::new(cfg.clone()).unwrap();
                        let mut s = rustls::StreamOwned::new(conn, tcp);
                        let r = exchange(&mut s, &seen, &answer);
                        s.conn.send_close_notify();
                        r.and_then(|()| s.flush())
                    }
                    None => exchange(&mut { tcp }, &seen, &answer),
                };
                if let Err(e) = r {
                    eprintln!("test server: {e}");
                }
            }
        });
        Server { url, requests }
    }

    fn requests(&self) -> Vec<String> {
        self.requests.lock().unwrap().clone()
    }
}

fn exchange(
    s: &mut impl ReadWrite,
    seen: &Mutex<Vec<String>>,
    answer: &Answer,
) -> std::io::Result<()> {
    let mut head = Vec::new();
    let mut b = [0u8; 1024];
    while !head.windows(4).any(|w| w == b"\r\n\r\n") {
        let n = s.read(&mut b)?;
        if n == 0 {
            return Ok(());
        }
        head.extend_from_slice(&b[..n]);
    }
    let line = String::from_utf8_lossy(&head);
    seen.lock()
        .unwrap()
        .push(line.lines().next().unwrap_or("").to_string());
    match answer {
        Answer::Body(body, claimed) => {
            let h = format!(
                "HTTP/1.1 200 OK\r\nContent-Length: {claimed}\r\nConnection: close\r\n\r\n"
            );
            s.write_all(h.as_bytes())?;
            s.write_all(body)
        }
        Answer::Redirect(to) => s.write_all(
            format!(
                "HTTP/1.1 302 Found\r\nLocation: {to}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
            )
            .as_bytes(),
        ),
    }
}

trait ReadWrite: Read + Write {}
impl<T: Read + Write> ReadWrite for T {}

/// A self-signed certificate for 127.0.0.1: the server's configuration and
/// a downloader that trusts it.
fn tls_pair() -> (Arc<ServerConfig>, HttpDownloader) {
    let key = rcgen::KeyPair::generate().unwrap();
    let cert = rcgen::CertificateParams::new(vec!["127.0.0.1".into()])
        .unwrap()
        .self_signed(&key)
        .unwrap();
    let der: CertificateDer<'static> = cert.der().clone();
    let config = nasvisor_tls::server_config_builder()
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(
            vec![der.clone()],
            PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key.serialize_der())),
        )
        .unwrap();
    let mut roots = RootCertStore::empty();
    roots.add(der).unwrap();
    (Arc::new(config), HttpDownloader::with_roots(roots).unwrap())
}

#[test]
fn add_from_a_url_and_refuse_a_cut_download() {
    let src = tempfile::tempdir().unwrap();
    let lib_dir = tempfile::tempdir().unwrap();
    let lib = ImageLibrary::open(lib_dir.path()).unwrap();
    let body = qcow2_image(src.path());
    let sha = sha(&body);
    let url = Server::start(None, Answer::Body(body.clone(), body.len())).url;
    let mut seen = (0, None);
    let img = lib
        .add_url(
            &http(),
            "net",
            &url,
            Some(&sha),
            DOWNLOAD_READ_TIMEOUT,
            ImageSpec::default(),
            |n, t| seen = (n, t),
        )
        .unwrap();
    assert_eq!(seen, (body.len() as u64, Some(body.len() as u64)));
    assert_eq!(img.source, url);

    let cut = Answer::Body(body[..body.len() / 2].to_vec(), body.len());
    let url = Server::start(None, cut).url;
    let e = add(&lib, &http(), "cut", &url, Some(&sha)).unwrap_err();
    assert!(
        e.contains("truncated") || e.contains("reading the image failed"),
        "{e}"
    );
    let e = add(&lib, &http(), "ftp", "ftp://127.0.0.1/x", None).unwrap_err();
    assert!(e.starts_with("url:"), "{e}");
    assert_eq!(files(lib_dir.path()), ["net.json", "net.qcow2"]);
}

#[test]
fn a_plain_http_url_needs_a_sha256_and_a_mismatch_leaves_nothing() {
    let src = tempfile::tempdir().unwrap();
    let lib_dir = tempfile::tempdir().unwrap();
    let lib = ImageLibrary::open(lib_dir.path()).unwrap();
    let body = qcow2_image(src.path());
    let server = Server::start(None, Answer::Body(body.clone(), body.len()));
    let add = |sha: Option<&str>| add(&lib, &http(), "net", &server.url, sha);
    // No checksum: refused before connecting, naming the field.
    let e = add(None).unwrap_err();
    assert!(
        e.starts_with("sha256: required with a plain http:// URL"),
        "{e}"
    );
    let e = add(Some("abc")).unwrap_err();
    assert!(
        e.starts_with("sha256:") && e.contains("64 hex digits"),
        "{e}"
    );
    assert!(server.requests().is_empty(), "{:?}", server.requests());
    // The wrong checksum: the whole body arrives, then nothing is kept.
    let wrong = "0".repeat(64);
    let e = add(Some(&wrong)).unwrap_err();
    assert!(e.starts_with("sha256:") && e.contains(&wrong), "{e}");
    assert!(
        files(lib_dir.path()).is_empty(),
        "{:?}",
        files(lib_dir.path())
    );
    // The right one, in capitals.
    let upper = sha(&body).to_uppercase();
    let img = add(Some(&upper)).unwrap();
    assert_eq!(img.source_sha256, upper.to_lowercase());
}

#[test]
fn a_download_that_stalls_midway_fails_after_the_read_timeout_and_leaves_nothing() {
    let src = tempfile::tempdir().unwrap();
    let lib_dir = tempfile::tempdir().unwrap();
    let lib = ImageLibrary::open(lib_dir.path()).unwrap();
    let body = qcow2_image(src.path());
    let sha = sha(&body);
    // Half the body, then silence with the connection open.
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}/image", l.local_addr().unwrap());
    let half = body[..body.len() / 2].to_vec();
    let len = body.len();
    let server = std::thread::spawn(move || {
        let (mut s, _) = l.accept().unwrap();
        let mut req = [0u8; 4096];
        let _ = s.read(&mut req);
        let head = format!("HTTP/1.1 200 OK\r\nContent-Length: {len}\r\n\r\n");
        let _ = s.write_all(head.as_bytes());
        let _ = s.write_all(&half);
        std::thread::sleep(Duration::from_secs(30));
    });
    let t0 = Instant::now();
    let e = lib
        .add_url(
            &http(),
            "stalled",
            &url,
            Some(&sha),
            Duration::from_secs(1),
            ImageSpec::default(),
            |_, _| {},
        )
        .unwrap_err()
        .to_string();
    let took = t0.elapsed();
    assert!(e.contains("read timeout"), "{e}");
    // The deadline, with a wide margin: long before the server gives up.
    assert!(took < Duration::from_secs(20), "{took:?}");
    assert!(
        files(lib_dir.path()).is_empty(),
        "{:?}",
        files(lib_dir.path())
    );
    drop(server);
}

#[test]
fn an_https_image_needs_no_checksum_and_arrives_over_verified_tls() {
    let src = tempfile::tempdir().unwrap();
    let lib_dir = tempfile::tempdir().unwrap();
    let lib = ImageLibrary::open(lib_dir.path()).unwrap();
    let body = qcow2_image(src.path());
    let (tls, trusting) = tls_pair();
    let server = Server::start(Some(tls), Answer::Body(body.clone(), body.len()));
    let img = add(&lib, &trusting, "secure", &server.url, None).unwrap();
    assert_eq!(img.source_sha256, sha(&body));
    assert_eq!(img.source, server.url);
    assert_eq!(server.requests(), ["GET /image HTTP/1.1"]);
    assert_eq!(files(lib_dir.path()), ["secure.json", "secure.qcow2"]);
}

#[test]
fn an_https_server_that_is_not_trusted_is_refused_and_leaves_nothing() {
    let src = tempfile::tempdir().unwrap();
    let lib_dir = tempfile::tempdir().unwrap();
    let lib = ImageLibrary::open(lib_dir.path()).unwrap();
    let body = qcow2_image(src.path());
    let (tls, _) = tls_pair();
    let server = Server::start(Some(tls), Answer::Body(body.clone(), body.len()));
    // The public roots do not vouch for a self-signed certificate, and a
    // checksum does not make an unverified server acceptable.
    for sha in [None, Some(sha(&body))] {
        let e = add(&lib, &http(), "untrusted", &server.url, sha.as_deref()).unwrap_err();
        assert!(
            e.starts_with("url: download of https://") && e.contains("UnknownIssuer"),
            "{e}"
        );
    }
    assert!(server.requests().is_empty(), "{:?}", server.requests());
    assert!(
        files(lib_dir.path()).is_empty(),
        "{:?}",
        files(lib_dir.path())
    );
}

#[test]
fn a_redirect_from_https_to_plain_http_needs_a_checksum() {
    let src = tempfile::tempdir().unwrap();
    let lib_dir = tempfile::tempdir().unwrap();
    let lib = ImageLibrary::open(lib_dir.path()).unwrap();
    let body = qcow2_image(src.path());
    let plain = Server::start(None, Answer::Body(body.clone(), body.len()));
    let (tls, trusting) = tls_pair();
    let secure = Server::start(Some(tls), Answer::Redirect(plain.url.clone()));
    let add = |name: &str, sha: Option<&str>| add(&lib, &trusting, name, &secure.url, sha);
    // Without one: refused at the redirect, the http server never asked.
    let e = add("downgraded", None).unwrap_err();
    assert!(
        e.starts_with("url: download of https://")
            && e.contains(&format!(
                "redirects to {}, which is not https://",
                plain.url
            )),
        "{e}"
    );
    assert_eq!(secure.requests().len(), 1);
    assert!(plain.requests().is_empty(), "{:?}", plain.requests());
    assert!(
        files(lib_dir.path()).is_empty(),
        "{:?}",
        files(lib_dir.path())
    );
    // With one: followed, and the bytes are checked against it.
    let img = add("checked", Some(&sha(&body))).unwrap();
    assert_eq!(img.source_sha256, sha(&body));
    assert_eq!(plain.requests(), ["GET /image HTTP/1.1"]);
}
