//! A strict reader for the YAML files of a NoCloud seed.
//!
//! The guest reads the seed with PyYAML (YAML 1.1); this reader uses a YAML
//! 1.2 parser (`saphyr-parser`). To be sure that what is validated here is
//! what the guest will see, only the subset on which both agree is accepted,
//! which is also all that the default os-installer writes:
//!
//! - the text is printable ASCII and `\n` (no tab, CR, NEL, U+2028/U+2029 or
//!   BOM, which YAML 1.1 reads as line breaks or markers where 1.2 does not);
//!   other characters are written as escapes in double-quoted strings;
//! - one implicit document: no `---`, `...`, `%YAML` or `%TAG`;
//! - no anchors (`&`), aliases (`*`), tags (`!`), merge keys (`<<`) or block
//!   scalars (`|`, `>`);
//! - strings are quoted, on one line; double-quoted strings use only the
//!   escapes `\"`, `\\`, `\n`, `\t`, `\r`, `\xHH`, `\uHHHH`, `\UHHHHHHHH`;
//! - unquoted (plain) values are `true`, `false` or a decimal integer
//!   without a leading zero (YAML 1.1 also reads `yes`, `off`, `0777`, `1_0`,
//!   `1:20` or `~` as booleans, numbers and null);
//! - unquoted keys are identifiers (`[A-Za-z_][A-Za-z0-9_-]*`) other than
//!   YAML 1.1's boolean and null words;
//! - keys are scalars and appear once per mapping (PyYAML keeps the last of
//!   duplicate keys silently);
//! - collections nest at most [`MAX_DEPTH`] deep.

use saphyr_parser::{Event, Parser, ScalarStyle, Span};

/// Deepest nesting of collections accepted.
pub const MAX_DEPTH: usize = 16;

/// A parsed value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Node {
    Map(Vec<(String, Node)>),
    Seq(Vec<Node>),
    Str(String),
    Bool(bool),
    Int(u64),
}

impl Node {
    /// What kind of value this is, for messages.
    pub fn kind(&self) -> &'static str {
        match self {
            Node::Map(_) => "a mapping",
            Node::Seq(_) => "a list",
            Node::Str(_) => "a string",
            Node::Bool(_) => "a boolean",
            Node::Int(_) => "an integer",
        }
    }
}

impl Node {
    /// The entries of a mapping at `path`.
    pub fn map(&self, path: &str) -> Result<&[(String, Node)], String> {
        match self {
            Node::Map(m) => Ok(m),
            n => Err(format!("{path} must be a mapping, not {}", n.kind())),
        }
    }

    /// The items of a list at `path`.
    pub fn seq(&self, path: &str) -> Result<&[Node], String> {
        match self {
            Node::Seq(s) => Ok(s),
            n => Err(format!("{path} must be a list, not {}", n.kind())),
        }
    }

    /// The string at `path`.
    pub fn str(&self, path: &str) -> Result<&str, String> {
        match self {
            Node::Str(s) => Ok(s),
            n => Err(format!("{path} must be a quoted string, not {}", n.kind())),
        }
    }

    /// The boolean at `path`.
    pub fn bool(&self, path: &str) -> Result<bool, String> {
        match self {
            Node::Bool(b) => Ok(*b),
            n => Err(format!("{path} must be true or false, not {}", n.kind())),
        }
    }

    /// The list of strings at `path`.
    pub fn strs(&self, path: &str) -> Result<Vec<&str>, String> {
        self.seq(path)?
            .iter()
            .enumerate()
            .map(|(i, n)| n.str(&format!("{path}[{i}]")))
            .collect()
    }
}

/// Reads `text` (the seed file `file`) as one document. A file holding only
/// comments is an empty mapping.
pub fn parse(file: &str, text: &str) -> Result<Node, String> {
    for (line_no, line) in text.split('\n').enumerate() {
        if let Some((col, c)) = line
            .chars()
            .enumerate()
            .find(|(_, c)| !(' '..='~').contains(c))
        {
            return Err(format!(
                "{file}: line {}, column {}: character U+{:04X} is not accepted; seed files are printable ASCII (write other characters as escapes in double-quoted strings)",
                line_no + 1,
                col + 1,
                c as u32
            ));
        }
    }
    let mut r = Reader {
        file,
        text,
        parser: Parser::new_from_str(text),
    };
    match r.next()? {
        (Event::StreamStart, _) => {}
        (e, s) => return Err(r.at(s, format!("unexpected {e:?}"))),
    }
    let node = match r.next()? {
        (Event::StreamEnd, _) => return Ok(Node::Map(Vec::new())),
        (Event::DocumentStart(false), _) => {
            let (ev, span) = r.next()?;
            r.node(ev, span, 0)?
        }
        (Event::DocumentStart(true), s) => {
            return Err(r.at(
                s,
                "document markers (---) and directives (%YAML, %TAG) are not accepted".into(),
            ))
        }
        (e, s) => return Err(r.at(s, format!("unexpected {e:?}"))),
    };
    match r.next()? {
        (Event::DocumentEnd, s) if r.slice(s).is_empty() => {}
        (_, s) => return Err(r.at(s, "document end markers (...) are not accepted".into())),
    }
    match r.next()? {
        (Event::StreamEnd, _) => Ok(node),
        (_, s) => Err(r.at(s, "a second document is not accepted".into())),
    }
}

struct Reader<'a> {
    file: &'a str,
    text: &'a str,
    parser: Parser<'a, saphyr_parser::StrInput<'a>>,
}

/// YAML 1.1 words that an unquoted key would turn into a boolean or null.
const SPECIAL_WORDS: [&str; 9] = ["y", "n", "yes", "no", "on", "off", "true", "false", "null"];

impl<'a> Reader<'a> {
    fn next(&mut self) -> Result<(Event<'a>, Span), String> {
        match self.parser.next_event() {
            Some(Ok(x)) => Ok(x),
            Some(Err(e)) => Err(format!("{}: not valid YAML: {e}", self.file)),
            None => Err(format!("{}: unexpected end of the document", self.file)),
        }
    }

    fn slice(&self, s: Span) -> &'a str {
        // The text is ASCII, so character indexes are byte indexes.
        self.text.get(s.start.index()..s.end.index()).unwrap_or("")
    }

    fn at(&self, s: Span, msg: String) -> String {
        format!(
            "{}: line {}, column {}: {msg}",
            self.file,
            s.start.line(),
            s.start.col() + 1
        )
    }

    fn node(&mut self, ev: Event<'a>, span: Span, depth: usize) -> Result<Node, String> {
        match ev {
            Event::Scalar(v, style, anchor, tag) => {
                self.plain_props(span, anchor, tag.is_some())?;
                self.scalar(&v, style, span)
            }
            Event::Alias(_) => Err(self.at(span, "aliases (*) are not accepted".into())),
            Event::SequenceStart(anchor, tag) => {
                self.collection_start(span, anchor, tag.is_some(), depth)?;
                let mut items = Vec::new();
                loop {
                    match self.next()? {
                        (Event::SequenceEnd, _) => return Ok(Node::Seq(items)),
                        (e, s) => items.push(self.node(e, s, depth + 1)?),
                    }
                }
            }
            Event::MappingStart(anchor, tag) => {
                self.collection_start(span, anchor, tag.is_some(), depth)?;
                let mut entries: Vec<(String, Node)> = Vec::new();
                loop {
                    let key = match self.next()? {
                        (Event::MappingEnd, _) => return Ok(Node::Map(entries)),
                        (Event::Scalar(k, style, anchor, tag), s) => {
                            self.plain_props(s, anchor, tag.is_some())?;
                            self.key(k.into_owned(), style, s)?
                        }
                        (Event::Alias(_), s) => {
                            return Err(self.at(s, "aliases (*) are not accepted".into()))
                        }
                        (_, s) => {
                            return Err(self.at(s, "only strings are accepted as keys".into()))
                        }
                    };
                    let (e, s) = self.next()?;
                    if entries.iter().any(|(k, _)| *k == key) {
                        return Err(self.at(s, format!("key {key:?} appears twice")));
                    }
                    let value = self.node(e, s, depth + 1)?;
                    entries.push((key, value));
                }
            }
            e => Err(self.at(span, format!("unexpected {e:?}"))),
        }
    }

    /// Refuses anchors, tags and nesting beyond [`MAX_DEPTH`].
    fn collection_start(
        &self,
        span: Span,
        anchor: usize,
        tagged: bool,
        depth: usize,
    ) -> Result<(), String> {
        self.plain_props(span, anchor, tagged)?;
        if depth >= MAX_DEPTH {
            return Err(self.at(span, format!("nested deeper than {MAX_DEPTH} levels")));
        }
        Ok(())
    }

    /// Refuses anchors and tags.
    fn plain_props(&self, span: Span, anchor: usize, tagged: bool) -> Result<(), String> {
        if anchor != 0 {
            return Err(self.at(span, "anchors (&) are not accepted".into()));
        }
        if tagged {
            return Err(self.at(span, "tags (!) are not accepted".into()));
        }
        Ok(())
    }

    fn key(&self, k: String, style: ScalarStyle, span: Span) -> Result<String, String> {
        if style == ScalarStyle::Plain {
            let mut chars = k.chars();
            let ident = chars
                .next()
                .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
                && chars.all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-');
            if !ident || SPECIAL_WORDS.contains(&k.to_ascii_lowercase().as_str()) {
                return Err(self.at(
                    span,
                    format!("the unquoted key {k:?} is not accepted (unquoted keys are identifiers; quote it)"),
                ));
            }
            return Ok(k);
        }
        self.quoted(span, style)?;
        Ok(k)
    }

    fn scalar(&self, v: &str, style: ScalarStyle, span: Span) -> Result<Node, String> {
        match style {
            ScalarStyle::Plain => match v {
                "true" => Ok(Node::Bool(true)),
                "false" => Ok(Node::Bool(false)),
                _ if v == "0"
                    || (v.len() <= 20
                        && !v.starts_with('0')
                        && !v.is_empty()
                        && v.bytes().all(|b| b.is_ascii_digit())) =>
                {
                    v.parse().map(Node::Int).map_err(|_| {
                        self.at(span, format!("{v:?} is not a 64-bit unsigned integer"))
                    })
                }
                _ => Err(self.at(
                    span,
                    format!("the unquoted value {v:?} is not accepted: strings must be quoted; unquoted values are true, false or a decimal integer"),
                )),
            },
            ScalarStyle::SingleQuoted | ScalarStyle::DoubleQuoted => {
                self.quoted(span, style)?;
                Ok(Node::Str(v.to_string()))
            }
            _ => Err(self.at(span, "block scalars (| and >) are not accepted".into())),
        }
    }

    /// A quoted scalar stays on one line and uses only the accepted escapes.
    fn quoted(&self, span: Span, style: ScalarStyle) -> Result<(), String> {
        let src = self.slice(span);
        if src.contains('\n') {
            return Err(self.at(span, "quoted strings must stay on one line".into()));
        }
        match style {
            ScalarStyle::DoubleQuoted => {
                let b = src.as_bytes();
                let mut i = 0;
                while i < b.len() {
                    if b[i] != b'\\' {
                        i += 1;
                        continue;
                    }
                    let hex = match b.get(i + 1) {
                        Some(b'"' | b'\\' | b'n' | b't' | b'r') => 0,
                        Some(b'x') => 2,
                        Some(b'u') => 4,
                        Some(b'U') => 8,
                        _ => {
                            let esc = src.get(i..(i + 2).min(src.len())).unwrap_or("\\");
                            return Err(self.at(
                                span,
                                format!("the escape {esc:?} is not accepted (use \\\", \\\\, \\n, \\t, \\r, \\xHH, \\uHHHH or \\UHHHHHHHH)"),
                            ));
                        }
                    };
                    let digits = b.get(i + 2..i + 2 + hex).unwrap_or(&[]);
                    if digits.len() != hex || !digits.iter().all(u8::is_ascii_hexdigit) {
                        return Err(
                            self.at(span, "a \\x, \\u or \\U escape lacks its hex digits".into())
                        );
                    }
                    i += 2 + hex;
                }
                Ok(())
            }
            _ => Ok(()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ok(s: &str) -> Node {
        parse("f", s).unwrap_or_else(|e| panic!("{s:?}: {e}"))
    }

    fn err(s: &str) -> String {
        parse("f", s).expect_err(s)
    }

    fn s(v: &str) -> Node {
        Node::Str(v.into())
    }

    #[test]
    fn the_default_installers_subset_reads_as_expected() {
        let n = ok("#cloud-config\nhostname: \"web\"\nusers:\n  - name: \"a\\\"b\\u00e9\"\n    groups: [\"x\", 'y']\n    sudo: true\nversion: 2\nzero: 0\n");
        assert_eq!(
            n,
            Node::Map(vec![
                ("hostname".into(), s("web")),
                (
                    "users".into(),
                    Node::Seq(vec![Node::Map(vec![
                        ("name".into(), s("a\"bé")),
                        ("groups".into(), Node::Seq(vec![s("x"), s("y")])),
                        ("sudo".into(), Node::Bool(true)),
                    ])])
                ),
                ("version".into(), Node::Int(2)),
                ("zero".into(), Node::Int(0)),
            ])
        );
        assert_eq!(ok("#cloud-config\n"), Node::Map(vec![]));
        assert_eq!(
            ok("\"quoted-key\": 1\n"),
            Node::Map(vec![("quoted-key".into(), Node::Int(1))])
        );
    }

    #[test]
    fn anchors_aliases_tags_and_merge_keys_are_refused() {
        assert!(err("a: &x \"1\"\nb: *x\n").contains("anchors"));
        assert!(err("a: &x [\"1\"]\n").contains("anchors"));
        assert!(err("a: !!str \"1\"\n").contains("tags"));
        assert!(err("a: !!python/object:os.system [\"id\"]\n").contains("tags"));
        assert!(err("a: !foo {}\n").contains("tags"));
        assert!(err("<<: {b: 1}\n").contains("<<"));
        // The billion-laughs shape is refused at its first anchor.
        let bomb = "a: &a [\"lol\",\"lol\"]\nb: &b [*a,*a,*a,*a]\nc: [*b,*b,*b,*b]\n";
        assert!(err(bomb).contains("anchors"));
    }

    #[test]
    fn duplicate_keys_are_refused_at_any_depth() {
        assert!(err("users: []\nusers: []\n").contains("\"users\" appears twice"));
        assert!(err("a:\n  b: 1\n  \"b\": 2\n").contains("\"b\" appears twice"));
        assert!(err("a: {b: 1, b: 2}\n").contains("appears twice"));
    }

    #[test]
    fn values_yaml_1_1_reads_differently_are_refused() {
        for v in [
            "yes", "no", "on", "off", "y", "True", "FALSE", "~", "null", "0777", "0x1f", "1_000",
            "1:20", "1.5", ".inf", "", "web01", "- a",
        ] {
            let doc = format!("k: {v}\n");
            let e = err(&doc);
            assert!(
                e.contains("unquoted value") || e.contains("not valid YAML"),
                "{doc:?}: {e}"
            );
        }
        for k in ["yes", "No", "on", "true", "null", "1", "a b", "<<", "-x"] {
            let doc = format!("{k}: 1\n");
            assert!(parse("f", &doc).is_err(), "{doc:?}");
        }
    }

    #[test]
    fn line_breaks_and_markers_of_yaml_1_1_are_refused() {
        for c in [
            '\r', '\t', '\u{85}', '\u{2028}', '\u{2029}', '\u{feff}', '\0', 'é',
        ] {
            let doc = format!("a: \"x\"{c}b: \"y\"\n");
            assert!(err(&doc).contains("character U+"), "{c:?}");
        }
    }

    #[test]
    fn documents_markers_block_scalars_and_multi_line_strings_are_refused() {
        assert!(err("---\na: 1\n").contains("document markers"));
        assert!(err("%YAML 1.1\n---\na: 1\n").contains("document markers"));
        assert!(err("a: 1\n...\n").contains("end markers"));
        assert!(err("a: 1\n---\nb: 2\n").contains("document"));
        assert!(err("a: |\n  x\n").contains("block scalars"));
        assert!(err("a: >\n  x\n").contains("block scalars"));
        assert!(err("a: \"x\n  y\"\n").contains("one line"));
        assert!(err("a: 'x\n  y'\n").contains("one line"));
        assert!(err("a: \"\\N\"\n").contains("escape"));
        let e = err("a: \"\\x4\"\n");
        assert!(
            e.contains("hex digits") || e.contains("not valid YAML"),
            "{e}"
        );
        assert!(err("? [a]\n: 1\n").contains("keys"));
    }

    #[test]
    fn deep_nesting_is_refused() {
        let deep = format!("a: {}{}\n", "[".repeat(40), "]".repeat(40));
        assert!(err(&deep).contains("nested deeper"));
        let ok_depth = format!(
            "a: {}{}\n",
            "[".repeat(MAX_DEPTH - 1),
            "]".repeat(MAX_DEPTH - 1)
        );
        ok(&ok_depth);
    }
}
