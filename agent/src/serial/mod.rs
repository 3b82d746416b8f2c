//! Serial ports: the passive inventory of the ports present and their UUCP lock holders,
//! UUCP locking, the AT conversation with a modem, and HylaFAX's view of its modems.

pub mod at;
pub mod hylafax;
pub mod inventory;
pub mod lock;
