//! Which store the servers of a test process run on: the one switch of the suite.

use std::io::Write as _;
use std::sync::OnceLock;

/// Picks the store for every server of the process, overriding the test binary's name:
/// `sled` or `postgres`.
pub const STORE_ENV: &str = "FLAGSTAFF_TEST_STORE";

/// The store a [`TestServer`](crate::TestServer) runs on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StoreKind {
    /// sled, in the server's data directory.
    Sled,
    /// PostgreSQL: a fresh database of the process's cluster
    /// ([`postgres::fresh_database`](crate::postgres::fresh_database)).
    Postgres,
}

/// The store of this test process's servers: [`STORE_ENV`] when set, otherwise
/// [`StoreKind::Postgres`] in a test binary whose name ends with `_postgres` (`e2e_postgres`,
/// `cli_postgres`: the same sources as `e2e` and `cli`, built twice) and [`StoreKind::Sled`] in
/// any other. Panics when [`STORE_ENV`] names no store.
pub fn store_kind() -> StoreKind {
    static KIND: OnceLock<StoreKind> = OnceLock::new();
    *KIND.get_or_init(|| match std::env::var(STORE_ENV) {
        Ok(store) => match store.as_str() {
            "sled" => StoreKind::Sled,
            "postgres" => StoreKind::Postgres,
            _ => panic!("{STORE_ENV}={store:?}: the store is `sled` or `postgres`"),
        },
        Err(std::env::VarError::NotUnicode(store)) => {
            panic!("{STORE_ENV}={store:?}: the store is `sled` or `postgres`")
        }
        Err(std::env::VarError::NotPresent) => match binary_for_postgres() {
            true => StoreKind::Postgres,
            false => StoreKind::Sled,
        },
    })
}

/// Whether the running test binary is one for PostgreSQL: cargo names it `<target>-<hash>`,
/// and the target's name ends with `_postgres`.
fn binary_for_postgres() -> bool {
    let executable = std::env::current_exe()
        .ok()
        .or_else(|| std::env::args_os().next().map(Into::into));
    let Some(name) = executable
        .as_deref()
        .and_then(std::path::Path::file_stem)
        .and_then(|name| name.to_str())
    else {
        return false;
    };
    let target = name.rsplit_once('-').map_or(name, |(target, _hash)| target);
    target.ends_with("_postgres")
}

/// For a test about sled itself (its files, its records, the repair of damaged ones), which
/// has nothing to test on PostgreSQL: `true` when the servers of this process run on
/// PostgreSQL, after one line on stderr naming the test and `why`, so that it returns early:
///
/// ```no_run
/// # fn a_test() {
/// if flagstaff_tests::skip_unless_sled("damages sled's records") {
///     return;
/// }
/// # }
/// ```
pub fn skip_unless_sled(why: &str) -> bool {
    if store_kind() == StoreKind::Sled {
        return false;
    }
    // The test harness names each test's thread after the test.
    let thread = std::thread::current();
    let test = thread.name().unwrap_or("a test");
    // Straight to stderr: the test harness captures what `eprintln!` prints.
    let _ = writeln!(
        std::io::stderr(),
        "{test}: sled only ({why}), skipped on PostgreSQL"
    );
    true
}
