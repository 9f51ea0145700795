//! Downloading an image from an HTTP(S) URL: every rule a download obeys,
//! whatever carries its bytes.
//!
//! The bytes travel through a [`Downloader`]: one GET, no redirect
//! followed, its answer returned whatever its status. The daemon injects
//! the real one (`nasvisor_download::HttpDownloader`, ureq over rustls), so
//! that this crate, and the core above it, compile no HTTP or TLS stack.
//! [`fetch_url`] holds the rules, so every downloader goes through them:
//!
//! - the scheme allow-list: `https://`, and plain `http://` only with a
//!   SHA-256 (nothing else would authenticate the bytes); the SHA-256 must
//!   be 64 hex digits. Both are checked before anything is sent;
//! - redirects are followed here, at most [`MAX_REDIRECTS`], each target
//!   checked like the first URL: without a SHA-256 a redirect may not leave
//!   https;
//! - the size cap: an announced length over [`MAX_IMAGE_BYTES`] is refused
//!   before the body is read, and the body may not run past the length
//!   announced (or the cap);
//! - the timeouts: each request gets [`RequestLimits`] (connect, and each
//!   read of the answer) for the downloader to apply to its connection, and
//!   a read that timed out fails the download with an error that says so.
//!
//! The SHA-256 itself is checked on the received bytes by
//! [`crate::ImageLibrary::add_reader`], before anything else is done with
//! them.

use crate::error::StorageError;
use crate::images::{check_sha256, MAX_IMAGE_BYTES};
use std::io::Read;
use std::time::Duration;
use url::Url;

/// How long a download may go without receiving a byte before it is
/// abandoned.
pub const DOWNLOAD_READ_TIMEOUT: Duration = Duration::from_secs(60);

/// The longest a connection may take to open (shorter when the read timeout
/// is shorter).
pub const MAX_CONNECT_TIMEOUT: Duration = Duration::from_secs(30);

/// Redirects followed at most.
pub const MAX_REDIRECTS: usize = 5;

/// What a [`Downloader`] applies to one request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RequestLimits {
    /// The connection (TCP and TLS) must be open within this.
    pub connect_timeout: Duration,
    /// Each read (the answer's head, then every read of its body) fails with
    /// [`std::io::ErrorKind::TimedOut`] when nothing arrives for this long.
    pub read_timeout: Duration,
}

/// The answer to one GET.
pub struct Response {
    /// The HTTP status.
    pub status: u16,
    /// The header fields, as received.
    pub headers: Vec<(String, String)>,
    /// The body.
    pub body: Box<dyn Read + Send>,
}

impl std::fmt::Debug for Response {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Response")
            .field("status", &self.status)
            .field("headers", &self.headers)
            .finish_non_exhaustive()
    }
}

impl Response {
    /// The first header field named `name` (case-insensitive).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

/// A request that got no answer (name resolution, connection, TLS, a
/// malformed answer), with the downloader's reason.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct TransportError(pub Box<dyn std::error::Error + Send + Sync>);

/// Carries the bytes of a download: one GET, nothing decided.
pub trait Downloader: Send + Sync + std::fmt::Debug {
    /// Sends one GET for `url` (`http://` or `https://`, already allowed by
    /// [`fetch_url`]) and returns the server's answer whatever its status,
    /// following no redirect. It applies `limits` to the connection and
    /// verifies an https server's certificate.
    fn get(&self, url: &str, limits: &RequestLimits) -> Result<Response, TransportError>;
}

fn not_http(url: &str) -> StorageError {
    StorageError::BadSize {
        field: "url",
        reason: format!("{url:?} is not an http:// or https:// URL"),
    }
}

fn failed(url: &str, why: impl std::fmt::Display) -> StorageError {
    StorageError::Download {
        field: "url",
        reason: format!("download of {url} failed: {why}"),
    }
}

/// Starts downloading `url` through `downloader`: the body as a reader and
/// its announced length. Callers that wrap the reader (to cancel, to count)
/// pass it on to [`crate::ImageLibrary::add_reader`], with `sha256` in
/// [`crate::Expected`]. The rules are in the [module](self) documentation.
pub fn fetch_url(
    downloader: &dyn Downloader,
    url: &str,
    sha256: Option<&str>,
    read_timeout: Duration,
) -> Result<(Box<dyn Read + Send>, Option<u64>), StorageError> {
    let mut at = Url::parse(url).map_err(|_| not_http(url))?;
    let https = match at.scheme() {
        "https" => true,
        "http" => false,
        _ => return Err(not_http(url)),
    };
    if let Some(s) = sha256 {
        check_sha256(s)?;
    } else if !https {
        return Err(StorageError::Download {
            field: "sha256",
            reason: "required with a plain http:// URL (nothing else authenticates the \
                     download); give the image's SHA-256 or use https://"
                .into(),
        });
    }
    let limits = RequestLimits {
        connect_timeout: read_timeout.min(MAX_CONNECT_TIMEOUT),
        read_timeout,
    };
    let mut redirects = 0;
    let resp = loop {
        let resp = downloader
            .get(at.as_str(), &limits)
            .map_err(|e| failed(url, e))?;
        match resp.status {
            200 => break resp,
            301 | 302 | 303 | 307 | 308 => {}
            status => return Err(failed(url, format_args!("{at}: HTTP status {status}"))),
        }
        redirects += 1;
        if redirects > MAX_REDIRECTS {
            return Err(failed(
                url,
                format_args!("more than {MAX_REDIRECTS} redirects"),
            ));
        }
        let location = resp.header("location").ok_or_else(|| {
            failed(
                url,
                format_args!("{at}: HTTP status {} without a Location", resp.status),
            )
        })?;
        let next = at
            .join(location)
            .map_err(|e| failed(url, format_args!("{at}: bad redirect {location:?}: {e}")))?;
        match next.scheme() {
            "https" => {}
            "http" if sha256.is_some() => {}
            "http" => {
                return Err(failed(
                    url,
                    format_args!(
                        "{at} redirects to {next}, which is not https:// (plain http:// is \
                         accepted only with a sha256)"
                    ),
                ))
            }
            _ => {
                return Err(failed(
                    url,
                    format_args!("{at} redirects to {next}, which is not http(s)"),
                ))
            }
        }
        tracing::debug!(from = %at, to = %next, status = resp.status, "download redirected");
        at = next;
    };
    let len = match resp.header("content-length") {
        Some(v) => Some(v.trim().parse::<u64>().map_err(|_| {
            failed(
                url,
                format_args!("{at}: Content-Length {v:?} is not a number"),
            )
        })?),
        None => None,
    };
    if let Some(l) = len.filter(|l| *l > MAX_IMAGE_BYTES) {
        return Err(StorageError::BadSize {
            field: "url",
            reason: format!("the server announces {l} bytes, more than {MAX_IMAGE_BYTES}"),
        });
    }
    Ok((
        Box::new(Capped {
            inner: ReadTimeout {
                inner: resp.body,
                timeout: read_timeout,
            },
            left: len.unwrap_or(MAX_IMAGE_BYTES),
            announced: len.is_some(),
        }),
        len,
    ))
}

/// Turns a read that timed out into an error that says so.
struct ReadTimeout<R> {
    inner: R,
    timeout: Duration,
}

impl<R: Read> Read for ReadTimeout<R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        self.inner.read(buf).map_err(|e| match e.kind() {
            std::io::ErrorKind::TimedOut | std::io::ErrorKind::WouldBlock => std::io::Error::new(
                std::io::ErrorKind::TimedOut,
                format!(
                    "the server sent nothing for {} s (read timeout); the download is abandoned",
                    self.timeout.as_secs_f64()
                ),
            ),
            _ => e,
        })
    }
}

/// Fails a body that runs past the length announced, or past
/// [`MAX_IMAGE_BYTES`] when none was.
struct Capped<R> {
    inner: R,
    left: u64,
    announced: bool,
}

impl<R: Read> Read for Capped<R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        if buf.is_empty() {
            return Ok(0);
        }
        // One byte more than allowed, to see whether the body goes on.
        let room = usize::try_from(self.left.saturating_add(1)).unwrap_or(usize::MAX);
        let want = buf.len().min(room);
        let n = self.inner.read(&mut buf[..want])?;
        if n as u64 > self.left {
            return Err(std::io::Error::other(if self.announced {
                "the server sent more than the length it announced".to_string()
            } else {
                format!("the server sent more than {MAX_IMAGE_BYTES} bytes")
            }));
        }
        self.left -= n as u64;
        Ok(n)
    }
}

#[cfg(test)]
mod tests {
    //! The rules against a fake downloader that serves canned answers and
    //! records what was asked (the real HTTP stack is tested in
    //! `nasvisor-download`).

    use super::*;
    use std::collections::HashMap;
    use std::sync::Mutex;

    /// A canned answer: status, headers, body.
    type Canned = (u16, Vec<(String, String)>, Vec<u8>);

    #[derive(Debug, Default)]
    struct Fake {
        /// By URL.
        answers: HashMap<String, Canned>,
        asked: Mutex<Vec<(String, RequestLimits)>>,
    }

    impl Fake {
        fn answer(mut self, url: &str, status: u16, headers: &[(&str, &str)], body: &[u8]) -> Fake {
            let h = headers
                .iter()
                .map(|(n, v)| (n.to_string(), v.to_string()))
                .collect();
            self.answers
                .insert(url.to_string(), (status, h, body.to_vec()));
            self
        }

        fn asked(&self) -> Vec<String> {
            let asked = self.asked.lock().unwrap_or_else(|e| e.into_inner());
            asked.iter().map(|(u, _)| u.clone()).collect()
        }
    }

    impl Downloader for Fake {
        fn get(&self, url: &str, limits: &RequestLimits) -> Result<Response, TransportError> {
            self.asked
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .push((url.to_string(), *limits));
            let (status, headers, body) = self
                .answers
                .get(url)
                .cloned()
                .ok_or_else(|| TransportError(format!("{url}: connection refused").into()))?;
            Ok(Response {
                status,
                headers,
                body: Box::new(std::io::Cursor::new(body)),
            })
        }
    }

    const SHA: &str = "9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08";
    const T: Duration = DOWNLOAD_READ_TIMEOUT;

    fn body_of(r: Result<(Box<dyn Read + Send>, Option<u64>), StorageError>) -> Vec<u8> {
        let (mut rd, _) = r.unwrap();
        let mut v = Vec::new();
        rd.read_to_end(&mut v).unwrap();
        v
    }

    fn err(r: Result<(Box<dyn Read + Send>, Option<u64>), StorageError>) -> String {
        match r {
            Ok(_) => panic!("the download was accepted"),
            Err(e) => e.to_string(),
        }
    }

    #[test]
    fn schemes_and_checksums_are_checked_before_anything_is_sent() {
        let f = Fake::default();
        for url in [
            "ftp://h/x",
            "file:///etc/passwd",
            "not a url",
            "HTTPX://h/x",
        ] {
            let e = err(fetch_url(&f, url, Some(SHA), T));
            assert!(e.starts_with("url:") && e.contains("not an http"), "{e}");
        }
        let e = err(fetch_url(&f, "http://h/x", None, T));
        assert!(
            e.starts_with("sha256: required with a plain http:// URL"),
            "{e}"
        );
        let e = err(fetch_url(&f, "https://h/x", Some("abc"), T));
        assert!(
            e.starts_with("sha256:") && e.contains("64 hex digits"),
            "{e}"
        );
        assert!(f.asked().is_empty(), "{:?}", f.asked());
    }

    #[test]
    fn an_https_url_needs_no_checksum_and_gets_the_timeouts() {
        let f = Fake::default().answer("https://h/x", 200, &[("Content-Length", "5")], b"hello");
        let (mut rd, len) = fetch_url(&f, "HTTPS://h/x", None, Duration::from_secs(90)).unwrap();
        assert_eq!(len, Some(5));
        let mut v = Vec::new();
        rd.read_to_end(&mut v).unwrap();
        assert_eq!(v, b"hello");
        let asked = f.asked.lock().unwrap().clone();
        assert_eq!(
            asked,
            [(
                "https://h/x".to_string(),
                RequestLimits {
                    connect_timeout: MAX_CONNECT_TIMEOUT,
                    read_timeout: Duration::from_secs(90)
                }
            )]
        );
        let f = Fake::default().answer("https://h/x", 200, &[], b"hi");
        assert_eq!(
            body_of(fetch_url(&f, "https://h/x", None, Duration::from_secs(2))),
            b"hi"
        );
        assert_eq!(
            f.asked.lock().unwrap()[0].1.connect_timeout,
            Duration::from_secs(2)
        );
    }

    #[test]
    fn without_a_checksum_no_redirect_may_leave_https() {
        let f = Fake::default()
            .answer("https://a/x", 302, &[("Location", "http://b/x")], b"")
            .answer("http://b/x", 200, &[], b"evil");
        let e = err(fetch_url(&f, "https://a/x", None, T));
        assert!(
            e.starts_with("url: download of https://a/x failed:")
                && e.contains("redirects to http://b/x, which is not https://"),
            "{e}"
        );
        assert_eq!(f.asked(), ["https://a/x"]);
        // With a checksum the bytes are authenticated: http is followed.
        assert_eq!(body_of(fetch_url(&f, "https://a/x", Some(SHA), T)), b"evil");
        // Never to another scheme.
        let f = Fake::default().answer(
            "https://a/x",
            301,
            &[("location", "file:///etc/shadow")],
            b"",
        );
        let e = err(fetch_url(&f, "https://a/x", Some(SHA), T));
        assert!(e.contains("which is not http(s)"), "{e}");
    }

    #[test]
    fn redirects_are_resolved_followed_and_bounded() {
        let f = Fake::default()
            .answer("https://a/x", 301, &[("Location", "/y")], b"")
            .answer("https://a/y", 307, &[("Location", "https://b/z?q=1")], b"")
            .answer("https://b/z?q=1", 200, &[], b"image");
        assert_eq!(body_of(fetch_url(&f, "https://a/x", None, T)), b"image");
        assert_eq!(f.asked(), ["https://a/x", "https://a/y", "https://b/z?q=1"]);

        let mut f = Fake::default();
        for i in 0..=MAX_REDIRECTS {
            let next = format!("/r{}", i + 1);
            f = f.answer(&format!("https://a/r{i}"), 302, &[("Location", &next)], b"");
        }
        let e = err(fetch_url(&f, "https://a/r0", None, T));
        assert!(
            e.contains(&format!("more than {MAX_REDIRECTS} redirects")),
            "{e}"
        );
        assert_eq!(f.asked().len(), MAX_REDIRECTS + 1);

        let f = Fake::default().answer("https://a/x", 302, &[], b"not an image");
        let e = err(fetch_url(&f, "https://a/x", None, T));
        assert!(e.contains("HTTP status 302 without a Location"), "{e}");
    }

    #[test]
    fn only_a_200_answer_is_an_image() {
        for status in [204, 206, 304, 404, 500] {
            let f = Fake::default().answer("https://a/x", status, &[], b"page");
            let e = err(fetch_url(&f, "https://a/x", None, T));
            assert!(
                e.starts_with("url: download of https://a/x failed: https://a/x: HTTP status")
                    && e.contains(&status.to_string()),
                "{e}"
            );
        }
        let f = Fake::default();
        let e = err(fetch_url(&f, "https://a/x", None, T));
        assert!(e.contains("connection refused"), "{e}");
    }

    #[test]
    fn the_size_is_capped_by_the_announcement_and_the_limit() {
        let huge = (MAX_IMAGE_BYTES + 1).to_string();
        let f = Fake::default().answer("https://a/x", 200, &[("Content-Length", &huge)], b"x");
        let e = err(fetch_url(&f, "https://a/x", None, T));
        assert!(e.starts_with("url: the server announces"), "{e}");
        let f = Fake::default().answer("https://a/x", 200, &[("Content-Length", "lots")], b"x");
        let e = err(fetch_url(&f, "https://a/x", None, T));
        assert!(e.contains("is not a number"), "{e}");
        // More than announced: the read fails.
        let f = Fake::default().answer("https://a/x", 200, &[("Content-Length", "3")], b"12345");
        let (mut rd, _) = fetch_url(&f, "https://a/x", None, T).unwrap();
        let mut v = Vec::new();
        let e = rd.read_to_end(&mut v).unwrap_err();
        assert!(
            e.to_string().contains("more than the length it announced"),
            "{e}"
        );
        // Exactly as announced: fine.
        let f = Fake::default().answer("https://a/x", 200, &[("Content-Length", "5")], b"12345");
        assert_eq!(body_of(fetch_url(&f, "https://a/x", None, T)), b"12345");
    }

    /// A body whose reads time out, as a socket with a read timeout does.
    struct Stalled;
    impl Read for Stalled {
        fn read(&mut self, _: &mut [u8]) -> std::io::Result<usize> {
            Err(std::io::ErrorKind::WouldBlock.into())
        }
    }

    #[derive(Debug)]
    struct StalledDownloader;
    impl Downloader for StalledDownloader {
        fn get(&self, _: &str, _: &RequestLimits) -> Result<Response, TransportError> {
            Ok(Response {
                status: 200,
                headers: vec![],
                body: Box::new(Stalled),
            })
        }
    }

    #[test]
    fn a_read_that_times_out_says_so() {
        let (mut rd, _) = fetch_url(
            &StalledDownloader,
            "https://a/x",
            None,
            Duration::from_secs(7),
        )
        .unwrap();
        let e = rd.read(&mut [0u8; 16]).unwrap_err();
        assert_eq!(e.kind(), std::io::ErrorKind::TimedOut);
        assert!(
            e.to_string()
                .contains("sent nothing for 7 s (read timeout)"),
            "{e}"
        );
    }
}
