//! The one way answers are printed: every view implements [`Render`] (its
//! table columns and row, and how it shows alone), and [`Out`] prints a
//! list, one view or an answer with a line about it, or, with `--output
//! json|yaml` (`--json`), the view re-serialized as a [`Doc`].

use super::table;
use serde::Serialize;
use serde_json::Value;

/// How a view prints as a table (`--output table`, the default).
pub trait Render: Serialize + Sized {
    /// The column headers of a table of these (printed upper-case).
    const COLUMNS: &'static [&'static str];

    /// One row of the table: a cell per column.
    fn row(&self) -> Vec<String>;

    /// The text of one view alone (`show`); a one-row table unless the view
    /// says more.
    fn show(&self) -> String {
        table(std::slice::from_ref(self))
    }
}

/// A table of `items` under `T`'s columns.
pub fn table<T: Render>(items: &[T]) -> String {
    let rows: Vec<Vec<String>> = items.iter().map(Render::row).collect();
    table::render(T::COLUMNS, &rows)
}

/// A field of a view as a table cell: strings bare (empty as `-`), null as
/// `-`, booleans as yes/no, enums by their API name, lists joined by `,`.
pub fn cell<T: Serialize + ?Sized>(v: &T) -> String {
    value_cell(&serde_json::to_value(v).unwrap_or(Value::Null))
}

fn value_cell(v: &Value) -> String {
    match v {
        Value::Null => "-".into(),
        Value::String(s) if s.is_empty() => "-".into(),
        Value::String(s) => s.replace(['\n', '\t'], " "),
        Value::Bool(b) => if *b { "yes" } else { "no" }.into(),
        Value::Number(n) => n.to_string(),
        Value::Array(a) if a.is_empty() => "-".into(),
        Value::Array(a) => a.iter().map(value_cell).collect::<Vec<_>>().join(","),
        Value::Object(_) => v.to_string(),
    }
}

/// How answers are printed (`--output`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, clap::ValueEnum)]
pub enum Format {
    /// Tables, `label: value` blocks and one-line messages.
    #[default]
    Table,
    /// The API's typed view, as JSON.
    Json,
    /// The same view, as YAML.
    Yaml,
}

/// The output options (global).
#[derive(Debug, Clone, Copy, clap::Args)]
pub struct OutputOpts {
    /// How to print answers: tables, or the API's typed view as JSON or
    /// YAML.
    #[arg(
        long,
        short = 'o',
        global = true,
        env = "NASVISOR_OUTPUT",
        value_enum,
        default_value_t = Format::Table
    )]
    pub output: Format,
    /// The same as --output json (kept for scripts).
    #[arg(long, global = true, hide = true)]
    pub json: bool,
}

impl OutputOpts {
    /// Where answers go; `--json` wins over `--output`.
    pub fn out(self) -> Out {
        Out {
            format: if self.json { Format::Json } else { self.output },
        }
    }
}

/// A structured format: an answer printed as a document.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Doc {
    /// Pretty JSON.
    Json,
    /// YAML.
    Yaml,
}

impl Doc {
    /// `v` as a document of this format, ending with a newline; `None` for
    /// an answer without content (JSON `null`). Both formats write the same
    /// value: the view serialized once.
    pub fn text<T: Serialize + ?Sized>(self, v: &T) -> Result<Option<String>, String> {
        let value = serde_json::to_value(v).map_err(|e| e.to_string())?;
        if value.is_null() {
            return Ok(None);
        }
        let text = match self {
            Doc::Json => serde_json::to_string_pretty(&value).map_err(|e| e.to_string())? + "\n",
            Doc::Yaml => yaml_serde::to_string(&value).map_err(|e| e.to_string())?,
        };
        Ok(Some(text))
    }

    /// Prints `v` as a document; nothing for an answer without content.
    pub fn print<T: Serialize + ?Sized>(self, v: &T) {
        match self.text(v) {
            Ok(Some(t)) => print!("{t}"),
            Ok(None) => {}
            Err(e) => eprintln!("warning: the answer cannot be printed as {self:?}: {e}"),
        }
    }

    /// One item of a stream (`event list --follow`): a JSON object on one
    /// line, or a YAML document after `---`.
    pub fn print_item<T: Serialize + ?Sized>(self, v: &T) {
        match self {
            Doc::Json => println!("{}", serde_json::to_string(v).unwrap_or_default()),
            Doc::Yaml => {
                if let Ok(Some(t)) = self.text(v) {
                    print!("---\n{t}");
                }
            }
        }
    }
}

/// Where output goes: tables and lines, or documents.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Out {
    /// `--output`.
    pub format: Format,
}

impl Out {
    /// The document format, unless tables are asked for.
    pub fn doc(self) -> Option<Doc> {
        match self.format {
            Format::Table => None,
            Format::Json => Some(Doc::Json),
            Format::Yaml => Some(Doc::Yaml),
        }
    }

    /// A list: a table, or the document of the array.
    pub fn list<T: Render>(self, items: &[T]) {
        match self.doc() {
            Some(d) => d.print(items),
            None => print!("{}", table(items)),
        }
    }

    /// One view: its `show` text, or its document.
    pub fn show<T: Render>(self, item: &T) {
        match self.doc() {
            Some(d) => d.print(item),
            None => print!("{}", item.show()),
        }
    }

    /// The answer of an operation: its document, or a line about it.
    pub fn done<T: Serialize>(self, answer: &T, line: impl FnOnce(&T) -> String) {
        match self.doc() {
            Some(d) => d.print(answer),
            None => println!("{}", line(answer)),
        }
    }

    /// A line printed only with tables.
    pub fn note(self, line: impl FnOnce() -> String) {
        if self.doc().is_none() {
            println!("{}", line());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Serialize)]
    struct Row {
        name: String,
        n: u64,
        x: Option<String>,
    }

    impl Render for Row {
        const COLUMNS: &'static [&'static str] = &["name", "n", "x"];
        fn row(&self) -> Vec<String> {
            vec![cell(&self.name), cell(&self.n), cell(&self.x)]
        }
    }

    #[test]
    fn cells_of_typed_fields() {
        assert_eq!(cell(&None::<String>), "-");
        assert_eq!(cell(""), "-");
        assert_eq!(cell("a\tb\nc"), "a b c");
        assert_eq!(cell(&true), "yes");
        assert_eq!(cell(&vec!["nas1", "nas2"]), "nas1,nas2");
        assert_eq!(cell(&Vec::<String>::new()), "-");
        assert_eq!(
            cell(&nasvisor_api_types::VmState::GuestPanicked),
            "guest_panicked"
        );
        assert_eq!(cell(&1.0f64), "1.0");
    }

    #[test]
    fn a_table_of_views_and_the_default_show() {
        let rows = [
            Row {
                name: "a".into(),
                n: 1,
                x: None,
            },
            Row {
                name: "long-name".into(),
                n: 22,
                x: Some("y".into()),
            },
        ];
        assert_eq!(
            table(&rows),
            "NAME       N   X\na          1   -\nlong-name  22  y\n"
        );
        assert_eq!(rows[0].show(), "NAME  N  X\na     1  -\n");
    }
}
