//! End-to-end tests of Flagstaff live in `tests/`.
