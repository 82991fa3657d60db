// The `flagstaff` binary against a real server, one module per command group. One test
// binary per store rather than one per file, as each links the whole CLI and server: `cli`
// runs every server on sled, `cli_postgres` includes this file and runs them on PostgreSQL (an
// included file can have no inner doc comment, hence plain comments).

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
