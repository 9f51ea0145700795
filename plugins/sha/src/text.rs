//! Bounds on the text this policy returns (the host refuses longer fields).

pub use nasvisor_plugin_sdk::limits::{clip, MAX_TEXT};
/// Longest resource name accepted from a status.
pub const MAX_RESOURCE_NAME: usize = 255;

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
