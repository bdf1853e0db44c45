//! s6-compatible front ends (C-S6). Placeholder until the s6 front-end work lands.

pub const APPLETS: &[&str] =
    &["s6-svc", "s6-svstat", "s6-svscanctl", "s6-svwait", "s6-setuidgid", "s6-log", "with-contenv"];

pub fn main(applet: &str, _args: Vec<std::ffi::OsString>) -> i32 {
    eprintln!("{applet}: not implemented yet");
    100
}
