//! Keeping secrets out of logs: text that comes from a plugin (its log
//! records, its error messages) can quote the install request it was given.
//! [`redact_secrets`] replaces what looks like a password hash or an SSH
//! public key with `<redacted>` before such text reaches a log or an event.
//!
//! What is recognised, whatever surrounds it:
//! - a crypt(3) hash: a run of `[A-Za-z0-9./$=,+-]` that starts with `$`,
//!   holds at least three `$` and is at least 16 characters long
//!   (`$6$salt$hash`, `$y$j9T$...`, `$2b$12$...`, `$argon2id$v=19$...`);
//! - an SSH public key's blob: a base64 run of at least 32 characters that
//!   starts with `AAAA` (every OpenSSH key blob does: it begins with the
//!   32-bit length of its type name).

use std::borrow::Cow;

/// What replaces a secret.
pub const REDACTED: &str = "<redacted>";

fn crypt_char(b: u8) -> bool {
    b.is_ascii_alphanumeric() || matches!(b, b'.' | b'/' | b'$' | b'=' | b',' | b'+' | b'-')
}

fn base64_char(b: u8) -> bool {
    b.is_ascii_alphanumeric() || matches!(b, b'+' | b'/' | b'=')
}

/// A character that, right before a `$` or an `AAAA`, makes it the middle
/// of a longer word rather than the start of a secret.
fn word_char(b: u8) -> bool {
    b.is_ascii_alphanumeric() || matches!(b, b'.' | b'/' | b'+' | b'$')
}

/// The end of the run of `class` characters starting at `start`.
fn run_end(bytes: &[u8], start: usize, class: fn(u8) -> bool) -> usize {
    bytes[start..]
        .iter()
        .position(|b| !class(*b))
        .map_or(bytes.len(), |n| start + n)
}

/// `text` with every password hash and SSH key blob replaced by
/// [`REDACTED`]; borrowed when there is none.
pub fn redact_secrets(text: &str) -> Cow<'_, str> {
    let bytes = text.as_bytes();
    let mut out = String::new();
    let mut copied = 0;
    let mut i = 0;
    while i < bytes.len() {
        let prev = i.checked_sub(1).map(|p| bytes[p]);
        let secret_end = if bytes[i] == b'$' && !prev.is_some_and(word_char) {
            let mut end = run_end(bytes, i, crypt_char);
            // A comma after a hash is the text's, not the hash's.
            while bytes[end - 1] == b',' {
                end -= 1;
            }
            let dollars = bytes[i..end].iter().filter(|b| **b == b'$').count();
            (dollars >= 3 && end - i >= 16).then_some(end)
        } else if bytes[i..].starts_with(b"AAAA") && !prev.is_some_and(word_char) {
            let end = run_end(bytes, i, base64_char);
            (end - i >= 32).then_some(end)
        } else {
            None
        };
        match secret_end {
            Some(end) => {
                // `i` and `end` sit on ASCII bytes: char boundaries.
                out.push_str(&text[copied..i]);
                out.push_str(REDACTED);
                copied = end;
                i = end;
            }
            None => i += 1,
        }
    }
    if copied == 0 {
        return Cow::Borrowed(text);
    }
    out.push_str(&text[copied..]);
    Cow::Owned(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hashes_and_key_blobs_are_redacted_wherever_they_stand() {
        let key = "AAAAC3NzaC1lZDI1NTE5AAAAIOMqqnkVzrm0SdG6UOoqKLsabgH5C9okWi0dh2l9GKJl";
        for (text, want) in [
            (
                "passwd: $6$saltsalt$c2VjcmV0LWhhc2g end".to_string(),
                "passwd: <redacted> end".to_string(),
            ),
            (
                "root:$y$j9T$abcdefgh$ijklmnopqrstuvwx:19000:0".into(),
                "root:<redacted>:19000:0".into(),
            ),
            (
                "h=\"$argon2id$v=19$m=65536,t=3,p=4$c2FsdA$aGFzaA\"".into(),
                "h=\"<redacted>\"".into(),
            ),
            (
                format!("keys: [ssh-ed25519 {key} admin@x]"),
                "keys: [ssh-ed25519 <redacted> admin@x]".into(),
            ),
            (format!("k={key}"), "k=<redacted>".into()),
            (
                "passwd=$6$saltsalt$c2VjcmV0LWhhc2g".into(),
                "passwd=<redacted>".into(),
            ),
            (
                "[$6$saltsalt$c2VjcmV0LWhhc2g, $5$saltsalt$aGFzaGhhc2hoYXNo]".into(),
                "[<redacted>, <redacted>]".into(),
            ),
            (
                "é $6$saltsalt$c2VjcmV0LWhhc2g é".into(),
                "é <redacted> é".into(),
            ),
        ] {
            assert_eq!(redact_secrets(&text), want);
        }
    }

    #[test]
    fn ordinary_text_is_left_alone() {
        for text in [
            "costs $5 and $6",
            "image debian-12 placed on nas1 (AAAA records)",
            "path /var/lib/nasvisor/$x$y",
            "",
        ] {
            assert!(matches!(redact_secrets(text), Cow::Borrowed(_)), "{text}");
        }
    }
}
