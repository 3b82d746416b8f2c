//! Telling the routing layer what the checks decided. One file per integration; each reacts
//! to transition events and never slows a check.

pub mod faxstate;
