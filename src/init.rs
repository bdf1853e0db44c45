//! PID 1. Placeholder until the event loop lands.

pub fn main(_args: Vec<std::ffi::OsString>) -> i32 {
    1
}
