//! Capacity planning from loadgen's JSON reports: how many presence hosts a
//! busy hour needs.
//!
//! - [`measured`]: what one host sustained, read from the reports.
//! - [`plan`]: the busy-hour demand of a subscriber base and the hosts it
//!   needs, under a linear cost model.

pub mod measured;
pub mod plan;
