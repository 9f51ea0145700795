//! Limits the host enforces on every plugin answer. Policies that stay
//! within them are never refused for size; the host's validator uses the
//! same constants.

/// Most actions, moves or problems in one answer.
pub const MAX_ACTIONS: usize = 256;
/// Longest free-text field (reason, message, code) in bytes.
pub const MAX_TEXT: usize = 4096;
/// Largest NoCloud seed, all files together, in bytes.
pub const MAX_SEED_BYTES: usize = 1024 * 1024;
/// Longest hold or restart delay in milliseconds (one hour).
pub const MAX_HOLD_MS: u64 = 3_600_000;

/// `s` cut to at most [`MAX_TEXT`] bytes on a character boundary, with
/// `...` marking a cut.
pub fn clip(mut s: String) -> String {
    if s.len() > MAX_TEXT {
        let mut end = MAX_TEXT - 3;
        while !s.is_char_boundary(end) {
            end -= 1;
        }
        s.truncate(end);
        s.push_str("...");
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn clip_bounds_text_on_char_boundaries() {
        assert_eq!(clip("short".into()), "short");
        assert_eq!(clip("a".repeat(MAX_TEXT)).len(), MAX_TEXT);
        let c = clip("é".repeat(MAX_TEXT));
        assert!(c.len() <= MAX_TEXT && c.ends_with("..."), "{}", c.len());
    }
}
