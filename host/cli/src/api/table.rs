//! Human-readable output: aligned tables and key/value blocks.

use serde_json::Value;

/// A JSON value as a table cell: strings bare, null as `-`, lists joined.
pub fn cell(v: &Value) -> String {
    match v {
        Value::Null => "-".into(),
        Value::String(s) if s.is_empty() => "-".into(),
        Value::String(s) => s.replace(['\n', '\t'], " "),
        Value::Bool(b) => if *b { "yes" } else { "no" }.into(),
        Value::Number(n) => n.to_string(),
        Value::Array(a) if a.is_empty() => "-".into(),
        Value::Array(a) => a.iter().map(cell).collect::<Vec<_>>().join(","),
        Value::Object(_) => v.to_string(),
    }
}

/// Renders rows under upper-case headers, columns aligned, two spaces apart.
pub fn render(headers: &[&str], rows: &[Vec<String>]) -> String {
    let mut widths: Vec<usize> = headers.iter().map(|h| h.chars().count()).collect();
    for row in rows {
        for (i, c) in row.iter().enumerate() {
            if let Some(w) = widths.get_mut(i) {
                *w = (*w).max(c.chars().count());
            }
        }
    }
    let line = |cells: Vec<String>| {
        let n = cells.len();
        let mut s = String::new();
        for (i, c) in cells.into_iter().enumerate() {
            s.push_str(&c);
            if i + 1 < n {
                let pad = widths[i].saturating_sub(c.chars().count()) + 2;
                s.push_str(&" ".repeat(pad));
            }
        }
        s.trim_end().to_string() + "\n"
    };
    let mut out = line(headers.iter().map(|h| h.to_uppercase()).collect());
    for row in rows {
        out.push_str(&line(row.clone()));
    }
    out
}

/// A table of the objects in `list`: one column per `(header, key)`; a key
/// may be `a.b` for a nested field.
pub fn objects(list: &Value, columns: &[(&str, &str)]) -> String {
    let empty = Vec::new();
    let rows: Vec<Vec<String>> = list
        .as_array()
        .unwrap_or(&empty)
        .iter()
        .map(|o| columns.iter().map(|(_, k)| cell(lookup(o, k))).collect())
        .collect();
    let headers: Vec<&str> = columns.iter().map(|(h, _)| *h).collect();
    render(&headers, &rows)
}

fn lookup<'a>(o: &'a Value, key: &str) -> &'a Value {
    key.split('.')
        .fold(o, |v, k| v.get(k).unwrap_or(&Value::Null))
}

/// `key: value` lines for the given fields of an object, labels aligned.
pub fn fields(o: &Value, keys: &[(&str, &str)]) -> String {
    let w = keys.iter().map(|(l, _)| l.len()).max().unwrap_or(0);
    let mut out = String::new();
    for (label, key) in keys {
        out.push_str(&format!(
            "{:<w$}  {}\n",
            format!("{label}:"),
            cell(lookup(o, key)),
            w = w + 1
        ));
    }
    out
}

/// A size in MiB, human-readable (`512 MiB`, `2.0 GiB`).
pub fn mib(v: &Value) -> String {
    match v.as_u64() {
        Some(m) if m >= 1024 * 1024 => format!("{:.1} TiB", m as f64 / (1024.0 * 1024.0)),
        Some(m) if m >= 1024 => format!("{:.1} GiB", m as f64 / 1024.0),
        Some(m) => format!("{m} MiB"),
        None => cell(v),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn aligned() {
        let t = objects(
            &json!([{"name": "a", "n": 1, "x": null}, {"name": "long-name", "n": 22, "x": "y"}]),
            &[("name", "name"), ("n", "n"), ("x", "x")],
        );
        assert_eq!(t, "NAME       N   X\na          1   -\nlong-name  22  y\n");
        assert_eq!(mib(&json!(2048)), "2.0 GiB");
        assert_eq!(mib(&json!(100)), "100 MiB");
        assert_eq!(
            fields(&json!({"a": {"b": true}}), &[("deep", "a.b"), ("x", "x")]),
            "deep:  yes\nx:     -\n"
        );
    }
}
