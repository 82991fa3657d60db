//! Flagstaff's SDK: the crate services embed to evaluate feature flags.
//!
//! Evaluation is local: the client holds the environment's compiled [`Snapshot`] behind a
//! lock-free `ArcSwap`, which each evaluating thread caches until the snapshot changes, so
//! every call is a thread-local lookup, one hash-map lookup, the engine's evaluation and a
//! count of the variant served, with no lock, no I/O and (for boolean, string-by-reference and
//! number flags) no allocation. [`Client::builder`] connects to flagstaffd, keeps the snapshot
//! fresh from its Watch stream and reports what was evaluated ([`Client::track`] adds
//! application events); a client can also serve an export file (the bootstrap file of
//! DESIGN.md 6a) with no server at all, as below.
//!
//! ```
//! use flagstaff::{Client, Context};
//!
//! let client = Client::from_export_text(r#"
//! environment: production
//! flags:
//!   - key: checkout-v2
//!     kind: boolean
//!     variants: { "on": true, "off": false }
//!     off_variant: "off"
//!     enabled: true
//!     rules:
//!       - id: eu
//!         conditions: [{ attribute: country, op: in, values: [NL, DE] }]
//!         serve: { variant: "on" }
//!     default: { variant: "off" }
//! "#)?;
//!
//! let ctx = Context::new("user-42").with("country", "NL");
//! assert!(client.bool_value("checkout-v2", &ctx, false));
//! assert!(!client.bool_value("checkout-v2", &Context::new("user-7"), false));
//! # Ok::<(), flagstaff::Error>(())
//! ```
#![deny(missing_docs)]

mod cache;
mod client;
mod detail;
mod error;
mod listeners;
mod live;
mod metrics;
#[cfg(feature = "openfeature")]
pub mod openfeature;
mod report;
mod status;
mod tally;
mod test_data;

pub use client::{Client, ClientBuilder};
pub use detail::{EvaluationDetail, EvaluationReason};
pub use error::Error;
pub use flagstaff_engine::{AttrRef, AttrValue, Context, Detail, ErrorKind, Reason, Snapshot};
pub use listeners::{FlagChange, Subscription, QUEUE_CAPACITY};
pub use status::{Source, State, Stats, Status};
pub use test_data::TestData;
