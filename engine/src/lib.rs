pub mod sip;
