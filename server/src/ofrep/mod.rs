//! OpenFeature remote evaluation (OFREP) over HTTP, DESIGN.md section 10.

pub mod events;
pub mod limit;
pub mod ticket;
