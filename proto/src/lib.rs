//! Flagstaff's gRPC contract: package `flagstaff.v1`.
//!
//! The `.proto` files under `flagstaff/v1/` are the public contract; this crate compiles them
//! with prost and exposes the generated messages only as [`pb`], so that the rest of Flagstaff
//! (and its users) depend on the engine's domain types, not on generated code. The
//! conversions between the two live in one place: `From<&Flag> for pb::Flag` and
//! `TryFrom<pb::Flag> for Flag`, and the same for [`Segment`](flagstaff_engine::Segment) and
//! [`Document`](flagstaff_engine::Document).
//!
//! Conversion maps shapes only. It does not validate: a wire document becomes a domain
//! document that the receiver validates like any JSON or YAML document (for example by
//! building a [`Snapshot`](flagstaff_engine::Snapshot)). It fails, with a [`ConvertError`]
//! naming the field, only where the wire message has no domain form at all: a required
//! message left unset, an `UNSPECIFIED` enum value, a number that is not finite, or
//! `json_value` text that is not JSON.
//!
//! ```
//! use flagstaff_engine::Flag;
//! use flagstaff_proto::pb;
//!
//! let flag = flagstaff_engine::flag_from_value(&serde_json::json!({
//!     "key": "checkout-v2",
//!     "kind": "boolean",
//!     "variants": { "on": true, "off": false },
//!     "off_variant": "off",
//!     "enabled": true,
//!     "default": { "variant": "off" },
//! }))
//! .expect("a flag document");
//!
//! let wire = pb::Flag::from(&flag);
//! assert_eq!(wire.variants[0].key, "on");
//! assert_eq!(Flag::try_from(wire).expect("converts back"), flag);
//! ```
#![deny(missing_docs)]

mod convert;

pub use convert::ConvertError;

/// The code prost generates from the `.proto` files: private, reached only through [`pb`].
#[allow(missing_docs, clippy::all)]
mod generated {
    include!(concat!(env!("OUT_DIR"), "/flagstaff.v1.rs"));
}

/// The generated messages of package `flagstaff.v1`, for the code that speaks gRPC: the server,
/// the SDK's sync and the CLI. Everything else should use the engine's domain types and the
/// conversions of this crate.
///
/// Field documentation is that of the `.proto` files. Enum fields are `i32` (prost's
/// representation, which keeps values this version does not know); the enums' `TryFrom<i32>`
/// reads them.
pub mod pb {
    pub use crate::generated::{
        condition_value, serve, variant_value, Condition, ConditionValue, Document, Flag, Kind, Op,
        Prerequisite, Rule, Segment, SegmentRule, Serve, Split, Variant, VariantValue, Weight,
    };
}
