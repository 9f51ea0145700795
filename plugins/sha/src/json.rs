//! A small, strict JSON parser (RFC 8259) for `drbdsetup status --json`.
//!
//! The plugin must stay tiny and dependency-free, so this parses into a plain
//! [`Value`] tree. Limits protect the host: inputs above [`MAX_INPUT_BYTES`]
//! and nesting deeper than [`MAX_DEPTH`] are refused. Errors carry the byte
//! offset, line and column of the problem.
//!
//! Accepted: objects, arrays, strings (all escapes, `\u` surrogate pairs),
//! numbers (parsed as `f64`), `true`, `false`, `null`, surrounding whitespace
//! and a leading UTF-8 byte order mark. Refused: trailing commas, comments,
//! control characters in strings, lone surrogates, leading zeros, NaN/Infinity,
//! anything after the top-level value. Duplicate object keys are kept in order;
//! [`Value::get`] returns the first.

use std::fmt;

/// Largest input accepted, in bytes (1 MiB).
pub const MAX_INPUT_BYTES: usize = 1 << 20;
/// Deepest nesting of arrays and objects accepted.
pub const MAX_DEPTH: usize = 64;

/// A parsed JSON value.
#[derive(Debug, Clone, PartialEq)]
pub enum Value {
    /// `null`
    Null,
    /// `true` or `false`
    Bool(bool),
    /// Any number.
    Number(f64),
    /// A string, unescaped.
    String(String),
    /// An array.
    Array(Vec<Value>),
    /// An object, members in input order.
    Object(Vec<(String, Value)>),
}

impl Value {
    /// The first member named `key` of an object.
    pub fn get(&self, key: &str) -> Option<&Value> {
        match self {
            Value::Object(m) => m.iter().find(|(k, _)| k == key).map(|(_, v)| v),
            _ => None,
        }
    }
    /// The string, if this is one.
    pub fn as_str(&self) -> Option<&str> {
        match self {
            Value::String(s) => Some(s),
            _ => None,
        }
    }
    /// The number, if this is one.
    pub fn as_f64(&self) -> Option<f64> {
        match self {
            Value::Number(n) => Some(*n),
            _ => None,
        }
    }
    /// The elements, if this is an array.
    pub fn as_array(&self) -> Option<&[Value]> {
        match self {
            Value::Array(a) => Some(a),
            _ => None,
        }
    }
    /// The name of this value's type, for messages.
    pub fn type_name(&self) -> &'static str {
        match self {
            Value::Null => "null",
            Value::Bool(_) => "boolean",
            Value::Number(_) => "number",
            Value::String(_) => "string",
            Value::Array(_) => "array",
            Value::Object(_) => "object",
        }
    }
}

/// A JSON syntax error with its position.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JsonError {
    /// What is wrong.
    pub message: String,
    /// Byte offset from the start of the input.
    pub offset: usize,
    /// 1-based line.
    pub line: usize,
    /// 1-based column, in characters.
    pub column: usize,
}

impl fmt::Display for JsonError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} at line {}, column {} (byte {})",
            self.message, self.line, self.column, self.offset
        )
    }
}

/// Parse a complete JSON document.
pub fn parse(input: &str) -> Result<Value, JsonError> {
    if input.len() > MAX_INPUT_BYTES {
        return Err(JsonError {
            message: format!(
                "input is {} bytes, more than the {MAX_INPUT_BYTES} accepted",
                input.len()
            ),
            offset: MAX_INPUT_BYTES,
            line: 0,
            column: 0,
        });
    }
    let start = if input.starts_with('\u{feff}') { 3 } else { 0 };
    let mut p = Parser {
        src: input,
        bytes: input.as_bytes(),
        pos: start,
    };
    p.skip_ws();
    let v = p.value(0)?;
    p.skip_ws();
    if p.pos != p.bytes.len() {
        return Err(p.err("unexpected data after the JSON value"));
    }
    Ok(v)
}

struct Parser<'a> {
    src: &'a str,
    bytes: &'a [u8],
    pos: usize,
}

impl Parser<'_> {
    fn err(&self, message: impl Into<String>) -> JsonError {
        self.err_at(self.pos, message)
    }

    fn err_at(&self, offset: usize, message: impl Into<String>) -> JsonError {
        let offset = offset.min(self.bytes.len());
        // `offset` may sit inside a multi-byte character: back up to its start.
        let mut o = offset;
        while !self.src.is_char_boundary(o) {
            o -= 1;
        }
        let before = &self.src[..o];
        let line = before.matches('\n').count() + 1;
        let line_start = before.rfind('\n').map_or(0, |i| i + 1);
        let column = before[line_start..].chars().count() + 1;
        JsonError {
            message: message.into(),
            offset,
            line,
            column,
        }
    }

    fn peek(&self) -> Option<u8> {
        self.bytes.get(self.pos).copied()
    }

    fn skip_ws(&mut self) {
        while let Some(b' ' | b'\t' | b'\n' | b'\r') = self.peek() {
            self.pos += 1;
        }
    }

    /// Describe the byte at the current position, for messages.
    fn found(&self) -> String {
        match self.src[self.pos.min(self.src.len())..].chars().next() {
            None => "end of input".into(),
            Some(c) if c.is_control() => format!("control character U+{:04X}", c as u32),
            Some(c) => format!("{c:?}"),
        }
    }

    fn value(&mut self, depth: usize) -> Result<Value, JsonError> {
        match self.peek() {
            None => Err(self.err("expected a value, found end of input")),
            Some(b'{') => self.object(depth + 1),
            Some(b'[') => self.array(depth + 1),
            Some(b'"') => Ok(Value::String(self.string()?)),
            Some(b't') => self.literal("true", Value::Bool(true)),
            Some(b'f') => self.literal("false", Value::Bool(false)),
            Some(b'n') => self.literal("null", Value::Null),
            Some(b'-' | b'0'..=b'9') => self.number(),
            Some(_) => Err(self.err(format!("expected a value, found {}", self.found()))),
        }
    }

    fn literal(&mut self, word: &str, v: Value) -> Result<Value, JsonError> {
        if self.bytes[self.pos..].starts_with(word.as_bytes()) {
            self.pos += word.len();
            Ok(v)
        } else {
            Err(self.err(format!("invalid literal (expected {word})")))
        }
    }

    fn enter(&self, depth: usize) -> Result<(), JsonError> {
        if depth > MAX_DEPTH {
            Err(self.err(format!("nesting deeper than {MAX_DEPTH} levels")))
        } else {
            Ok(())
        }
    }

    fn object(&mut self, depth: usize) -> Result<Value, JsonError> {
        self.enter(depth)?;
        self.pos += 1; // '{'
        let mut members = Vec::new();
        self.skip_ws();
        if self.peek() == Some(b'}') {
            self.pos += 1;
            return Ok(Value::Object(members));
        }
        loop {
            self.skip_ws();
            if self.peek() != Some(b'"') {
                return Err(self.err(format!("expected a string key, found {}", self.found())));
            }
            let key = self.string()?;
            self.skip_ws();
            if self.peek() != Some(b':') {
                return Err(self.err(format!(
                    "expected ':' after key {key:?}, found {}",
                    self.found()
                )));
            }
            self.pos += 1;
            self.skip_ws();
            let v = self.value(depth)?;
            members.push((key, v));
            self.skip_ws();
            match self.peek() {
                Some(b',') => self.pos += 1,
                Some(b'}') => {
                    self.pos += 1;
                    return Ok(Value::Object(members));
                }
                _ => {
                    return Err(self.err(format!(
                        "expected ',' or '}}' in object, found {}",
                        self.found()
                    )))
                }
            }
        }
    }

    fn array(&mut self, depth: usize) -> Result<Value, JsonError> {
        self.enter(depth)?;
        self.pos += 1; // '['
        let mut items = Vec::new();
        self.skip_ws();
        if self.peek() == Some(b']') {
            self.pos += 1;
            return Ok(Value::Array(items));
        }
        loop {
            self.skip_ws();
            items.push(self.value(depth)?);
            self.skip_ws();
            match self.peek() {
                Some(b',') => self.pos += 1,
                Some(b']') => {
                    self.pos += 1;
                    return Ok(Value::Array(items));
                }
                _ => {
                    return Err(self.err(format!(
                        "expected ',' or ']' in array, found {}",
                        self.found()
                    )))
                }
            }
        }
    }

    fn hex4(&mut self) -> Result<u32, JsonError> {
        let start = self.pos;
        let digits = self
            .bytes
            .get(start..start + 4)
            .filter(|d| d.iter().all(u8::is_ascii_hexdigit))
            .ok_or_else(|| self.err("expected 4 hex digits after \\u"))?;
        // The digits are ASCII hex, so this cannot fail.
        let s = std::str::from_utf8(digits).unwrap_or("0");
        self.pos += 4;
        Ok(u32::from_str_radix(s, 16).unwrap_or(0))
    }

    fn string(&mut self) -> Result<String, JsonError> {
        let open = self.pos;
        self.pos += 1; // '"'
        let mut out = String::new();
        loop {
            // Copy a run of plain characters at once.
            let run_start = self.pos;
            while let Some(b) = self.peek() {
                if b == b'"' || b == b'\\' || b < 0x20 {
                    break;
                }
                self.pos += 1;
            }
            out.push_str(&self.src[run_start..self.pos]);
            match self.peek() {
                None => return Err(self.err_at(open, "unterminated string")),
                Some(b'"') => {
                    self.pos += 1;
                    return Ok(out);
                }
                Some(b'\\') => {
                    let esc_at = self.pos;
                    self.pos += 1;
                    let c = match self.peek() {
                        Some(b'"') => '"',
                        Some(b'\\') => '\\',
                        Some(b'/') => '/',
                        Some(b'b') => '\u{8}',
                        Some(b'f') => '\u{c}',
                        Some(b'n') => '\n',
                        Some(b'r') => '\r',
                        Some(b't') => '\t',
                        Some(b'u') => {
                            self.pos += 1;
                            let hi = self.hex4()?;
                            let code = if (0xD800..0xDC00).contains(&hi) {
                                if !self.bytes[self.pos..].starts_with(b"\\u") {
                                    return Err(
                                        self.err_at(esc_at, "lone high surrogate in \\u escape")
                                    );
                                }
                                self.pos += 2;
                                let lo = self.hex4()?;
                                if !(0xDC00..0xE000).contains(&lo) {
                                    return Err(
                                        self.err_at(esc_at, "invalid surrogate pair in \\u escape")
                                    );
                                }
                                0x10000 + ((hi - 0xD800) << 10) + (lo - 0xDC00)
                            } else if (0xDC00..0xE000).contains(&hi) {
                                return Err(self.err_at(esc_at, "lone low surrogate in \\u escape"));
                            } else {
                                hi
                            };
                            out.push(
                                char::from_u32(code)
                                    .ok_or_else(|| self.err_at(esc_at, "invalid \\u escape"))?,
                            );
                            continue;
                        }
                        _ => {
                            return Err(
                                self.err_at(esc_at, format!("invalid escape \\{}", self.found()))
                            )
                        }
                    };
                    self.pos += 1;
                    out.push(c);
                }
                Some(_) => {
                    return Err(self.err(format!("{} in string (must be escaped)", self.found())))
                }
            }
        }
    }

    fn number(&mut self) -> Result<Value, JsonError> {
        let start = self.pos;
        if self.peek() == Some(b'-') {
            self.pos += 1;
        }
        match self.peek() {
            Some(b'0') => {
                self.pos += 1;
                if let Some(b'0'..=b'9') = self.peek() {
                    return Err(self.err("leading zero in number"));
                }
            }
            Some(b'1'..=b'9') => self.digits(),
            _ => return Err(self.err("expected a digit in number")),
        }
        if self.peek() == Some(b'.') {
            self.pos += 1;
            if !matches!(self.peek(), Some(b'0'..=b'9')) {
                return Err(self.err("expected a digit after '.' in number"));
            }
            self.digits();
        }
        if let Some(b'e' | b'E') = self.peek() {
            self.pos += 1;
            if let Some(b'+' | b'-') = self.peek() {
                self.pos += 1;
            }
            if !matches!(self.peek(), Some(b'0'..=b'9')) {
                return Err(self.err("expected a digit in number exponent"));
            }
            self.digits();
        }
        let text = &self.src[start..self.pos];
        text.parse::<f64>()
            .ok()
            .filter(|n| n.is_finite())
            .map(Value::Number)
            .ok_or_else(|| self.err_at(start, format!("number {text} is out of range")))
    }

    fn digits(&mut self) {
        while let Some(b'0'..=b'9') = self.peek() {
            self.pos += 1;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn obj(m: &[(&str, Value)]) -> Value {
        Value::Object(m.iter().map(|(k, v)| (k.to_string(), v.clone())).collect())
    }

    #[test]
    fn parses_all_value_kinds() {
        let v = parse(r#" { "a": [1, -2.5, 3e2, 0, -0.0, 1E-2], "b": true, "c": false, "d": null, "e": "x", "f": {} , "g": []} "#)
            .unwrap();
        assert_eq!(
            v,
            obj(&[
                (
                    "a",
                    Value::Array(vec![
                        Value::Number(1.0),
                        Value::Number(-2.5),
                        Value::Number(300.0),
                        Value::Number(0.0),
                        Value::Number(-0.0),
                        Value::Number(0.01)
                    ])
                ),
                ("b", Value::Bool(true)),
                ("c", Value::Bool(false)),
                ("d", Value::Null),
                ("e", Value::String("x".into())),
                ("f", Value::Object(vec![])),
                ("g", Value::Array(vec![])),
            ])
        );
    }

    #[test]
    fn string_escapes() {
        let v = parse(r#""a\"b\\c\/d\b\f\n\r\t\u00e9\u20ac\ud83d\ude00 é""#).unwrap();
        assert_eq!(v, Value::String("a\"b\\c/d\u{8}\u{c}\n\r\té€😀 é".into()));
    }

    #[test]
    fn get_returns_first_duplicate_key() {
        let v = parse(r#"{"k": 1, "k": 2}"#).unwrap();
        assert_eq!(v.get("k"), Some(&Value::Number(1.0)));
        assert_eq!(v.get("missing"), None);
        assert_eq!(Value::Null.get("k"), None);
    }

    #[test]
    fn accepts_byte_order_mark_and_whitespace() {
        assert_eq!(parse("\u{feff} \r\n\t[]\n").unwrap(), Value::Array(vec![]));
    }

    #[test]
    fn rejects_malformed_input_with_position() {
        let cases: &[(&str, &str, usize, usize)] = &[
            ("", "expected a value, found end of input", 1, 1),
            ("[1,]", "expected a value", 1, 4),
            ("{\"a\":1,}", "expected a string key", 1, 8),
            ("{\"a\" 1}", "expected ':' after key \"a\"", 1, 6),
            ("[1 2]", "expected ',' or ']'", 1, 4),
            ("{\"a\":1 \"b\":2}", "expected ',' or '}'", 1, 8),
            ("[\n  tru]", "invalid literal (expected true)", 2, 3),
            ("[01]", "leading zero", 1, 3),
            ("[1.]", "digit after '.'", 1, 4),
            ("[1e]", "digit in number exponent", 1, 4),
            ("[-]", "expected a digit", 1, 3),
            ("[1e999]", "out of range", 1, 2),
            ("\"abc", "unterminated string", 1, 1),
            ("\"a\nb\"", "control character U+000A in string", 1, 3),
            ("\"\\x\"", "invalid escape \\'x'", 1, 2),
            ("\"\\u12\"", "4 hex digits", 1, 4),
            ("\"\\ud800\"", "lone high surrogate", 1, 2),
            ("\"\\ud800\\u0041\"", "invalid surrogate pair", 1, 2),
            ("\"\\udc00\"", "lone low surrogate", 1, 2),
            ("[] []", "unexpected data after the JSON value", 1, 4),
            ("NaN", "expected a value, found 'N'", 1, 1),
            ("// c\n[]", "expected a value, found '/'", 1, 1),
            ("[\"é\" x]", "expected ',' or ']' in array, found 'x'", 1, 6),
        ];
        for (input, msg, line, col) in cases {
            let e = parse(input).unwrap_err();
            assert!(e.message.contains(msg), "{input:?}: {e}");
            assert_eq!((e.line, e.column), (*line, *col), "{input:?}: {e}");
        }
    }

    #[test]
    fn error_display_names_line_column_and_byte() {
        let e = parse("[\n 1,\n x]").unwrap_err();
        assert_eq!(
            e.to_string(),
            "expected a value, found 'x' at line 3, column 2 (byte 7)"
        );
    }

    #[test]
    fn depth_limit() {
        let ok = format!("{}{}", "[".repeat(MAX_DEPTH), "]".repeat(MAX_DEPTH));
        assert!(parse(&ok).is_ok());
        let deep = format!("{}{}", "[".repeat(MAX_DEPTH + 1), "]".repeat(MAX_DEPTH + 1));
        assert!(parse(&deep)
            .unwrap_err()
            .message
            .contains("nesting deeper than 64"));
        let deep_obj = "{\"a\":".repeat(MAX_DEPTH + 1) + "1" + &"}".repeat(MAX_DEPTH + 1);
        assert!(parse(&deep_obj).unwrap_err().message.contains("nesting"));
        // Far deeper input fails cleanly instead of overflowing the stack.
        let huge = "[".repeat(100_000);
        assert!(parse(&huge).is_err());
    }

    #[test]
    fn size_limit() {
        let big = format!("\"{}\"", "a".repeat(MAX_INPUT_BYTES));
        let e = parse(&big).unwrap_err();
        assert!(e.message.contains("more than the 1048576 accepted"), "{e}");
        let fits = format!("\"{}\"", "a".repeat(MAX_INPUT_BYTES - 2));
        assert!(parse(&fits).is_ok());
    }

    #[test]
    fn agrees_with_serde_json_on_valid_documents() {
        let docs = [
            r#"[{"name":"r0","n":[1,2.5,-3e-3],"s":"\u00fc\n","o":{"x":null,"y":[true,false]}}]"#,
            r#"{"a":{"b":{"c":[[],[{}]]}}}"#,
            r#""\ud834\udd1e""#,
            "123456789012345678901234567890",
        ];
        for d in docs {
            let ours = parse(d).unwrap();
            let theirs: serde_json::Value = serde_json::from_str(d).unwrap();
            assert!(same(&ours, &theirs), "{d}");
        }
    }

    fn same(a: &Value, b: &serde_json::Value) -> bool {
        match (a, b) {
            (Value::Null, serde_json::Value::Null) => true,
            (Value::Bool(x), serde_json::Value::Bool(y)) => x == y,
            (Value::Number(x), serde_json::Value::Number(y)) => Some(*x) == y.as_f64(),
            (Value::String(x), serde_json::Value::String(y)) => x == y,
            (Value::Array(x), serde_json::Value::Array(y)) => {
                x.len() == y.len() && x.iter().zip(y).all(|(a, b)| same(a, b))
            }
            (Value::Object(x), serde_json::Value::Object(y)) => {
                x.len() == y.len() && x.iter().all(|(k, v)| y.get(k).is_some_and(|w| same(v, w)))
            }
            _ => false,
        }
    }
}
