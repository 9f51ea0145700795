//! Checks of request fields that need no core state. A request that fails
//! one never reaches the core; every error names the field.

use crate::body::{MAX_MEMORY_MIB, MAX_SSH_KEY_BYTES, MAX_VCPUS, MAX_VOLUME_MIB, MIN_MEMORY_MIB};
use crate::error::ApiError;

/// What a log shows of a secret: that it is there, not what it is.
pub const REDACTED: &str = "<redacted>";

/// Checks of a request body that need no core state.
pub trait Validate {
    /// `Err` names the first bad field.
    fn validate(&self) -> Result<(), ApiError>;
}

/// Checks an object name (also used for ids in paths): 1-64 of
/// `[A-Za-z0-9._-]`, starting with a letter or digit.
pub fn check_name(field: &str, name: &str) -> Result<(), ApiError> {
    if name.is_empty() || name.len() > 64 {
        return Err(ApiError::field(field, "must be 1 to 64 characters"));
    }
    if !name.as_bytes()[0].is_ascii_alphanumeric() {
        return Err(ApiError::field(
            field,
            "must start with a letter or a digit",
        ));
    }
    if let Some(c) = name
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-')))
    {
        return Err(ApiError::field(
            field,
            format!("character {c:?} not allowed; use A-Z a-z 0-9 . _ -"),
        ));
    }
    Ok(())
}

pub fn check_vcpus(field: &str, v: u32) -> Result<(), ApiError> {
    if !(1..=MAX_VCPUS).contains(&v) {
        return Err(ApiError::field(
            field,
            format!("must be 1 to {MAX_VCPUS}, got {v}"),
        ));
    }
    Ok(())
}

pub fn check_memory(field: &str, v: u64) -> Result<(), ApiError> {
    if !(MIN_MEMORY_MIB..=MAX_MEMORY_MIB).contains(&v) {
        return Err(ApiError::field(
            field,
            format!("must be {MIN_MEMORY_MIB} to {MAX_MEMORY_MIB} MiB, got {v}"),
        ));
    }
    Ok(())
}

pub fn check_size(field: &str, v: u64) -> Result<(), ApiError> {
    if !(1..=MAX_VOLUME_MIB).contains(&v) {
        return Err(ApiError::field(
            field,
            format!("must be 1 to {MAX_VOLUME_MIB} MiB, got {v}"),
        ));
    }
    Ok(())
}

pub fn check_description(field: &str, d: &str) -> Result<(), ApiError> {
    if d.len() > 1024 {
        return Err(ApiError::field(field, "must be at most 1024 bytes"));
    }
    if d.chars().any(|c| c.is_control() && c != '\n' && c != '\t') {
        return Err(ApiError::field(
            field,
            "must not contain control characters",
        ));
    }
    Ok(())
}

/// Checks a MAC address: six colon-separated hex octets, unicast, not all zero.
pub fn check_mac(field: &str, mac: &str) -> Result<(), ApiError> {
    let octets: Vec<&str> = mac.split(':').collect();
    let ok = octets.len() == 6
        && octets
            .iter()
            .all(|o| o.len() == 2 && o.bytes().all(|b| b.is_ascii_hexdigit()));
    if !ok {
        return Err(ApiError::field(
            field,
            "must be six hex octets like 52:54:00:12:34:56",
        ));
    }
    let bytes: Vec<u8> = octets
        .iter()
        .map(|o| u8::from_str_radix(o, 16).unwrap_or(0))
        .collect();
    if bytes[0] & 1 == 1 {
        return Err(ApiError::field(
            field,
            "must be a unicast address (first octet even)",
        ));
    }
    if bytes.iter().all(|b| *b == 0) {
        return Err(ApiError::field(field, "must not be all zero"));
    }
    Ok(())
}

/// Checks an absolute, normalized path (no `..`, no NUL).
pub fn check_abs_path(field: &str, p: &str) -> Result<(), ApiError> {
    if !p.starts_with('/') {
        return Err(ApiError::field(field, "must be an absolute path"));
    }
    if p.len() > 4096 || p.contains('\0') {
        return Err(ApiError::field(
            field,
            "must be at most 4096 bytes without NUL",
        ));
    }
    if p.split('/').any(|s| s == "..") {
        return Err(ApiError::field(field, "must not contain '..'"));
    }
    Ok(())
}

/// Checks an RFC 1123 host name: dot-separated labels of 1-63 letters,
/// digits and `-` (not first or last), at most 253 bytes in all.
pub fn check_hostname(field: &str, h: &str) -> Result<(), ApiError> {
    if h.is_empty() || h.len() > 253 {
        return Err(ApiError::field(field, "must be 1 to 253 characters"));
    }
    for label in h.split('.') {
        if label.is_empty() || label.len() > 63 {
            return Err(ApiError::field(
                field,
                "each dot-separated label must be 1 to 63 characters",
            ));
        }
        if let Some(c) = label
            .chars()
            .find(|c| !(c.is_ascii_alphanumeric() || *c == '-'))
        {
            return Err(ApiError::field(
                field,
                format!("character {c:?} not allowed; use a-z 0-9 - and dots between labels"),
            ));
        }
        if label.starts_with('-') || label.ends_with('-') {
            return Err(ApiError::field(
                field,
                "a label must not start or end with '-'",
            ));
        }
    }
    Ok(())
}

/// Checks a POSIX user or group name: `^[a-z_][a-z0-9_-]{0,31}$`.
pub fn check_user_name(field: &str, n: &str) -> Result<(), ApiError> {
    if n.is_empty() || n.len() > 32 {
        return Err(ApiError::field(field, "must be 1 to 32 characters"));
    }
    let b = n.as_bytes();
    if !(b[0].is_ascii_lowercase() || b[0] == b'_') {
        return Err(ApiError::field(
            field,
            "must start with a lower-case letter or '_'",
        ));
    }
    if let Some(c) = n
        .chars()
        .find(|c| !(c.is_ascii_lowercase() || c.is_ascii_digit() || matches!(c, '_' | '-')))
    {
        return Err(ApiError::field(
            field,
            format!("character {c:?} not allowed; use a-z 0-9 _ -"),
        ));
    }
    Ok(())
}

pub fn check_ssh_key(field: &str, k: &str) -> Result<(), ApiError> {
    if k.is_empty() || k.len() > MAX_SSH_KEY_BYTES {
        return Err(ApiError::field(
            field,
            format!("must be 1 to {MAX_SSH_KEY_BYTES} bytes"),
        ));
    }
    if k.contains(['\n', '\r', '\0']) {
        return Err(ApiError::field(field, "must be a single line"));
    }
    if !(k.starts_with("ssh-") || k.starts_with("ecdsa-") || k.starts_with("sk-")) {
        return Err(ApiError::field(
            field,
            "must be an OpenSSH public key line starting with ssh-, ecdsa- or sk-",
        ));
    }
    Ok(())
}

pub fn check_password_hash(field: &str, h: &str) -> Result<(), ApiError> {
    if !h.starts_with('$') || h.len() < 2 || h.len() > 512 {
        return Err(ApiError::field(
            field,
            "must be a crypt(3) hash like $6$salt$hash (not a clear-text password)",
        ));
    }
    if h.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return Err(ApiError::field(
            field,
            "must not contain whitespace or control characters",
        ));
    }
    Ok(())
}

/// Checks a Debian package name: `^[a-z0-9][a-z0-9+.-]+$`.
pub fn check_package(field: &str, p: &str) -> Result<(), ApiError> {
    if p.len() < 2 || p.len() > 128 {
        return Err(ApiError::field(field, "must be 2 to 128 characters"));
    }
    if !(p.as_bytes()[0].is_ascii_lowercase() || p.as_bytes()[0].is_ascii_digit()) {
        return Err(ApiError::field(
            field,
            "must start with a lower-case letter or a digit",
        ));
    }
    if let Some(c) = p
        .chars()
        .find(|c| !(c.is_ascii_lowercase() || c.is_ascii_digit() || matches!(c, '+' | '.' | '-')))
    {
        return Err(ApiError::field(
            field,
            format!("character {c:?} not allowed; use a-z 0-9 + . -"),
        ));
    }
    Ok(())
}

/// Checks an address with prefix length, `192.0.2.10/24` or `2001:db8::5/64`.
pub fn check_cidr(field: &str, a: &str) -> Result<(), ApiError> {
    let bad = || {
        ApiError::field(
            field,
            format!(
                "{a:?} is not an address with prefix length like 192.0.2.10/24 or 2001:db8::5/64"
            ),
        )
    };
    let (ip, prefix) = a.split_once('/').ok_or_else(bad)?;
    let ip: std::net::IpAddr = ip.parse().map_err(|_| bad())?;
    if prefix.is_empty() || !prefix.bytes().all(|b| b.is_ascii_digit()) || prefix.len() > 3 {
        return Err(bad());
    }
    let prefix: u32 = prefix.parse().map_err(|_| bad())?;
    let max = if ip.is_ipv4() { 32 } else { 128 };
    if prefix > max {
        return Err(ApiError::field(
            field,
            format!("prefix length must be at most {max}, got {prefix}"),
        ));
    }
    Ok(())
}

pub fn check_timezone(field: &str, t: &str) -> Result<(), ApiError> {
    if t.is_empty() || t.len() > 64 {
        return Err(ApiError::field(field, "must be 1 to 64 characters"));
    }
    if let Some(c) = t
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '_' | '+' | '/' | '-')))
    {
        return Err(ApiError::field(
            field,
            format!("character {c:?} not allowed; use a zone name like Europe/Berlin"),
        ));
    }
    if t.starts_with('/') || t.split('/').any(|p| p.is_empty()) {
        return Err(ApiError::field(
            field,
            "must be a zone name like Europe/Berlin",
        ));
    }
    Ok(())
}

/// Checks an image's ready marker: 1 to 128 printable ASCII characters.
pub fn check_ready_marker(field: &str, m: &str) -> Result<(), ApiError> {
    if m.is_empty() || m.len() > 128 {
        return Err(ApiError::field(field, "must be 1 to 128 characters"));
    }
    if !m.bytes().all(|b| (0x20..0x7f).contains(&b)) {
        return Err(ApiError::field(
            field,
            "must be printable ASCII (space to ~)",
        ));
    }
    Ok(())
}
