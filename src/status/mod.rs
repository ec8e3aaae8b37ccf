//! The status part: what the gateway is doing now, for people and fleets.
//!
//! - `board`: each session's state, written by the sessions, read by
//!   everything below (one [`StatusBoard`] per gateway);
//! - `document`: the one typed status document the running gateway writes
//!   to `status.file` and the `status` command reads back;
//! - `file`: the thread that keeps that file current;
//! - `report`: the `status` command, from the file and the spool.
//!
//! The status table upload (`catalog::status_upload`) reads the board too;
//! this part imports neither the catalog nor the sessions, so status flows
//! one way: sessions → board → file, table, report.

mod board;
pub(crate) mod document;
pub(crate) mod file;
pub(crate) mod report;

pub(crate) use board::SessionTicket;
pub use board::{SessionStatus, StatusBoard};
pub use report::report;
