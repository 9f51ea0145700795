//! Bounds on the text this policy returns (the host refuses longer fields).

/// Longest reason, message or name in bytes.
pub const MAX_TEXT: usize = 4096;
/// Longest resource name accepted from a status.
pub const MAX_RESOURCE_NAME: usize = 255;

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
    fn clip_bounds_text() {
        assert_eq!(clip("abc".into()), "abc");
        let c = clip("€".repeat(5000));
        assert!(c.len() <= MAX_TEXT && c.ends_with("..."));
        assert_eq!(clip("a".repeat(MAX_TEXT)).len(), MAX_TEXT);
    }
}
