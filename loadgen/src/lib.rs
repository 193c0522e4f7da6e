//! A SIP presence load generator. Simulated UEs send REGISTER, PUBLISH and
//! SUBSCRIBE to any RFC-conformant presence server over UDP (many local
//! ports, so a SO_REUSEPORT server sees many flows) or TCP (many
//! connections); responses are matched by Via branch, retransmitted per
//! Timer E/F on UDP, counted by status, and timed in an HDR histogram.
//! NOTIFYs are answered, checked against what was published, and timed.
//!
//! - [`scenario`]: the scenarios and the requests they are made of.
//! - [`profile`]: the busy-hour traffic profile of the `mixed` scenario.
//! - [`transport`]: a worker's UDP sockets or TCP connections.
//! - [`engine`]: one worker thread's load loop and transactions.
//! - [`check`]: what each NOTIFY must be.
//! - [`report`]: the JSON report and the human summary.
//! - [`scale`]: the `scale` scenario's load, phases and report.
//! - [`server_stat`]: the server's CPU and memory, from /proc.
//! - [`baseline`]: a trivial responder measuring this host's ceiling.

pub mod baseline;
pub mod check;
pub mod engine;
pub mod profile;
pub mod report;
pub mod scale;
pub mod scenario;
pub mod server_stat;
pub mod transport;
