//! End-to-end tests: the real flagstaffd on loopback with a temporary data directory, the
//! real generated clients. One test binary; one module per area.

mod auth;
mod codec;
mod documents;
mod evaluate;
mod faults;
mod fixtures;
mod flags;
mod guard;
mod guard_simulation;
mod hardening;
mod matrix;
mod metrics;
mod ofrep;
mod openfeature;
mod operations;
mod propagation;
mod rollouts;
mod sdk;
mod segments;
mod status;
mod watch;
mod watch_model;
