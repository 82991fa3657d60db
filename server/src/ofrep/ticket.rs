//! Tickets: what an OFREP event-stream URL carries instead of a token (DESIGN.md section 10).
//!
//! Browsers cannot put headers on an `EventSource`, so the URL the bulk evaluation advertises
//! (`/ofrep/v1/events?ticket=…`) carries a ticket: the token's id, its environment and that
//! environment's epoch, and an expiry 24 h ([`TICKET_LIFETIME`]) after issue, signed with
//! HMAC-SHA256. Never the token itself: a URL ends up in logs and browser history.
//!
//! The key is [`Store::ticket_key`]: 32 random bytes made once and kept in the store, so a
//! ticket issued by one replica (or before a restart) is honoured by every other.
//!
//! # What a verified ticket does not say
//!
//! [`Tickets::verify`] checks the signature and the expiry only. Whoever serves the stream also
//! checks that the token is not revoked ([`Tokens::is_revoked`](crate::auth::Tokens)) and that
//! the environment still exists with the ticket's epoch, so a ticket never works for a
//! recreated environment of the same name. A stream already open outlives its ticket: expiry
//! is checked when a stream (re)connects.
//!
//! # Format
//!
//! URL-safe base64 without padding (so nothing in it needs escaping in a query string) of:
//! a version byte (1); the expiry in Unix seconds, 8 bytes big-endian; the token id, the
//! environment and the epoch, each as one length byte and at most [`MAX_FIELD_BYTES`] bytes
//! of UTF-8; and the 32-byte HMAC-SHA256 of everything before it. A ticket is thus at most
//! [`MAX_TICKET_LEN`] characters, and anything longer is refused before it is decoded. The
//! signature is checked (in constant time) before the fields are read.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use hmac::{Hmac, Mac};
use sha2::Sha256;

use crate::storage::{Store, StoreError, TICKET_KEY_BYTES};

/// How long a ticket lets a stream (re)connect.
pub const TICKET_LIFETIME: Duration = Duration::from_secs(24 * 60 * 60);

/// The longest token id, environment or epoch a ticket carries: environment keys are at most
/// 128 bytes (`flagstaff_engine::is_valid_key`); token ids and epochs are 32 hex digits.
pub const MAX_FIELD_BYTES: usize = 128;

/// The format version written first in every ticket.
const VERSION: u8 = 1;

/// The length of an HMAC-SHA256 tag.
const TAG_BYTES: usize = 32;

/// Version, expiry, and the three length bytes: a ticket's bytes besides its fields and tag.
const FRAME_BYTES: usize = 1 + 8 + 3;

/// The most bytes a ticket decodes to.
const MAX_TICKET_BYTES: usize = FRAME_BYTES + 3 * MAX_FIELD_BYTES + TAG_BYTES;

/// The longest ticket, in characters: anything longer is refused before it is decoded.
pub const MAX_TICKET_LEN: usize = (MAX_TICKET_BYTES * 4).div_ceil(3);

/// Why a ticket was not issued or not accepted. The messages never quote the ticket.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum TicketError {
    /// The text is not a ticket of this format.
    #[error("malformed ticket: {0}")]
    Malformed(&'static str),
    /// The signature does not match: the ticket was altered, or signed with another key.
    #[error("the ticket's signature does not match: it was altered or is not from this server")]
    BadSignature,
    /// The ticket is past its expiry.
    #[error("the ticket has expired: evaluate the flags again for a new event-stream URL")]
    Expired,
    /// A field to be issued is longer than a ticket holds (only from [`Tickets::issue`]).
    #[error("cannot issue a ticket: the {0} is longer than {MAX_FIELD_BYTES} bytes")]
    FieldTooLong(&'static str),
}

/// What a valid ticket says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Ticket {
    /// The id of the token it was issued for.
    pub token_id: String,
    /// The environment's key.
    pub environment: String,
    /// The environment's epoch when it was issued.
    pub epoch: String,
    /// When it stops letting streams connect (whole seconds).
    pub expires: SystemTime,
}

/// Issues and verifies tickets with one key.
#[derive(Clone)]
pub struct Tickets {
    /// HMAC-SHA256 keyed once; cloned for each ticket.
    mac: Hmac<Sha256>,
}

impl std::fmt::Debug for Tickets {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Tickets").finish_non_exhaustive()
    }
}

impl Tickets {
    /// Tickets signed with `key`.
    pub fn new(key: [u8; TICKET_KEY_BYTES]) -> Tickets {
        Tickets {
            // HMAC takes a key of any length.
            mac: Hmac::new_from_slice(&key).expect("HMAC accepts a 32-byte key"),
        }
    }

    /// Tickets signed with the store's key, made on first use (blocks: it may write it).
    pub fn load<S: Store>(store: &S) -> Result<Tickets, StoreError> {
        Ok(Tickets::new(store.ticket_key()?))
    }

    /// A ticket for `token_id` in `environment` of `epoch`, valid for [`TICKET_LIFETIME`]
    /// from `now`. Fails only for a field over [`MAX_FIELD_BYTES`].
    pub fn issue(
        &self,
        token_id: &str,
        environment: &str,
        epoch: &str,
        now: SystemTime,
    ) -> Result<String, TicketError> {
        let expires = unix_seconds(now).saturating_add(TICKET_LIFETIME.as_secs());
        let mut bytes = Vec::with_capacity(MAX_TICKET_BYTES);
        bytes.push(VERSION);
        bytes.extend_from_slice(&expires.to_be_bytes());
        for (what, field) in [
            ("token id", token_id),
            ("environment", environment),
            ("epoch", epoch),
        ] {
            let len = u8::try_from(field.len())
                .ok()
                .filter(|&len| usize::from(len) <= MAX_FIELD_BYTES)
                .ok_or(TicketError::FieldTooLong(what))?;
            bytes.push(len);
            bytes.extend_from_slice(field.as_bytes());
        }
        let mut mac = self.mac.clone();
        mac.update(&bytes);
        bytes.extend_from_slice(&mac.finalize().into_bytes());
        Ok(URL_SAFE_NO_PAD.encode(bytes))
    }

    /// What `ticket` says, if this server's key signed it and it has not expired at `now`.
    pub fn verify(&self, ticket: &str, now: SystemTime) -> Result<Ticket, TicketError> {
        if ticket.len() > MAX_TICKET_LEN {
            return Err(TicketError::Malformed("too long"));
        }
        let bytes = URL_SAFE_NO_PAD
            .decode(ticket)
            .map_err(|_| TicketError::Malformed("not URL-safe base64 without padding"))?;
        if bytes.len() < FRAME_BYTES + TAG_BYTES {
            return Err(TicketError::Malformed("too short"));
        }
        if bytes[0] != VERSION {
            return Err(TicketError::Malformed("unknown version"));
        }
        let (signed, tag) = bytes.split_at(bytes.len() - TAG_BYTES);
        let mut mac = self.mac.clone();
        mac.update(signed);
        mac.verify_slice(tag)
            .map_err(|_| TicketError::BadSignature)?;

        // Signed by this server's key, so laid out as `issue` lays it out; still read with
        // care, in case a future version shares the key.
        let mut rest = &signed[1..];
        let expires = u64::from_be_bytes(
            take(&mut rest, 8)?
                .try_into()
                .map_err(|_| TicketError::Malformed("too short"))?,
        );
        let mut field = || -> Result<String, TicketError> {
            let len = usize::from(take(&mut rest, 1)?[0]);
            let text = take(&mut rest, len)?;
            String::from_utf8(text.to_vec()).map_err(|_| TicketError::Malformed("not UTF-8"))
        };
        let (token_id, environment, epoch) = (field()?, field()?, field()?);
        if !rest.is_empty() {
            return Err(TicketError::Malformed("trailing bytes"));
        }
        if unix_seconds(now) >= expires {
            return Err(TicketError::Expired);
        }
        Ok(Ticket {
            token_id,
            environment,
            epoch,
            expires: UNIX_EPOCH + Duration::from_secs(expires),
        })
    }
}

/// The first `n` bytes of `rest`, which then starts after them.
fn take<'a>(rest: &mut &'a [u8], n: usize) -> Result<&'a [u8], TicketError> {
    if rest.len() < n {
        return Err(TicketError::Malformed("fields do not fit"));
    }
    let (head, tail) = rest.split_at(n);
    *rest = tail;
    Ok(head)
}

/// `time` in whole seconds since the Unix epoch; 0 before it.
fn unix_seconds(time: SystemTime) -> u64 {
    time.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs())
}

#[cfg(test)]
mod tests {
    use super::*;

    const TOKEN: &str = "0123456789abcdef0123456789abcdef";
    const EPOCH: &str = "fedcba9876543210fedcba9876543210";

    fn at(seconds: u64) -> SystemTime {
        UNIX_EPOCH + Duration::from_secs(seconds)
    }

    fn tickets() -> Tickets {
        Tickets::new([7; 32])
    }

    /// Decodes, changes one byte with `edit`, and encodes again.
    fn altered(ticket: &str, edit: impl FnOnce(&mut Vec<u8>)) -> String {
        let mut bytes = URL_SAFE_NO_PAD.decode(ticket).expect("a ticket decodes");
        edit(&mut bytes);
        URL_SAFE_NO_PAD.encode(bytes)
    }

    #[test]
    fn a_ticket_says_what_it_was_issued_for_until_it_expires() {
        let now = at(1_800_000_000);
        let ticket = tickets()
            .issue(TOKEN, "production", EPOCH, now)
            .expect("issue");
        assert!(ticket.len() <= MAX_TICKET_LEN);
        assert!(
            ticket
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_'),
            "{ticket}"
        );
        let expected = Ticket {
            token_id: TOKEN.to_owned(),
            environment: "production".to_owned(),
            epoch: EPOCH.to_owned(),
            expires: at(1_800_000_000 + 86_400),
        };
        assert_eq!(tickets().verify(&ticket, now), Ok(expected.clone()));
        // A second before expiry, and by another instance holding the same key (a replica).
        assert_eq!(
            Tickets::new([7; 32]).verify(&ticket, at(1_800_086_399)),
            Ok(expected)
        );
        assert_eq!(
            tickets().verify(&ticket, at(1_800_086_400)),
            Err(TicketError::Expired)
        );
    }

    #[test]
    fn the_longest_fields_fit_and_longer_ones_are_refused() {
        let longest = "e".repeat(MAX_FIELD_BYTES);
        let now = at(1);
        let ticket = tickets()
            .issue(&longest, &longest, &longest, now)
            .expect("issue");
        assert_eq!(ticket.len(), MAX_TICKET_LEN);
        let verified = tickets().verify(&ticket, now).expect("verify");
        assert_eq!(verified.environment, longest);
        let over = "e".repeat(MAX_FIELD_BYTES + 1);
        assert_eq!(
            tickets().issue(TOKEN, &over, EPOCH, now),
            Err(TicketError::FieldTooLong("environment"))
        );
        assert_eq!(
            tickets().issue(&"t".repeat(300), "production", EPOCH, now),
            Err(TicketError::FieldTooLong("token id"))
        );
    }

    #[test]
    fn an_altered_ticket_is_refused() {
        let now = at(1_800_000_000);
        let ticket = tickets()
            .issue(TOKEN, "production", EPOCH, now)
            .expect("issue");
        let len = URL_SAFE_NO_PAD.decode(&ticket).expect("decodes").len();
        // Every byte of the payload and of the tag matters.
        for at_byte in 1..len {
            let tampered = altered(&ticket, |b| b[at_byte] ^= 0x01);
            assert_eq!(
                tickets().verify(&tampered, now),
                Err(TicketError::BadSignature),
                "byte {at_byte}"
            );
        }
        // Pushing the expiry a year on.
        let later = altered(&ticket, |b| {
            let expires = u64::from_be_bytes(b[1..9].try_into().expect("8 bytes"));
            b[1..9].copy_from_slice(&(expires + 365 * 86_400).to_be_bytes());
        });
        assert_eq!(
            tickets().verify(&later, now),
            Err(TicketError::BadSignature)
        );
        // Another environment's ticket with the signature of this one.
        let other = tickets()
            .issue(TOKEN, "staging", EPOCH, now)
            .expect("issue");
        let tag = URL_SAFE_NO_PAD.decode(&ticket).expect("decodes")[len - TAG_BYTES..].to_vec();
        let swapped = altered(&other, |b| {
            let start = b.len() - TAG_BYTES;
            b[start..].copy_from_slice(&tag);
        });
        assert_eq!(
            tickets().verify(&swapped, now),
            Err(TicketError::BadSignature)
        );
        // Cut short by a byte of the tag.
        let cut = altered(&ticket, |b| {
            b.pop();
        });
        assert_eq!(tickets().verify(&cut, now), Err(TicketError::BadSignature));
    }

    #[test]
    fn another_key_s_ticket_is_refused() {
        let now = at(1_800_000_000);
        let ticket = Tickets::new([8; 32])
            .issue(TOKEN, "production", EPOCH, now)
            .expect("issue");
        assert_eq!(
            tickets().verify(&ticket, now),
            Err(TicketError::BadSignature)
        );
    }

    #[test]
    fn the_epoch_is_part_of_what_is_signed() {
        let now = at(1_800_000_000);
        let old = tickets()
            .issue(TOKEN, "production", EPOCH, now)
            .expect("issue");
        let recreated = tickets()
            .issue(TOKEN, "production", "00000000000000000000000000000000", now)
            .expect("issue");
        assert_ne!(old, recreated);
        assert_eq!(tickets().verify(&old, now).expect("verify").epoch, EPOCH);
        // Swapping the epoch bytes of one ticket for another's breaks the signature.
        let old_bytes = URL_SAFE_NO_PAD.decode(&old).expect("decodes");
        let forged = altered(&recreated, |b| {
            let tag_at = b.len() - TAG_BYTES;
            b[tag_at..].copy_from_slice(&old_bytes[old_bytes.len() - TAG_BYTES..]);
        });
        assert_eq!(
            tickets().verify(&forged, now),
            Err(TicketError::BadSignature)
        );
    }

    #[test]
    fn garbage_and_overlong_input_is_refused_without_panicking() {
        let now = at(1_800_000_000);
        let t = tickets();
        let malformed = |text: &str| match t.verify(text, now) {
            Err(TicketError::Malformed(_)) => {}
            other => panic!("{text:?}: {other:?}"),
        };
        malformed("");
        malformed("a");
        malformed("not a ticket!");
        malformed("AAAA+/==");
        malformed("aGVsbG8=");
        malformed("\u{1f600}\u{1f600}\u{1f600}\u{1f600}");
        malformed(&"A".repeat(MAX_TICKET_LEN + 1));
        malformed(&"A".repeat(10 * 1024 * 1024));
        // Well-formed base64 of the right size but of an unknown version.
        malformed(&URL_SAFE_NO_PAD.encode([2u8; 80]));
        // Version 1, but nothing after the frame.
        malformed(&URL_SAFE_NO_PAD.encode([1u8; FRAME_BYTES + TAG_BYTES - 1]));
        // Every prefix of a real ticket fails cleanly.
        let ticket = t.issue(TOKEN, "production", EPOCH, now).expect("issue");
        for end in 0..ticket.len() {
            assert!(t.verify(&ticket[..end], now).is_err(), "prefix of {end}");
        }
        // Messages say what is wrong without quoting the input.
        let err = t.verify("secret-looking-text", now).expect_err("refused");
        assert!(!err.to_string().contains("secret"), "{err}");
    }

    #[test]
    fn field_lengths_that_do_not_add_up_are_malformed_even_when_signed() {
        // A ticket signed with the key but laid out wrongly (as a later format might be).
        let t = tickets();
        let mut bytes = vec![VERSION];
        bytes.extend_from_slice(&u64::MAX.to_be_bytes());
        bytes.extend_from_slice(&[200, 1, 2, 3]);
        let mut mac = t.mac.clone();
        mac.update(&bytes);
        bytes.extend_from_slice(&mac.finalize().into_bytes());
        assert_eq!(
            t.verify(&URL_SAFE_NO_PAD.encode(bytes), at(0)),
            Err(TicketError::Malformed("fields do not fit"))
        );
    }

    #[test]
    fn the_key_is_not_shown() {
        assert_eq!(format!("{:?}", tickets()), "Tickets { .. }");
    }
}
