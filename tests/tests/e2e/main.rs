// End-to-end tests: the real flagstaffd on loopback with a temporary data directory, the
// real generated clients; one module per area. One test binary per store: `e2e` runs every
// server on sled, `e2e_postgres` includes this file and runs them on PostgreSQL (an included
// file can have no inner doc comment, hence plain comments).

mod auth;
mod backup;
mod codec;
mod console;
mod console_browser;
mod console_pages;
mod console_sso;
mod documents;
mod evaluate;
mod failover;
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
mod postgres_faults;
mod postgres_harness;
mod postgres_tls;
mod propagation;
mod replica_clients;
mod replica_duties;
mod replica_processes;
mod replica_tokens;
mod replicas;
mod rollouts;
mod sdk;
mod segments;
mod status;
mod watch;
mod watch_model;
