pub mod config;
pub mod core;
pub mod presence;
pub mod reactor;
pub mod registrar;
pub mod shard;
pub mod sip;
pub mod storage;
