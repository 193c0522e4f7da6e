//! Durable state: each shard's journal of changes and the files that hold
//! it, sans-IO. The shard decides what to record (`record`), the journal
//! decides when to write and sync (`journal`), and the reactor performs
//! the writes (`reactor::journal_io`).
//!
//! A shard's journal is a sequence of segment files in its own directory
//! (`DIR/shard-N/`), each a header and then checksummed frames; a
//! position in the shard's stream of changes (an LSN) counts the bytes of
//! frames written since the first segment.

pub mod codec;
pub mod frame;
pub mod journal;
pub mod record;
pub mod replay;
pub mod segment;
