//! Names of pools, volumes and snapshots: they become file names, so they
//! are restricted to a safe alphabet and can never escape their directory.

use crate::error::StorageError;

/// Longest name.
pub const MAX_NAME: usize = 64;

/// Checks a name: 1 to 64 characters of `A-Z a-z 0-9 . _ -`, starting with a
/// letter or digit (so no `.`/`..`, no hidden files, no option-like `-x`).
pub fn check(field: &'static str, value: &str) -> Result<(), StorageError> {
    let bad = |reason| {
        Err(StorageError::BadName {
            field,
            value: value.to_string(),
            reason,
        })
    };
    if value.is_empty() {
        return bad("it is empty");
    }
    if value.len() > MAX_NAME {
        return bad("it is longer than 64 characters");
    }
    if value.contains('/') || value.contains('\0') {
        return bad("it contains '/'");
    }
    if value.contains("..") {
        return bad("it contains '..'");
    }
    if !value.as_bytes()[0].is_ascii_alphanumeric() {
        return bad("it must start with a letter or a digit");
    }
    if !value
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || b == b'.' || b == b'_' || b == b'-')
    {
        return bad("only letters, digits, '.', '_' and '-' are allowed");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::check;

    #[test]
    fn good_and_bad_names() {
        for ok in ["a", "web-01", "db_2.data", "X9"] {
            check("name", ok).unwrap();
        }
        for (bad, why) in [
            ("", "empty"),
            ("../etc", "'/'"),
            ("a/b", "'/'"),
            ("..", "'..'"),
            ("a..b", "'..'"),
            (".hidden", "start"),
            ("-rf", "start"),
            ("sp ace", "only"),
            ("é", "start"),
        ] {
            let e = check("name", bad).unwrap_err().to_string();
            assert!(e.contains(why), "{bad:?}: {e}");
            assert!(e.starts_with("name: "), "{e}");
        }
        assert!(check("name", &"a".repeat(65)).is_err());
    }
}
