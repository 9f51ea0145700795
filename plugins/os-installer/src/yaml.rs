//! Hand-written YAML output for the NoCloud seed.
//!
//! Every string value is emitted as a YAML double-quoted scalar by [`quote`],
//! and every key is a constant of this crate, so no input can add keys,
//! change the structure or start a comment. The output is pure ASCII:
//! `"` and `\` are escaped, control characters and everything outside
//! printable ASCII become `\xNN`, `\uNNNN` or `\UNNNNNNNN` escapes (YAML 1.1
//! and 1.2 both define them, and PyYAML, which cloud-init uses, reads them).

use std::fmt::Write as _;

/// `s` as a YAML double-quoted scalar.
pub fn quote(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\t' => out.push_str("\\t"),
            '\r' => out.push_str("\\r"),
            ' '..='~' => out.push(c),
            c if (c as u32) <= 0xFF => {
                let _ = write!(out, "\\x{:02X}", c as u32);
            }
            c if (c as u32) <= 0xFFFF => {
                let _ = write!(out, "\\u{:04X}", c as u32);
            }
            c => {
                let _ = write!(out, "\\U{:08X}", c as u32);
            }
        }
    }
    out.push('"');
    out
}

/// A flow sequence of quoted strings: `["a", "b"]`.
pub fn flow_list<S: AsRef<str>>(items: &[S]) -> String {
    let parts: Vec<String> = items.iter().map(|s| quote(s.as_ref())).collect();
    format!("[{}]", parts.join(", "))
}

/// A small line-oriented YAML writer with two-space indentation.
#[derive(Debug, Default)]
pub struct Writer {
    out: String,
}

impl Writer {
    /// A writer whose output starts with `header` (e.g. `#cloud-config\n`).
    pub fn with_header(header: &str) -> Self {
        Writer {
            out: header.to_string(),
        }
    }

    fn indent(&mut self, level: usize) {
        for _ in 0..level {
            self.out.push_str("  ");
        }
    }

    /// `key: "value"` (the value quoted).
    pub fn str(&mut self, level: usize, key: &str, value: &str) {
        self.raw(level, key, &quote(value));
    }

    /// `key: value` with `value` emitted verbatim: only for constants,
    /// numbers, booleans and the output of [`quote`] / [`flow_list`].
    pub fn raw(&mut self, level: usize, key: &str, value: &str) {
        self.indent(level);
        let _ = writeln!(self.out, "{key}: {value}");
    }

    /// `key: true|false`.
    pub fn bool(&mut self, level: usize, key: &str, value: bool) {
        self.raw(level, key, if value { "true" } else { "false" });
    }

    /// `key:` opening a nested mapping or sequence.
    pub fn open(&mut self, level: usize, key: &str) {
        self.indent(level);
        let _ = writeln!(self.out, "{key}:");
    }

    /// `- "value"` (a quoted sequence item).
    pub fn item(&mut self, level: usize, value: &str) {
        self.indent(level);
        let _ = writeln!(self.out, "- {}", quote(value));
    }

    /// `- ` followed by a verbatim value (same rules as [`Writer::raw`]).
    pub fn item_raw(&mut self, level: usize, value: &str) {
        self.indent(level);
        let _ = writeln!(self.out, "- {value}");
    }

    /// `- key: "value"`: the first member of a mapping in a sequence. Further
    /// members go at `level + 1`.
    pub fn item_str(&mut self, level: usize, key: &str, value: &str) {
        self.indent(level);
        let _ = writeln!(self.out, "- {key}: {}", quote(value));
    }

    /// The document.
    pub fn finish(self) -> String {
        self.out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plain_strings_are_just_quoted() {
        assert_eq!(quote("web01"), "\"web01\"");
        assert_eq!(quote(""), "\"\"");
        assert_eq!(quote("a: b # c"), "\"a: b # c\"");
        assert_eq!(quote("{[&*!|>'%@`]}"), "\"{[&*!|>'%@`]}\"");
    }

    #[test]
    fn quotes_backslashes_and_controls_are_escaped() {
        assert_eq!(quote("say \"hi\""), "\"say \\\"hi\\\"\"");
        assert_eq!(quote("C:\\x"), "\"C:\\\\x\"");
        assert_eq!(quote("a\nb: c"), "\"a\\nb: c\"");
        assert_eq!(quote("\r\t\0\u{7}\u{7f}"), "\"\\r\\t\\x00\\x07\\x7F\"");
    }

    #[test]
    fn non_ascii_is_escaped_so_output_is_ascii() {
        assert_eq!(quote("é"), "\"\\xE9\"");
        assert_eq!(
            quote("\u{85}\u{2028}\u{2029}\u{feff}"),
            "\"\\x85\\u2028\\u2029\\uFEFF\""
        );
        assert_eq!(quote("€😀"), "\"\\u20AC\\U0001F600\"");
        for s in ["é\n\"x\"", "\u{10FFFF}", "日本"] {
            assert!(quote(s).is_ascii());
        }
    }

    #[test]
    fn quoted_output_never_contains_a_raw_line_break_or_bare_quote() {
        let nasty = "x\"\n- evil: true\n#\u{2028}\\\"";
        let q = quote(nasty);
        assert!(!q.contains('\n'));
        let inner = &q[1..q.len() - 1];
        // Every '"' inside is preceded by an odd number of backslashes.
        let b = inner.as_bytes();
        for (i, ch) in b.iter().enumerate() {
            if *ch == b'"' {
                let n = b[..i].iter().rev().take_while(|c| **c == b'\\').count();
                assert_eq!(n % 2, 1, "{q}");
            }
        }
    }

    #[test]
    fn writer_layout() {
        let mut w = Writer::with_header("#cloud-config\n");
        w.str(0, "hostname", "web01");
        w.open(0, "users");
        w.item_str(1, "name", "alice");
        w.bool(2, "lock_passwd", false);
        w.raw(2, "groups", &flow_list(&["sudo", "adm"]));
        w.open(2, "ssh_authorized_keys");
        w.item(3, "ssh-ed25519 AAAA x");
        w.open(0, "runcmd");
        w.item_raw(1, &flow_list(&["sh", "-c", "true"]));
        assert_eq!(
            w.finish(),
            "#cloud-config\nhostname: \"web01\"\nusers:\n  - name: \"alice\"\n    lock_passwd: false\n    groups: [\"sudo\", \"adm\"]\n    ssh_authorized_keys:\n      - \"ssh-ed25519 AAAA x\"\nruncmd:\n  - [\"sh\", \"-c\", \"true\"]\n"
        );
    }
}
