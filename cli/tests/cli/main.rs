//! The `flagstaff` binary against a real server, one module per command group. One test
//! binary rather than one per file: each links the whole CLI and server.

mod common;
mod docs;
mod env;
mod eval;
mod flags;
mod history;
mod rollouts;
mod segments;
mod tls;
mod tokens;
