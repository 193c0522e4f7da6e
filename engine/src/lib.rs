pub mod sip;
pub mod core;
pub mod config;
pub mod reactor;
pub mod registrar;
pub mod presence;
