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
//!
//! # Where things are
//!
//! Each module depends only on those listed after it.
//!
//! - `openfeature` (cargo feature `openfeature`): the OpenFeature provider.
//! - `test_data`: [`TestData`], flags for unit tests without a server.
//! - `client`: [`Client`], its constructors and its public API; [`ClientBuilder::build`]
//!   starts a connected client.
//! - `sync`: a connected client's background task: the Watch stream (`sync::stream`), the
//!   endpoints and addresses it goes round (`sync::rotation`), its reconnection backoff
//!   (`sync::backoff`) and the usage reporter (`sync::report`).
//! - `evaluation`: the one generic evaluation path behind the typed methods, and
//!   `evaluation::per_thread`, each thread's copy of the snapshot and its count of what it
//!   served: the hot path.
//! - `core`: what a client, its clones and its background task share: the snapshot and its
//!   generation, status, counters, listeners, usage metrics.
//! - `usage`: usage metrics: per-thread tallies (`usage::tally`), their collection, and the
//!   windows of counts and events that reports carry (`usage::windows`).
//! - `config`: [`ClientBuilder`]'s options and the settings the background task runs with.
//! - `listeners`: change listeners ([`Client::on_change`]).
//! - `cache`: the cache file of the last good snapshot.
//! - `detail`, `status`, `error`: [`EvaluationDetail`], [`Status`] and [`Stats`], [`Error`].
#![deny(missing_docs)]

mod cache;
mod client;
mod config;
mod core;
mod detail;
mod error;
mod evaluation;
mod listeners;
#[cfg(feature = "openfeature")]
pub mod openfeature;
mod status;
mod sync;
mod test_data;
mod usage;

pub use client::Client;
pub use config::ClientBuilder;
pub use detail::{EvaluationDetail, EvaluationReason};
pub use error::Error;
pub use flagstaff_engine::{AttrRef, AttrValue, Context, Detail, ErrorKind, Reason, Snapshot};
pub use listeners::{FlagChange, Subscription, QUEUE_CAPACITY};
pub use status::{Source, State, Stats, Status};
pub use test_data::TestData;
