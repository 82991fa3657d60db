//! The CLI tests of `cli`, with every server on PostgreSQL: the binary's name picks the store
//! (`flagstaff_tests::store_kind`).

include!("../cli/main.rs");
