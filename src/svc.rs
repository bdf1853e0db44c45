//! `hermesinit svc`: the operator CLI over the control socket.

pub fn main(_args: Vec<std::ffi::OsString>) -> i32 {
    eprintln!("hermesinit svc: not implemented yet");
    64
}
