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

/// The most bytes a page's entries take, encoded: a page fits gRPC's default receive limit of
/// 4 MiB, so that any client can read it, whatever the documents hold.
pub const MAX_PAGE_BYTES: usize = 4 * 1024 * 1024 - 64 * 1024;

/// Cuts `entries` to those that fit in [`MAX_PAGE_BYTES`], but never below one, so that paging
/// always moves on; returns whether it cut any.
pub fn fit<T: prost::Message>(entries: &mut Vec<T>) -> bool {
    let mut bytes = 0;
    let fitting = entries
        .iter()
        .position(|entry| {
            bytes += entry.encoded_len() + 8;
            bytes > MAX_PAGE_BYTES
        })
        .map_or(entries.len(), |over| over.max(1));
    let cut = fitting < entries.len();
    entries.truncate(fitting);
    cut
}

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

/// One page of `items`, sorted by key, after the position of `page_token`: the page and the
/// token of the next one ("" on the last page).
pub fn page<'a, T>(
    mut items: Vec<&'a T>,
    key: impl Fn(&T) -> &str,
    scope: Scope<'_>,
    page_token: &str,
    requested_size: u32,
) -> Result<(Vec<&'a T>, String), ServerError> {
    items.sort_unstable_by(|a, b| key(a).cmp(key(b)));
    let start = match scope.position(page_token)? {
        Some(after) => items.partition_point(|item| key(item) <= after.as_str()),
        None => 0,
    };
    let size = page_size(requested_size);
    let rest = items.split_off(start);
    let more = rest.len() > size;
    let page: Vec<&T> = rest.into_iter().take(size).collect();
    let next = match page.last() {
        Some(last) if more => scope.token(key(last)),
        _ => String::new(),
    };
    Ok((page, next))
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
    fn pages_are_cut_to_fit_but_keep_one_entry() {
        let big = |n: usize| flagstaff_proto::pb::ChangeInfo {
            comment: "c".repeat(n),
            ..Default::default()
        };
        let mut entries = vec![
            big(MAX_PAGE_BYTES / 3),
            big(MAX_PAGE_BYTES / 3),
            big(MAX_PAGE_BYTES / 3),
        ];
        assert!(fit(&mut entries));
        assert_eq!(entries.len(), 2);
        let mut one = vec![big(MAX_PAGE_BYTES * 2), big(1)];
        assert!(fit(&mut one));
        assert_eq!(one.len(), 1);
        let mut small = vec![big(10); 1000];
        assert!(!fit(&mut small));
        assert_eq!(small.len(), 1000);
    }

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
