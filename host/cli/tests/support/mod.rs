//! Helpers of the CLI tests that run the real binary: what it printed,
//! and the shape of a success or a one-line error.

#![allow(dead_code)]

use std::path::Path;
use std::process::Output;

pub fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

pub fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

pub fn show(o: &Output) -> String {
    format!(
        "status {:?}\n--- stdout\n{}\n--- stderr\n{}",
        o.status,
        stdout(o),
        stderr(o)
    )
}

pub fn assert_success(o: &Output) {
    assert!(o.status.success(), "expected success, got {}", show(o));
}

/// Asserts the command failed with exit status 1 and exactly one line on
/// stderr that contains `needle`; returns that line.
pub fn assert_one_line_error(o: &Output, needle: &str) -> String {
    assert_eq!(o.status.code(), Some(1), "expected exit 1, got {}", show(o));
    let err = stderr(o);
    let lines: Vec<&str> = err.lines().collect();
    assert_eq!(lines.len(), 1, "expected one stderr line, got {}", show(o));
    assert!(
        lines[0].starts_with("error: "),
        "stderr does not start with \"error: \": {}",
        show(o)
    );
    assert!(
        lines[0].contains(needle),
        "stderr does not contain {needle:?}: {}",
        show(o)
    );
    assert!(
        o.stdout.is_empty(),
        "expected no stdout on error, got {}",
        show(o)
    );
    lines[0].to_string()
}

pub fn p(path: &Path) -> &str {
    path.to_str().expect("utf-8 path")
}
