//! Credentials as HTTP carries them: the `Authorization: Bearer` header,
//! the web console's session cookie and its CSRF header. Who a credential
//! belongs to is the core's to say ([`nasvisor_api_types::Core::authenticate`]).
//!
//! The session cookie is `HttpOnly; Secure; SameSite=Strict`; a request
//! authenticated by it that changes anything must also carry the session's
//! CSRF token in `X-CSRF-Token` (a request with a bearer header needs none:
//! a browser never adds that header on its own).

use http::header::{AUTHORIZATION, COOKIE};
use http::{HeaderMap, HeaderValue};
use nasvisor_api_types::{ApiError, Caller, Credential, CredentialKind};
use subtle::ConstantTimeEq;

/// Name of the session cookie.
pub const SESSION_COOKIE: &str = "nasvisor_session";
/// Header carrying the CSRF token of a cookie session.
pub const CSRF_HEADER: &str = "x-csrf-token";

/// The credential a request carries: the bearer header first, else the
/// session cookie. `Err` when the header is there but not `Bearer <x>`.
pub fn credential(headers: &HeaderMap) -> Result<Option<Credential<'_>>, ApiError> {
    if let Some(v) = headers.get(AUTHORIZATION) {
        let v = v
            .to_str()
            .map_err(|_| unauthorized("the Authorization header is not text"))?;
        let (scheme, token) = v
            .split_once(' ')
            .ok_or_else(|| unauthorized("the Authorization header must be `Bearer <token>`"))?;
        if !scheme.eq_ignore_ascii_case("bearer") {
            return Err(unauthorized(
                "the Authorization header must be `Bearer <token>`",
            ));
        }
        return Ok(Some(Credential::Bearer(token.trim())));
    }
    Ok(session_cookie(headers).map(Credential::Cookie))
}

/// The session cookie's value, if the request has one.
pub fn session_cookie(headers: &HeaderMap) -> Option<&str> {
    headers
        .get_all(COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(name, _)| *name == SESSION_COOKIE)
        .map(|(_, value)| value.trim())
        .filter(|v| !v.is_empty())
}

/// A 401 with `field: authorization`.
pub fn unauthorized(reason: impl Into<String>) -> ApiError {
    ApiError {
        status: http::StatusCode::UNAUTHORIZED,
        field: Some("authorization".into()),
        reason: reason.into(),
    }
}

/// Checks the CSRF header of a change made with the session cookie.
pub fn check_csrf(
    caller: &Caller,
    by_cookie: bool,
    change: bool,
    headers: &HeaderMap,
) -> Result<(), ApiError> {
    if !by_cookie || !change || caller.via != CredentialKind::Session {
        return Ok(());
    }
    let want = caller.csrf.as_deref().unwrap_or_default();
    let given = headers
        .get(CSRF_HEADER)
        .map(|v| v.as_bytes())
        .unwrap_or_default();
    if !want.is_empty() && bool::from(given.ct_eq(want.as_bytes())) {
        Ok(())
    } else {
        Err(ApiError {
            status: http::StatusCode::FORBIDDEN,
            field: Some(CSRF_HEADER.into()),
            reason: "a change made with the session cookie needs the session's CSRF token in \
                     the X-CSRF-Token header"
                .into(),
        })
    }
}

/// `Set-Cookie` for a new session: a browser-session cookie (gone when
/// the browser closes); the server ends the session itself at its deadline
/// or when idle.
pub fn session_set_cookie(token: &str) -> Option<HeaderValue> {
    HeaderValue::from_str(&format!(
        "{SESSION_COOKIE}={token}; Path=/; HttpOnly; Secure; SameSite=Strict"
    ))
    .ok()
}

/// `Set-Cookie` that removes the session cookie.
pub fn session_clear_cookie() -> HeaderValue {
    HeaderValue::from_static(
        "nasvisor_session=; Path=/; Max-Age=0; HttpOnly; Secure; SameSite=Strict",
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use nasvisor_api_types::Role;

    fn headers(pairs: &[(&'static str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.append(*k, HeaderValue::from_str(v).unwrap());
        }
        h
    }

    #[test]
    fn bearer_first_then_the_session_cookie() {
        let h = headers(&[
            ("authorization", "Bearer abc"),
            ("cookie", "nasvisor_session=s"),
        ]);
        assert_eq!(credential(&h).unwrap(), Some(Credential::Bearer("abc")));
        let h = headers(&[("cookie", "a=1; nasvisor_session=nvs_x; b=2")]);
        assert_eq!(credential(&h).unwrap(), Some(Credential::Cookie("nvs_x")));
        assert_eq!(credential(&headers(&[])).unwrap(), None);
        assert_eq!(
            credential(&headers(&[("cookie", "nasvisor_session=")])).unwrap(),
            None
        );
        let e = credential(&headers(&[("authorization", "Basic abc")])).unwrap_err();
        assert_eq!(e.status, http::StatusCode::UNAUTHORIZED);
        assert!(e.reason.contains("Bearer"), "{e}");
    }

    #[test]
    fn a_cookie_change_needs_the_csrf_header() {
        let caller = Caller {
            user: "u".into(),
            role: Role::Admin,
            via: CredentialKind::Session,
            credential: "c".into(),
            expires_at: None,
            csrf: Some("tok".into()),
        };
        let none = headers(&[]);
        let wrong = headers(&[("x-csrf-token", "nope")]);
        let right = headers(&[("x-csrf-token", "tok")]);
        assert!(
            check_csrf(&caller, true, false, &none).is_ok(),
            "reads need none"
        );
        assert!(
            check_csrf(&caller, false, true, &none).is_ok(),
            "bearer needs none"
        );
        assert_eq!(
            check_csrf(&caller, true, true, &none).unwrap_err().status,
            http::StatusCode::FORBIDDEN
        );
        assert!(check_csrf(&caller, true, true, &wrong).is_err());
        assert!(check_csrf(&caller, true, true, &right).is_ok());
    }

    #[test]
    fn the_session_cookie_is_httponly_secure_strict() {
        let c = session_set_cookie("nvs_x").unwrap();
        let c = c.to_str().unwrap();
        assert!(c.starts_with("nasvisor_session=nvs_x;"), "{c}");
        for part in ["HttpOnly", "Secure", "SameSite=Strict", "Path=/"] {
            assert!(c.contains(part), "{c}");
        }
    }
}
