//! The web console's static files: one HTML page, its style sheet and its
//! JavaScript modules (`host/api/web/`), embedded in the binary and served
//! at `/` and `/ui/...` on the admin endpoint.
//!
//! They carry no data, so they answer `GET` and `HEAD` without a
//! credential (a login page must load before anyone has logged in); every
//! datum the page shows comes from the `/api/v1` routes, called by the page
//! with the session cookie and held to the route's role like any other
//! caller. Only the paths of [`ASSETS`] are public: any other path still
//! needs a credential (401 without one), so nothing else is revealed.
//!
//! Every answer of the console carries a strict Content-Security-Policy
//! (scripts, styles and connections to this origin only, no inline script
//! or style, no framing), `X-Content-Type-Options: nosniff`,
//! `Referrer-Policy: no-referrer` and `X-Frame-Options: DENY`. The files are
//! revalidated on each load (`Cache-Control: no-cache` and a strong ETag
//! made from their content), so an updated firmware's console is picked
//! up at once.

use bytes::Bytes;
use http::{header, HeaderMap, HeaderValue, Method, Response, StatusCode};
use sha2::{Digest, Sha256};
use std::sync::OnceLock;

/// The Content-Security-Policy of every console answer.
pub const CONTENT_SECURITY_POLICY: &str = "default-src 'none'; script-src 'self'; \
     style-src 'self'; img-src 'self' data:; connect-src 'self'; base-uri 'none'; \
     form-action 'self'; frame-ancestors 'none'";

/// One embedded file of the console.
#[derive(Debug)]
pub struct Asset {
    /// The path it is served at.
    pub path: &'static str,
    /// Its `Content-Type`.
    pub content_type: &'static str,
    /// Its bytes.
    pub body: &'static [u8],
}

const HTML: &str = "text/html; charset=utf-8";
const CSS: &str = "text/css; charset=utf-8";
const JS: &str = "text/javascript; charset=utf-8";
const SVG: &str = "image/svg+xml";

macro_rules! asset {
    ($path:literal, $type:expr, $file:literal) => {
        Asset {
            path: $path,
            content_type: $type,
            body: include_bytes!(concat!("../web/", $file)),
        }
    };
}

/// Every file of the console, by the path it is served at: the only paths
/// that answer without a credential besides `/healthz` and the login.
pub const ASSETS: &[Asset] = &[
    asset!("/", HTML, "index.html"),
    asset!("/ui/style.css", CSS, "style.css"),
    asset!("/ui/icon.svg", SVG, "icon.svg"),
    asset!("/ui/js/main.js", JS, "js/main.js"),
    asset!("/ui/js/api.js", JS, "js/api.js"),
    asset!("/ui/js/dom.js", JS, "js/dom.js"),
    asset!("/ui/js/session.js", JS, "js/session.js"),
    asset!("/ui/js/actions.js", JS, "js/actions.js"),
    asset!("/ui/js/pages/login.js", JS, "js/pages/login.js"),
    asset!("/ui/js/pages/overview.js", JS, "js/pages/overview.js"),
    asset!("/ui/js/pages/vms.js", JS, "js/pages/vms.js"),
    asset!("/ui/js/pages/vm_create.js", JS, "js/pages/vm_create.js"),
    asset!("/ui/js/pages/vm.js", JS, "js/pages/vm.js"),
    asset!("/ui/js/pages/console.js", JS, "js/pages/console.js"),
    asset!("/ui/js/pages/images.js", JS, "js/pages/images.js"),
    asset!("/ui/js/pages/storage.js", JS, "js/pages/storage.js"),
    asset!("/ui/js/pages/vswitches.js", JS, "js/pages/vswitches.js"),
    asset!("/ui/js/pages/plugins.js", JS, "js/pages/plugins.js"),
    asset!("/ui/js/pages/jobs.js", JS, "js/pages/jobs.js"),
    asset!("/ui/js/pages/events.js", JS, "js/pages/events.js"),
    asset!("/ui/js/pages/access.js", JS, "js/pages/access.js"),
    asset!("/ui/js/pages/account.js", JS, "js/pages/account.js"),
];

/// The asset served at `path`, if any.
pub fn find(path: &str) -> Option<&'static Asset> {
    ASSETS.iter().find(|a| a.path == path)
}

/// The strong ETag of each asset, in the order of [`ASSETS`] (hashed once).
fn etags() -> &'static [String] {
    static ETAGS: OnceLock<Vec<String>> = OnceLock::new();
    ETAGS.get_or_init(|| {
        ASSETS
            .iter()
            .map(|a| format!("\"{}\"", hex::encode(&Sha256::digest(a.body)[..12])))
            .collect()
    })
}

/// Sets the security headers every console answer carries.
pub fn add_security_headers(headers: &mut HeaderMap) {
    headers.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(CONTENT_SECURITY_POLICY),
    );
    headers.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    headers.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
    headers.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
}

/// The answer to a `GET` or `HEAD` of a console file; `None` for any other
/// method or path (the caller goes on with the API's checks).
pub fn serve(method: &Method, path: &str, request: &HeaderMap) -> Option<Response<Bytes>> {
    if method != Method::GET && method != Method::HEAD {
        return None;
    }
    let index = ASSETS.iter().position(|a| a.path == path)?;
    let asset = &ASSETS[index];
    let etag = &etags()[index];
    let fresh = request
        .get_all(header::IF_NONE_MATCH)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .any(|t| t.trim() == etag || t.trim() == "*");
    let (status, body) = if fresh {
        (StatusCode::NOT_MODIFIED, Bytes::new())
    } else if method == Method::HEAD {
        (StatusCode::OK, Bytes::new())
    } else {
        (StatusCode::OK, Bytes::from_static(asset.body))
    };
    let mut resp = Response::new(body);
    *resp.status_mut() = status;
    let h = resp.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static(asset.content_type),
    );
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    if let Ok(v) = HeaderValue::from_str(etag) {
        h.insert(header::ETAG, v);
    }
    add_security_headers(h);
    Some(resp)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_asset_has_a_distinct_path_and_a_body() {
        let mut seen = std::collections::HashSet::new();
        for a in ASSETS {
            assert!(seen.insert(a.path), "{} twice", a.path);
            assert!(!a.body.is_empty(), "{} is empty", a.path);
            assert!(a.path == "/" || a.path.starts_with("/ui/"), "{}", a.path);
        }
    }

    #[test]
    fn every_file_of_the_web_directory_is_served() {
        let web = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("web");
        let mut stack = vec![web.clone()];
        while let Some(dir) = stack.pop() {
            for e in std::fs::read_dir(&dir).unwrap() {
                let p = e.unwrap().path();
                if p.is_dir() {
                    stack.push(p);
                    continue;
                }
                let body = std::fs::read(&p).unwrap();
                assert!(
                    ASSETS.iter().any(|a| a.body == body.as_slice()),
                    "{} is not in ASSETS",
                    p.display()
                );
            }
        }
    }

    #[test]
    fn no_page_has_inline_script_or_style() {
        for a in ASSETS.iter().filter(|a| a.content_type == HTML) {
            let text = std::str::from_utf8(a.body).unwrap();
            assert!(!text.contains("<style"), "{}: inline style", a.path);
            assert!(!text.contains(" style="), "{}: style attribute", a.path);
            for (i, _) in text.match_indices("<script") {
                let tag = &text[i..i + text[i..].find('>').unwrap()];
                assert!(tag.contains(" src="), "{}: inline script {tag}", a.path);
            }
            for (i, _) in text.match_indices(" on") {
                let name: String = text[i + 3..]
                    .chars()
                    .take_while(char::is_ascii_lowercase)
                    .collect();
                let after = text[i + 3 + name.len()..].chars().next();
                assert!(
                    name.is_empty() || after != Some('='),
                    "{}: inline handler on{name}",
                    a.path
                );
            }
        }
    }

    #[test]
    fn every_module_imported_is_served() {
        for a in ASSETS.iter().filter(|a| a.content_type == JS) {
            let text = std::str::from_utf8(a.body).unwrap();
            let dir = &a.path[..a.path.rfind('/').unwrap()];
            for line in text.lines().filter(|l| l.starts_with("import ")) {
                let Some(spec) = line.split(['"', '\'']).nth(1) else {
                    continue;
                };
                let mut parts: Vec<&str> = dir.split('/').collect();
                for seg in spec.split('/') {
                    match seg {
                        "." => {}
                        ".." => {
                            parts.pop();
                        }
                        s => parts.push(s),
                    }
                }
                let target = parts.join("/");
                assert!(find(&target).is_some(), "{} imports {target}", a.path);
            }
        }
    }

    #[test]
    fn a_file_is_revalidated_by_its_etag() {
        let r = serve(&Method::GET, "/", &HeaderMap::new()).unwrap();
        assert_eq!(r.status(), StatusCode::OK);
        let etag = r.headers()[header::ETAG].clone();
        let mut h = HeaderMap::new();
        h.insert(header::IF_NONE_MATCH, etag);
        let r = serve(&Method::GET, "/", &h).unwrap();
        assert_eq!(r.status(), StatusCode::NOT_MODIFIED);
        assert!(r.body().is_empty());
        assert!(serve(&Method::POST, "/", &HeaderMap::new()).is_none());
        assert!(serve(&Method::GET, "/ui/nope.js", &HeaderMap::new()).is_none());
    }
}
