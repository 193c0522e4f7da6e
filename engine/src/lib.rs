pub mod sip;
pub mod core;
