//! Container id validation: ids become directory names under the state root,
//! so they are checked before anything touches the filesystem.

use crate::{Error, Result};

/// Longest accepted id (runc accepts any length; a file name is at most 255 bytes).
pub const MAX_ID_LEN: usize = 255;

/// Checks that `id` is a safe, single path component made of `[A-Za-z0-9_.+-]`.
pub fn validate(id: &str) -> Result<()> {
    let bad = |reason| Err(Error::InvalidId { id: id.to_string(), reason });
    if id.is_empty() {
        return bad("must not be empty");
    }
    if id.len() > MAX_ID_LEN {
        return bad("longer than 255 bytes");
    }
    if id == "." || id == ".." {
        return bad("must not be . or ..");
    }
    if !id.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b'+' | b'-')) {
        return bad("only letters, digits and _ . + - are allowed");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_usual_ids() {
        for id in ["a", "web-1", "k8s_pod.1+x", &"x".repeat(255)] {
            assert!(validate(id).is_ok(), "{id}");
        }
    }

    #[test]
    fn rejects_path_like_ids() {
        for id in ["", ".", "..", "a/b", "../x", "a b", "a\0b", &"x".repeat(256), "é"] {
            assert!(validate(id).is_err(), "{id:?}");
        }
    }
}
