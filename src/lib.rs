//! hermesinit: PID 1, service supervisor, privilege-drop shim and s6 front ends for the
//! Hermes Agent container, in one binary. See README.md for the architecture.
//!
//! The public modules are what the binary dispatches to (`init`, `shim`, `svc`, `s6`, `logs`,
//! `routing`) and the parsers and types the integration and property tests drive directly
//! (`boot`, `config`, `control`, `creds`, `envdir`, `fsx`, `supervisor`, `users`). The rest is
//! internal: the loop's machines and helpers change without notice.

pub mod boot;
pub mod config;
pub mod control;
pub mod creds;
pub mod envdir;
pub mod fsx;
pub mod heap;
pub mod init;
pub mod logs;
pub mod routing;
pub mod s6;
pub mod shim;
pub mod supervisor;
pub mod svc;
pub mod users;

mod requests;
mod shutdown;
mod spawn;
mod tai;
