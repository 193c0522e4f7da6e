//! Empty for now: see README.md.
