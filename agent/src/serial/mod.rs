//! Serial ports: the passive inventory of the ports present and their UUCP lock holders.

pub mod inventory;
pub mod lock;
