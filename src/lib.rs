//! hermesinit: PID 1, service supervisor, privilege-drop shim and s6 front ends for the
//! Hermes Agent container, in one binary. See README.md for the architecture.

pub mod boot;
pub mod config;
pub mod control;
pub mod creds;
pub mod envdir;
pub mod fsx;
pub mod init;
pub mod logs;
pub mod requests;
pub mod routing;
pub mod s6;
pub mod shim;
pub mod shutdown;
pub mod spawn;
pub mod supervisor;
pub mod svc;
pub mod tai;
pub mod users;
