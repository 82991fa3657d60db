//! flagstaffd, Flagstaff's control plane: environments, flags, segments, tokens and the audit
//! log, stored durably and streamed to SDKs.
#![deny(missing_docs)]

pub mod storage;
