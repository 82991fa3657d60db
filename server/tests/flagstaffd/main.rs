//! flagstaffd as a separate process, the real binary: durability across SIGKILL, the data
//! directory lock, `admin-token`, the operational options (metrics, TLS, SIGTERM), TLS to the
//! database, and rollout plans across a restart.

mod daemon;
mod database_tls;
mod durability;
mod options;
mod repair;
mod rollouts;

pub use daemon::*;

use std::io::{Read, Write};
use std::path::Path;
use std::process::Command;
use std::time::Duration;

use flagstaff_proto::pb;
use flagstaff_proto::pb::admin_client::AdminClient;
use tonic::transport::{Certificate, Channel, ClientTlsConfig, Endpoint};
