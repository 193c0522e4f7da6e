//! A SIP presence load generator. Simulated UEs send REGISTER, PUBLISH or
//! SUBSCRIBE to any RFC-conformant presence server over UDP, from many
//! local ports so a SO_REUSEPORT server sees many flows; responses are
//! matched by Via branch, retransmitted per Timer E/F, counted by status,
//! and timed in an HDR histogram.
//!
//! - [`scenario`]: the requests each scenario sends.
//! - [`engine`]: one worker thread's load loop and transactions.
//! - [`report`]: the JSON report and the human summary.
//! - [`baseline`]: a trivial responder measuring this host's ceiling.

pub mod baseline;
pub mod engine;
pub mod report;
pub mod scenario;
