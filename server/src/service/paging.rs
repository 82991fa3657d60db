//! Paging of list calls, as admin.proto's conventions describe it: `page_size` 0 asks for the
//! default, larger sizes are capped, and a page token names the position to continue after.
//!
//! A token is `<fingerprint>.<position>`: the fingerprint is a hash of the listing and the
//! request fields that select what it lists (environment, filters), so a token presented with
//! other fields is refused instead of continuing some other listing; the position (a key, or
//! a revision) is hex, so clients are not tempted to build tokens themselves. Positions are
//! keys, not offsets, so pages do not shift when documents are added or removed meanwhile.

use sha2::{Digest, Sha256};

use crate::error::ServerError;

/// The page size of a request that asks for none.
pub const DEFAULT_PAGE_SIZE: usize = 100;

/// The largest page size served.
pub const MAX_PAGE_SIZE: usize = 1000;

/// The number of entries to return for a requested `page_size`.
pub fn page_size(requested: u32) -> usize {
    match requested {
        0 => DEFAULT_PAGE_SIZE,
        n => usize::try_from(n).map_or(MAX_PAGE_SIZE, |n| n.min(MAX_PAGE_SIZE)),
    }
}

/// The listing a token belongs to: its name and the request fields that select its entries.
#[derive(Debug, Clone, Copy)]
pub struct Scope<'a>(pub &'a [&'a str]);

impl Scope<'_> {
    fn fingerprint(&self) -> String {
        let mut hasher = Sha256::new();
        for part in self.0 {
            // Length-prefixed, so ("ab", "c") and ("a", "bc") differ.
            hasher.update((part.len() as u64).to_be_bytes());
            hasher.update(part.as_bytes());
        }
        hex(&hasher.finalize()[..8])
    }

    /// The token of the page after `position`.
    pub fn token(&self, position: &str) -> String {
        format!("{}.{}", self.fingerprint(), hex(position.as_bytes()))
    }

    /// The position `token` continues after; `None` for the first page ("").
    pub fn position(&self, token: &str) -> Result<Option<String>, ServerError> {
        if token.is_empty() {
            return Ok(None);
        }
        let invalid = || {
            ServerError::Invalid(
                "page_token: not a next_page_token of this listing with these request fields; \
                 start again with an empty page_token"
                    .to_owned(),
            )
        };
        let (fingerprint, position) = token.split_once('.').ok_or_else(invalid)?;
        if fingerprint != self.fingerprint() {
            return Err(invalid());
        }
        let bytes = unhex(position).ok_or_else(invalid)?;
        String::from_utf8(bytes).map(Some).map_err(|_| invalid())
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn unhex(text: &str) -> Option<Vec<u8>> {
    if !text.len().is_multiple_of(2) {
        return None;
    }
    (0..text.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(text.get(i..i + 2)?, 16).ok())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_default_and_cap() {
        assert_eq!(page_size(0), 100);
        assert_eq!(page_size(7), 7);
        assert_eq!(page_size(5000), 1000);
    }

    #[test]
    fn tokens_continue_only_their_own_listing() {
        let scope = Scope(&["flags", "staging", "", "check"]);
        let token = scope.token("checkout-v2");
        assert_eq!(
            scope.position(&token).expect("valid").as_deref(),
            Some("checkout-v2")
        );
        assert_eq!(scope.position("").expect("first page"), None);
        let other = Scope(&["flags", "staging", "", "cart"]);
        assert!(matches!(
            other.position(&token),
            Err(ServerError::Invalid(_))
        ));
        for garbled in ["nonsense", "abc.zz", &format!("{token}0")] {
            assert!(
                matches!(scope.position(garbled), Err(ServerError::Invalid(_))),
                "{garbled}"
            );
        }
    }
}
