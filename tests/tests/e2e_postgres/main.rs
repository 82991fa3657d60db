//! The end-to-end tests of `e2e`, with every server on PostgreSQL: the binary's name picks the
//! store (`flagstaff_tests::store_kind`).

include!("../e2e/main.rs");
