//! Validation of every request field that reaches the guest.
//!
//! Each check returns an `invalid-input` [`PluginError`] whose message starts
//! with the field's name (`hostname`, `users[0].name`, `nics[1].mac`, ...) and
//! says what is wrong. Values are checked strictly (allow-lists, not
//! deny-lists), so that what is written into the seed is known to be sane
//! even before it is quoted.

use std::net::{IpAddr, Ipv4Addr};

use nasvisor_plugin_sdk::prelude::*;

/// An `invalid-input` error about `field`.
pub fn invalid(field: &str, msg: impl std::fmt::Display) -> PluginError {
    PluginError::new(ErrorCode::InvalidInput, format!("{field}: {msg}"))
}

/// `s` for a message: quoted, shortened to 80 characters.
pub fn show(s: &str) -> String {
    if s.chars().count() > 80 {
        let short: String = s.chars().take(77).collect();
        format!("{:?}...", short)
    } else {
        format!("{s:?}")
    }
}

/// An RFC 1123 host name: at most 253 characters; dot-separated labels of 1
/// to 63 characters from `a-z`, `0-9` and `-`, not starting or ending with
/// `-`; the last label not all digits (so it cannot be an IPv4 address).
/// Upper case is refused (host names are lower case in the guest).
pub fn hostname(field: &str, s: &str) -> Result<(), PluginError> {
    if s.is_empty() {
        return Err(invalid(field, "must not be empty"));
    }
    if s.len() > 253 {
        return Err(invalid(
            field,
            format!("is {} characters long, more than 253", s.len()),
        ));
    }
    if s.bytes().any(|b| b.is_ascii_uppercase()) {
        return Err(invalid(
            field,
            format!("{} has upper-case letters; use lower case", show(s)),
        ));
    }
    let labels: Vec<&str> = s.split('.').collect();
    for l in &labels {
        if l.is_empty() {
            return Err(invalid(
                field,
                format!(
                    "{} has an empty label (leading, trailing or double dot)",
                    show(s)
                ),
            ));
        }
        if l.len() > 63 {
            return Err(invalid(
                field,
                format!(
                    "label {} is {} characters long, more than 63",
                    show(l),
                    l.len()
                ),
            ));
        }
        if let Some(c) = l
            .chars()
            .find(|c| !(c.is_ascii_lowercase() || c.is_ascii_digit() || *c == '-'))
        {
            return Err(invalid(
                field,
                format!(
                    "{} contains {:?}; only a-z, 0-9, '-' and '.' are allowed",
                    show(s),
                    c
                ),
            ));
        }
        if l.starts_with('-') || l.ends_with('-') {
            return Err(invalid(
                field,
                format!("label {} starts or ends with '-'", show(l)),
            ));
        }
    }
    if labels
        .last()
        .is_some_and(|l| l.bytes().all(|b| b.is_ascii_digit()))
    {
        return Err(invalid(
            field,
            format!("{} looks like an IP address, not a host name", show(s)),
        ));
    }
    Ok(())
}

/// A Linux user or group name: `[a-z_][a-z0-9_-]{0,31}`.
pub fn account_name(field: &str, s: &str) -> Result<(), PluginError> {
    let mut chars = s.chars();
    let ok = match chars.next() {
        Some(c) if c.is_ascii_lowercase() || c == '_' => {
            s.len() <= 32
                && chars
                    .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_' || c == '-')
        }
        _ => false,
    };
    if ok {
        Ok(())
    } else {
        Err(invalid(
            field,
            format!(
                "{} is not a valid name (a-z or _ first, then up to 31 of a-z, 0-9, _, -)",
                show(s)
            ),
        ))
    }
}

/// A login shell: an absolute path of at most 255 characters from
/// `A-Za-z0-9/._+-`, without `..` components.
pub fn shell(field: &str, s: &str) -> Result<(), PluginError> {
    let ok = s.starts_with('/')
        && s.len() <= 255
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || "/._+-".contains(c))
        && !s.split('/').any(|p| p == "..");
    if ok {
        Ok(())
    } else {
        Err(invalid(
            field,
            format!(
                "{} is not an absolute path to a shell (e.g. \"/bin/bash\")",
                show(s)
            ),
        ))
    }
}

/// SSH public key types accepted in `authorized_keys`.
pub const SSH_KEY_TYPES: &[&str] = &[
    "ssh-ed25519",
    "ssh-rsa",
    "ecdsa-sha2-nistp256",
    "ecdsa-sha2-nistp384",
    "ecdsa-sha2-nistp521",
    "sk-ssh-ed25519@openssh.com",
    "sk-ecdsa-sha2-nistp256@openssh.com",
];

/// Decode standard base64 (with `=` padding, length a multiple of 4).
fn base64_decode(s: &str) -> Option<Vec<u8>> {
    fn val(c: u8) -> Option<u32> {
        match c {
            b'A'..=b'Z' => Some(u32::from(c - b'A')),
            b'a'..=b'z' => Some(u32::from(c - b'a') + 26),
            b'0'..=b'9' => Some(u32::from(c - b'0') + 52),
            b'+' => Some(62),
            b'/' => Some(63),
            _ => None,
        }
    }
    let b = s.as_bytes();
    if b.is_empty() || !b.len().is_multiple_of(4) {
        return None;
    }
    let mut out = Vec::with_capacity(b.len() / 4 * 3);
    for (i, chunk) in b.chunks(4).enumerate() {
        let last = i == b.len() / 4 - 1;
        let pad = chunk.iter().rev().take_while(|c| **c == b'=').count();
        if pad > 2 || (pad > 0 && !last) {
            return None;
        }
        let mut n = 0u32;
        for (j, c) in chunk.iter().enumerate() {
            let v = if j >= 4 - pad { 0 } else { val(*c)? };
            n = (n << 6) | v;
        }
        let bytes = [(n >> 16) as u8, (n >> 8) as u8, n as u8];
        out.extend_from_slice(&bytes[..3 - pad]);
    }
    Some(out)
}

/// An OpenSSH public key line: `type base64 [comment]`, where the type is one
/// of [`SSH_KEY_TYPES`], the base64 blob decodes and starts with the same
/// type name, and nothing is a control character (a line break would add a
/// second, unchecked key). Options before the type are not supported.
pub fn ssh_key(field: &str, s: &str) -> Result<(), PluginError> {
    if s.len() > 16 * 1024 {
        return Err(invalid(field, "is longer than 16 KiB"));
    }
    if let Some(c) = s
        .chars()
        .find(|c| c.is_control() || *c == '\u{2028}' || *c == '\u{2029}')
    {
        return Err(invalid(
            field,
            format!(
                "contains the control character U+{:04X}; one key per entry",
                c as u32
            ),
        ));
    }
    let mut parts = s.split_whitespace();
    let ty = parts.next().unwrap_or("");
    if !SSH_KEY_TYPES.contains(&ty) {
        return Err(invalid(
            field,
            format!(
                "{} does not start with a supported key type ({}); options before the key are not supported",
                show(s),
                SSH_KEY_TYPES.join(", ")
            ),
        ));
    }
    let blob = parts.next().unwrap_or("");
    let data = base64_decode(blob)
        .ok_or_else(|| invalid(field, format!("the {ty} key data is not valid base64")))?;
    let inner = data
        .get(..4)
        .map(|l| u32::from_be_bytes([l[0], l[1], l[2], l[3]]) as usize)
        .and_then(|n| data.get(4..4 + n));
    if inner != Some(ty.as_bytes()) {
        return Err(invalid(field, format!("the key data is not a {ty} key")));
    }
    Ok(())
}

/// Characters of crypt(3) salts and hashes.
fn crypt_chars(s: &str) -> bool {
    !s.is_empty()
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'.' || b == b'/')
}

/// A crypt(3) password hash, never a clear-text password. Accepted schemes:
/// SHA-512 `$6$[rounds=N$]salt$hash` (86-character hash), SHA-256 `$5$`
/// (43), yescrypt `$y$params$salt$hash` and gost-yescrypt `$gy$` (43), scrypt
/// `$7$params-and-salt$hash` (43), bcrypt `$2a$`/`$2b$`/`$2y$` with a
/// two-digit cost and 53 characters. MD5 (`$1$`) and DES are refused as too
/// weak.
pub fn password_hash(field: &str, s: &str) -> Result<(), PluginError> {
    let bad = || {
        invalid(
            field,
            "is not a crypt(3) password hash ($6$, $5$, $y$, $gy$, $7$ or $2b$); never send a clear-text password \
             (make one with `mkpasswd -m yescrypt` or `openssl passwd -6`)",
        )
    };
    if s.len() > 512 || !s.starts_with('$') {
        return Err(bad());
    }
    let fields: Vec<&str> = s[1..].split('$').collect();
    let ok = match fields.as_slice() {
        ["6", rest @ ..] | ["5", rest @ ..] => {
            let hash_len = if fields[0] == "6" { 86 } else { 43 };
            let rest = match rest {
                [r, tail @ ..] if r.starts_with("rounds=") => {
                    let n = &r["rounds=".len()..];
                    if n.is_empty() || n.len() > 10 || !n.bytes().all(|b| b.is_ascii_digit()) {
                        return Err(bad());
                    }
                    tail
                }
                _ => rest,
            };
            matches!(rest, [salt, hash] if salt.len() <= 16 && crypt_chars(salt) && hash.len() == hash_len && crypt_chars(hash))
        }
        ["y" | "gy", params, salt, hash] => {
            crypt_chars(params) && crypt_chars(salt) && hash.len() == 43 && crypt_chars(hash)
        }
        ["7", salt, hash] => crypt_chars(salt) && hash.len() == 43 && crypt_chars(hash),
        ["2a" | "2b" | "2y", cost, hash] => {
            cost.len() == 2
                && cost.parse::<u8>().is_ok_and(|c| (4..=31).contains(&c))
                && hash.len() == 53
                && crypt_chars(hash)
        }
        _ => false,
    };
    if ok {
        Ok(())
    } else {
        Err(bad())
    }
}

/// An IPv4 address in dotted-quad form (no leading zeros).
pub fn ipv4(field: &str, s: &str) -> Result<Ipv4Addr, PluginError> {
    s.parse::<Ipv4Addr>()
        .map_err(|_| invalid(field, format!("{} is not an IPv4 address", show(s))))
}

/// An IPv4 or IPv6 address.
pub fn ip(field: &str, s: &str) -> Result<IpAddr, PluginError> {
    s.parse::<IpAddr>()
        .map_err(|_| invalid(field, format!("{} is not an IP address", show(s))))
}

/// A host address with its prefix, from [`cidr`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Cidr {
    /// The address.
    pub addr: IpAddr,
    /// The prefix length.
    pub prefix: u8,
}

impl Cidr {
    /// Whether `other` is in this address's IPv4 subnet.
    pub fn contains_v4(&self, other: Ipv4Addr) -> bool {
        match self.addr {
            IpAddr::V4(a) => {
                let mask = if self.prefix == 0 {
                    0
                } else {
                    u32::MAX << (32 - u32::from(self.prefix))
                };
                u32::from(a) & mask == u32::from(other) & mask
            }
            IpAddr::V6(_) => false,
        }
    }
}

impl std::fmt::Display for Cidr {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.addr, self.prefix)
    }
}

/// A host address in CIDR form, IPv4 (`192.0.2.10/24`, prefix 1 to 32) or
/// IPv6 (`2001:db8::10/64`, prefix 1 to 128). Unspecified, loopback,
/// multicast and broadcast addresses are refused.
pub fn cidr(field: &str, s: &str) -> Result<Cidr, PluginError> {
    let (a, p) = s.split_once('/').ok_or_else(|| {
        invalid(
            field,
            format!(
                "{} is not in CIDR form (address/prefix, e.g. 192.0.2.10/24)",
                show(s)
            ),
        )
    })?;
    let addr = ip(field, a)?;
    let max = if addr.is_ipv4() { 32 } else { 128 };
    let prefix = (!p.is_empty() && p.len() <= 3 && p.bytes().all(|b| b.is_ascii_digit()))
        .then(|| p.parse::<u8>().ok())
        .flatten()
        .filter(|n| (1..=max).contains(n))
        .ok_or_else(|| {
            invalid(
                field,
                format!("{} has an invalid prefix length (1 to {max})", show(s)),
            )
        })?;
    let special = match addr {
        IpAddr::V4(v) => {
            v.is_unspecified() || v.is_loopback() || v.is_multicast() || v.is_broadcast()
        }
        IpAddr::V6(v) => v.is_unspecified() || v.is_loopback() || v.is_multicast(),
    };
    if special {
        return Err(invalid(
            field,
            format!("{} is not a usable host address", show(s)),
        ));
    }
    Ok(Cidr { addr, prefix })
}

/// A unicast MAC address `aa:bb:cc:dd:ee:ff` (either case); returned in lower
/// case.
pub fn mac(field: &str, s: &str) -> Result<String, PluginError> {
    let parts: Vec<&str> = s.split(':').collect();
    let ok = parts.len() == 6
        && parts
            .iter()
            .all(|p| p.len() == 2 && p.bytes().all(|b| b.is_ascii_hexdigit()));
    if !ok {
        return Err(invalid(
            field,
            format!(
                "{} is not a MAC address of the form aa:bb:cc:dd:ee:ff",
                show(s)
            ),
        ));
    }
    let first = u8::from_str_radix(parts[0], 16).unwrap_or(1);
    if first & 1 == 1 {
        return Err(invalid(
            field,
            format!("{} is a multicast address, not a NIC's", show(s)),
        ));
    }
    Ok(s.to_ascii_lowercase())
}

/// A package name: `[A-Za-z0-9][A-Za-z0-9+._:-]{0,127}` (Debian and RPM
/// names, with an optional `:arch`).
pub fn package(field: &str, s: &str) -> Result<(), PluginError> {
    let ok = s.len() <= 128
        && s.bytes().next().is_some_and(|b| b.is_ascii_alphanumeric())
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"+._:-".contains(&b));
    if ok {
        Ok(())
    } else {
        Err(invalid(field, format!("{} is not a package name", show(s))))
    }
}

/// A time zone name such as `UTC`, `Europe/Paris` or `Etc/GMT+5`: 1 to 64
/// characters from `A-Za-z0-9_+-/`, not starting or ending with `/`, no empty
/// or `..` component.
pub fn timezone(field: &str, s: &str) -> Result<(), PluginError> {
    let ok = !s.is_empty()
        && s.len() <= 64
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"_+-/".contains(&b))
        && s.split('/').all(|p| !p.is_empty() && p != "." && p != "..");
    if ok {
        Ok(())
    } else {
        Err(invalid(
            field,
            format!(
                "{} is not a time zone name (e.g. \"Europe/Paris\")",
                show(s)
            ),
        ))
    }
}

/// A ready marker: 1 to 200 printable ASCII characters, not blank.
pub fn marker(s: &str) -> Result<(), String> {
    if s.trim().is_empty() {
        Err("must not be empty".into())
    } else if s.len() > 200 {
        Err(format!("is {} characters long, more than 200", s.len()))
    } else if !s.bytes().all(|b| (b' '..=b'~').contains(&b)) {
        Err(format!("{} must be printable ASCII on one line", show(s)))
    } else {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testutil::*;

    fn msg(r: Result<impl std::fmt::Debug, PluginError>) -> String {
        let e = r.unwrap_err();
        assert_eq!(e.code, ErrorCode::InvalidInput);
        e.message
    }

    #[test]
    fn hostnames() {
        for ok in [
            "web01",
            "a",
            "web-01.example.com",
            "x1.y2",
            &"a".repeat(63),
            "0a",
            "123abc",
        ] {
            hostname("hostname", ok).unwrap_or_else(|e| panic!("{ok}: {e}"));
        }
        let long = format!(
            "{}.{}.{}.{}",
            "a".repeat(63),
            "b".repeat(63),
            "c".repeat(63),
            "d".repeat(63)
        );
        for (bad, why) in [
            ("", "must not be empty"),
            ("-web", "starts or ends with '-'"),
            ("web-", "starts or ends with '-'"),
            ("a..b", "empty label"),
            (".a", "empty label"),
            ("a.", "empty label"),
            ("Web01", "upper-case"),
            ("web_01", "contains '_'"),
            ("web 01", "contains ' '"),
            ("web\n01", "contains '\\n'"),
            ("wéb", "contains 'é'"),
            ("1.2.3.4", "looks like an IP address"),
            (&"a".repeat(64), "more than 63"),
            (&long, "more than 253"),
        ] {
            let m = msg(hostname("hostname", bad));
            assert!(
                m.starts_with("hostname: ") && m.contains(why),
                "{bad:?}: {m}"
            );
        }
    }

    #[test]
    fn account_names() {
        for ok in ["alice", "_svc", "a", "bob-2", "x_y", &"a".repeat(32)] {
            account_name("users[0].name", ok).unwrap();
        }
        for bad in [
            "",
            "Alice",
            "1bob",
            "-x",
            "a b",
            "a:b",
            "a\nb",
            "ä",
            &"a".repeat(33),
            "root$",
        ] {
            let m = msg(account_name("users[0].name", bad));
            assert!(m.starts_with("users[0].name: "), "{m}");
        }
    }

    #[test]
    fn shells() {
        for ok in [
            "/bin/bash",
            "/usr/bin/zsh",
            "/bin/sh",
            "/usr/local/bin/fish-3.7",
        ] {
            shell("s", ok).unwrap();
        }
        for bad in [
            "bash",
            "/bin/ba sh",
            "/bin/../etc/x",
            "/bin/bash\n",
            "",
            "/bin/$x",
        ] {
            assert!(shell("s", bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn ssh_keys() {
        for k in [ED25519, RSA, ECDSA256, ECDSA384, ECDSA256_NO_COMMENT] {
            ssh_key("k", k).unwrap_or_else(|e| panic!("{k}: {e}"));
        }
        let with_hostile_comment = format!("{ED25519} \"quoted\": # not a comment {{x}}");
        ssh_key("k", &with_hostile_comment).unwrap();
        let cases: Vec<(String, &str)> = vec![
            ("ssh-dss AAAAB3NzaC1kc3M=".into(), "supported key type"),
            (
                "from=\"10.0.0.1\" ssh-ed25519 AAAA".into(),
                "options before the key",
            ),
            ("ssh-ed25519".into(), "not valid base64"),
            ("ssh-ed25519 not!base64".into(), "not valid base64"),
            (
                "ssh-ed25519 AAAAB3NzaC1yc2EAAAADAQABAAABAQDU".into(),
                "not a ssh-ed25519 key",
            ),
            (
                ED25519.replacen("ssh-ed25519", "ssh-rsa", 1),
                "not a ssh-rsa key",
            ),
            (format!("{ED25519}\n{RSA}"), "control character U+000A"),
            (format!("{ED25519} a\u{2028}b"), "control character U+2028"),
            ("password123".into(), "supported key type"),
            ("".into(), "supported key type"),
        ];
        for (k, why) in cases {
            let m = msg(ssh_key("users[1].ssh-authorized-keys[0]", &k));
            assert!(
                m.starts_with("users[1].ssh-authorized-keys[0]: ") && m.contains(why),
                "{k:?}: {m}"
            );
        }
    }

    #[test]
    fn base64() {
        assert_eq!(base64_decode("aGVsbG8=").unwrap(), b"hello");
        assert_eq!(base64_decode("aGVsbG8h").unwrap(), b"hello!");
        assert_eq!(base64_decode("aGk=").unwrap(), b"hi");
        assert_eq!(base64_decode("aA==").unwrap(), b"h");
        for bad in ["", "a", "aGk", "a===", "aG=k", "aA==aA==", "aGk*"] {
            assert!(base64_decode(bad).is_none(), "{bad}");
        }
    }

    #[test]
    fn password_hashes() {
        for h in [
            SHA512_HASH,
            SHA256_HASH,
            SHA512_ROUNDS_HASH,
            YESCRYPT_HASH,
            GOST_YESCRYPT_HASH,
            SCRYPT_HASH,
            BCRYPT_HASH,
        ] {
            password_hash("p", h).unwrap_or_else(|e| panic!("{h}: {e}"));
        }
        for bad in [
            "hunter2",
            "$6$hunter2",
            "$6$salt$short",
            "$1$abc$iCQ2D3nhptRYi27fDYv2s1",
            "abJnggxhB/yWI",
            "!",
            "*",
            "",
            "$6$rounds=$saltsalt$x",
            &format!("{SHA512_HASH}\nroot::0:0"),
            &format!("{YESCRYPT_HASH} "),
            "$2b$99$4g72IA9AnL7FOSir1SOS4OWmFo5DV08wY7rASofty1H02wAVlVnlC",
            "$y$j9T$salt$tooshort",
        ] {
            let m = msg(password_hash("users[0].password-hash", bad));
            assert!(
                m.contains("never send a clear-text password"),
                "{bad:?}: {m}"
            );
        }
    }

    #[test]
    fn addresses() {
        assert_eq!(
            cidr("a", "192.0.2.10/24").unwrap().to_string(),
            "192.0.2.10/24"
        );
        assert_eq!(
            cidr("a", "2001:DB8::10/64").unwrap().to_string(),
            "2001:db8::10/64"
        );
        assert_eq!(cidr("a", "10.0.0.1/32").unwrap().prefix, 32);
        for (bad, why) in [
            ("192.0.2.10", "CIDR form"),
            ("192.0.2.10/33", "prefix length (1 to 32)"),
            ("192.0.2.10/0", "prefix"),
            ("192.0.2.10/+8", "prefix"),
            ("192.0.2.10/", "prefix"),
            ("2001:db8::1/129", "1 to 128"),
            ("192.0.2/24", "not an IP address"),
            ("192.0.02.1/24", "not an IP address"),
            ("0.0.0.0/8", "not a usable host address"),
            ("127.0.0.1/8", "usable"),
            ("224.0.0.1/4", "usable"),
            ("::1/128", "usable"),
            ("::/64", "usable"),
            ("10.0.0.1/24\n", "prefix"),
        ] {
            let m = msg(cidr("nics[0].addresses[0]", bad));
            assert!(
                m.starts_with("nics[0].addresses[0]: ") && m.contains(why),
                "{bad:?}: {m}"
            );
        }
        assert!(ipv4("g", "192.0.2.1").is_ok());
        assert!(msg(ipv4("nics[0].gateway4", "2001:db8::1")).contains("not an IPv4 address"));
        assert!(ip("n", "2001:db8::53").is_ok());
        assert!(ip("n", "dns.example").is_err());
        let c = cidr("a", "192.0.2.10/24").unwrap();
        assert!(c.contains_v4("192.0.2.1".parse().unwrap()));
        assert!(!c.contains_v4("192.0.3.1".parse().unwrap()));
        assert!(cidr("a", "2001:db8::1/64").unwrap().addr.is_ipv6());
    }

    #[test]
    fn macs() {
        assert_eq!(mac("m", "52:54:00:AB:cd:EF").unwrap(), "52:54:00:ab:cd:ef");
        for bad in [
            "52:54:00:ab:cd",
            "52-54-00-ab-cd-ef",
            "5254.00ab.cdef",
            "52:54:00:ab:cd:eg",
            "52:54:00:ab:cd:ef:00",
            "01:00:5e:00:00:01",
            "ff:ff:ff:ff:ff:ff",
            "",
            "52:54:00:ab:cd:e",
        ] {
            let m = msg(mac("nics[0].mac", bad));
            assert!(m.starts_with("nics[0].mac: "), "{m}");
        }
    }

    #[test]
    fn packages_timezones_markers() {
        for ok in [
            "nginx",
            "python3-yaml",
            "libstdc++6",
            "g++",
            "qemu-guest-agent",
            "libc6:i386",
            "NetworkManager",
        ] {
            package("p", ok).unwrap();
        }
        for bad in [
            "",
            "-rf",
            "a b",
            "a;b",
            "$(x)",
            "a\nb",
            "pkg=1.0",
            &"a".repeat(129),
        ] {
            assert!(package("packages[0]", bad).is_err(), "{bad:?}");
        }
        for ok in [
            "UTC",
            "Europe/Paris",
            "America/Argentina/Buenos_Aires",
            "Etc/GMT+5",
            "Etc/GMT-14",
        ] {
            timezone("t", ok).unwrap();
        }
        for bad in [
            "",
            "/etc/passwd",
            "Europe/",
            "../x",
            "Europe//Paris",
            "Europe/Paris\n",
            "a b",
            &"a".repeat(65),
        ] {
            assert!(timezone("timezone", bad).is_err(), "{bad:?}");
        }
        assert!(marker("NASVISOR-READY").is_ok());
        assert!(marker("ready: \"yes\" # ok").is_ok());
        for bad in ["", "   ", "a\nb", "é", &"a".repeat(201)] {
            assert!(marker(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn show_truncates() {
        assert_eq!(show("ab"), "\"ab\"");
        assert!(show(&"x".repeat(200)).ends_with("\"..."));
    }
}
