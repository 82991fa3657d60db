//! flagstaffd, Flagstaff's control plane: environments, flags, segments, tokens and the audit
//! log, stored durably and streamed to SDKs.
#![deny(missing_docs)]

pub mod auth;
mod environments;
mod error;
mod operations;
pub mod storage;

pub use environments::{Committed, Current, Environment, Environments, WriteContext};
pub use error::ServerError;
pub use operations::SegmentKeyPatch;
