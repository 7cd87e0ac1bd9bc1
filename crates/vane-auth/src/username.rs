//! The user-name rules both credential files share: a name must survive being written on a
//! line of its own and read back.

/// Why `username` cannot be written as the first field of a credentials line, if it cannot:
/// empty, taken for a comment, changed by trimming, or holding a control character.
pub(crate) fn line_problem(username: &str) -> Option<&'static str> {
    if username.is_empty() {
        Some("empty")
    } else if username.starts_with('#') {
        Some("starts with '#'")
    } else if username.trim() != username {
        Some("leading or trailing white space")
    } else if username.chars().any(char::is_control) {
        Some("control character")
    } else {
        None
    }
}
