//! The check engine: scheduler -> check -> tracker -> model, and the bus of transitions.

pub mod bus;
pub mod model;
pub mod scheduler;
pub mod tracker;
