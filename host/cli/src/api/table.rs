//! The layout of human-readable output: aligned tables, `label: value`
//! blocks and sizes. It knows cells as text only; what goes into them is
//! the [`super::render::Render`] impl of each view.

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

/// `label: value` lines, labels aligned.
pub fn fields(pairs: &[(&str, String)]) -> String {
    let w = pairs.iter().map(|(l, _)| l.len()).max().unwrap_or(0);
    let mut out = String::new();
    for (label, value) in pairs {
        out.push_str(&format!(
            "{:<w$}  {value}\n",
            format!("{label}:"),
            w = w + 1
        ));
    }
    out
}

/// Every line of `s` indented by two spaces.
pub fn indent(s: &str) -> String {
    s.lines().map(|l| format!("  {l}\n")).collect()
}

/// A size in MiB, human-readable (`512 MiB`, `2.0 GiB`).
pub fn mib(m: u64) -> String {
    match m {
        m if m >= 1024 * 1024 => format!("{:.1} TiB", m as f64 / (1024.0 * 1024.0)),
        m if m >= 1024 => format!("{:.1} GiB", m as f64 / 1024.0),
        m => format!("{m} MiB"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn columns_align_and_sizes_read_well() {
        let t = render(
            &["name", "n", "x"],
            &[
                vec!["a".into(), "1".into(), "-".into()],
                vec!["long-name".into(), "22".into(), "y".into()],
            ],
        );
        assert_eq!(t, "NAME       N   X\na          1   -\nlong-name  22  y\n");
        assert_eq!(mib(2048), "2.0 GiB");
        assert_eq!(mib(100), "100 MiB");
        assert_eq!(mib(3 * 1024 * 1024), "3.0 TiB");
        assert_eq!(
            fields(&[("deep", "yes".into()), ("x", "-".into())]),
            "deep:  yes\nx:     -\n"
        );
        assert_eq!(indent("a\nb\n"), "  a\n  b\n");
    }
}
