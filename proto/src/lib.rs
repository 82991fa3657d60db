//! Flagstaff's gRPC contract: package `flagstaff.v1`.
//!
//! The `.proto` files under `flagstaff/v1/` are the public contract: `model.proto` (flags,
//! segments, the export document), `sync.proto` (service `flagstaff.v1.Sync`, the SDKs'
//! stream) and `admin.proto` (service `flagstaff.v1.Admin`, the control plane's API). This
//! crate compiles them with prost and tonic and exposes the generated messages, servers and
//! clients only as [`pb`], so that the rest of Flagstaff (and its users) depend on the
//! engine's domain types, not on generated code. The conversions between the two live in one
//! place: `From<&Flag> for pb::Flag` and `TryFrom<pb::Flag> for Flag`, and the same for
//! [`Segment`](flagstaff_engine::Segment), [`Document`](flagstaff_engine::Document) and
//! [`Serve`](flagstaff_engine::Serve); a segment key patch converts both ways
//! (`pb::SegmentKeyPatch`, [`KeyPatch`](flagstaff_engine::KeyPatch)), so does an evaluation
//! [`Context`](flagstaff_engine::Context), and an evaluation
//! [`Reason`](flagstaff_engine::Reason) converts to its wire form.
//!
//! Conversion maps shapes only. It does not validate: a wire document becomes a domain
//! document that the receiver validates like any JSON or YAML document (for example by
//! building a [`Snapshot`](flagstaff_engine::Snapshot)). It fails, with a [`ConvertError`]
//! naming the field, only where the wire message has no domain form at all: a required
//! message left unset, an `UNSPECIFIED` enum value, a number that is not finite, or
//! `json_value` text that is not JSON.
//!
//! [`watch`] frames the Watch stream at both ends: the server packs snapshots and deltas into
//! messages within a byte budget, and the SDK's [`Assembler`](watch::Assembler) puts them back
//! together, checking the protocol (revisions, parts, heartbeats) as it goes.
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

pub mod codec;
mod convert;
pub mod watch;

pub use convert::ConvertError;

/// The code prost and tonic generate from the `.proto` files: private, reached only through
/// [`pb`].
#[allow(missing_docs, clippy::all)]
mod generated {
    include!(concat!(env!("OUT_DIR"), "/flagstaff.v1.rs"));
    include!(concat!(env!("OUT_DIR"), "/servers/flagstaff.v1.rs"));
}

/// The encoded `google.protobuf.FileDescriptorSet` of `model.proto`, `sync.proto` and
/// `admin.proto`, as protoc wrote it when this crate was built (with source info, so comments
/// come along).
///
/// flagstaffd registers it with gRPC server reflection, so that generic tools (`grpcurl`,
/// `grpcui`, Postman) can list and call `flagstaff.v1.Admin` and `flagstaff.v1.Sync` without
/// the `.proto` files. Decode it with `prost_types::FileDescriptorSet::decode` to read it.
pub const FILE_DESCRIPTOR_SET: &[u8] =
    include_bytes!(concat!(env!("OUT_DIR"), "/flagstaff.v1.bin"));

/// The generated code of package `flagstaff.v1`, for the code that speaks gRPC: the server,
/// the SDK's sync and the CLI. Everything else should use the engine's domain types and the
/// conversions of this crate.
///
/// Field documentation is that of the `.proto` files. Enum fields are `i32` (prost's
/// representation, which keeps values this version does not know); the enums' `TryFrom<i32>`
/// reads them. Each service has a server module (a trait to implement and a tower service
/// wrapping it, e.g. [`pb::sync_server::Sync`] and [`pb::sync_server::SyncServer`]) and a
/// client module (e.g. [`pb::sync_client::SyncClient`]). A `Sync` server's Watch stream yields
/// [`watch::WatchMessage`]s, which go on the wire as the `WatchResponse`s its client receives,
/// so that a server can encode a message once for many streams.
pub mod pb {
    // model.proto: the domain documents.
    pub use crate::generated::{
        condition_value, serve, variant_value, Condition, ConditionValue, Document, Flag, Kind, Op,
        Prerequisite, Rule, Segment, SegmentRule, Serve, Split, Variant, VariantValue, Weight,
    };

    // sync.proto: service Sync.
    pub use crate::generated::{
        sync_client, sync_server, watch_request, watch_response, Ack, Delta, EvaluationCount,
        EventAttribution, EventCount, GuardedFlag, Heartbeat, MetricsWindow, ReportMetricsRequest,
        ReportMetricsResponse, SegmentKeyPatch, SnapshotBegin, SnapshotChunk, SnapshotEnd,
        Subscribe, WatchRequest, WatchResponse,
    };

    // admin.proto: service Admin.
    pub use crate::generated::{
        admin_client, admin_server, apply_request, attribute_value, change, ApplyRequest,
        ApplyResponse, Attribute, AttributeList, AttributeValue, AuditEntry, BackupChunk,
        BackupRequest, Change, ChangeInfo, ClientInstance, Context, CreateEnvironmentRequest,
        CreateEnvironmentResponse, CreateFlagRequest, CreateFlagResponse, CreateSegmentRequest,
        CreateSegmentResponse, CreateTokenRequest, CreateTokenResponse, DeleteEnvironmentRequest,
        DeleteEnvironmentResponse, DeleteFlagRequest, DeleteFlagResponse, DeleteSegmentRequest,
        DeleteSegmentResponse, DocumentSet, Environment, ErrorKind, EvaluateRequest,
        EvaluateResponse, Evaluation, ExportRequest, ExportResponse, FlagChange, FlagEntry,
        FlagUsage, GetClientTokenRequest, GetClientTokenResponse, GetFlagRequest, GetFlagResponse,
        GetRolloutRequest, GetRolloutResponse, GetSegmentRequest, GetSegmentResponse, GuardState,
        GuardStatus, ListClientsRequest, ListClientsResponse, ListEnvironmentsRequest,
        ListEnvironmentsResponse, ListFlagsRequest, ListFlagsResponse, ListHistoryRequest,
        ListHistoryResponse, ListRolloutsRequest, ListRolloutsResponse, ListSegmentsRequest,
        ListSegmentsResponse, ListTokensRequest, ListTokensResponse, PatchSegmentKeysRequest,
        PatchSegmentKeysResponse, PauseRolloutRequest, PauseRolloutResponse, PromoteFlagRequest,
        PromoteFlagResponse, PromoteRolloutRequest, PromoteRolloutResponse, PromoteSegmentRequest,
        PromoteSegmentResponse, Reason, ReasonKind, ResumeRolloutRequest, ResumeRolloutResponse,
        RevertFlagRequest, RevertFlagResponse, RevokeTokenRequest, RevokeTokenResponse, Role,
        RollbackRolloutRequest, RollbackRolloutResponse, RolloutEvent, RolloutEventKind,
        RolloutGuard, RolloutPlan, RolloutStage, RolloutState, SegmentChange, SegmentEntry,
        SegmentSummary, SetDefaultServeRequest, SetDefaultServeResponse, SetFlagEnabledRequest,
        SetFlagEnabledResponse, StartRolloutRequest, StartRolloutResponse, Token,
        UpdateFlagRequest, UpdateFlagResponse, UpdateSegmentRequest, UpdateSegmentResponse,
        WaitForRevisionRequest, WaitForRevisionResponse, WatchChangesRequest, WatchChangesResponse,
    };
}
