//! The one way answers are printed: every view implements [`Render`] (its
//! table columns and row, and how it shows alone), and [`Out`] prints a
//! list, one view or an answer with a line about it, or, with `--json`,
//! the view re-serialized.

use super::table;
use serde::Serialize;
use serde_json::Value;

/// How a view prints without `--json`.
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

/// Prints `v` as pretty JSON; nothing for an answer without content.
pub fn print_json<T: Serialize + ?Sized>(v: &T) {
    match serde_json::to_value(v) {
        Ok(Value::Null) => {}
        Ok(v) => println!(
            "{}",
            serde_json::to_string_pretty(&v).unwrap_or_else(|_| v.to_string())
        ),
        Err(e) => eprintln!("warning: the answer cannot be printed as JSON: {e}"),
    }
}

/// Where output goes: tables and lines, or `--json`.
#[derive(Debug, Clone, Copy)]
pub struct Out {
    /// `--json`: print the answers.
    pub json: bool,
}

impl Out {
    /// A list: a table, or the JSON array.
    pub fn list<T: Render>(self, items: &[T]) {
        if self.json {
            print_json(items);
        } else {
            print!("{}", table(items));
        }
    }

    /// One view: its `show` text, or its JSON.
    pub fn show<T: Render>(self, item: &T) {
        if self.json {
            print_json(item);
        } else {
            print!("{}", item.show());
        }
    }

    /// The answer of an operation: its JSON, or a line about it.
    pub fn done<T: Serialize>(self, answer: &T, line: impl FnOnce(&T) -> String) {
        if self.json {
            print_json(answer);
        } else {
            println!("{}", line(answer));
        }
    }

    /// A line printed only without `--json`.
    pub fn note(self, line: impl FnOnce() -> String) {
        if !self.json {
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
