//! Boot steps (C-BOOT). Placeholder: the real steps land with the boot work.

use crate::config::Config;

/// What init hands to boot.
pub struct Context<'a> {
    pub config: &'a Config,
    /// The container's CMD as given to init (before routing).
    pub main_args: &'a [String],
}

/// A boot failure that stops the container (C-BOOT-6), with the exit code to use.
#[derive(Debug)]
pub struct Fatal {
    pub code: i32,
    pub reason: String,
}

/// Run every boot step in order. Ok means services and the main program may start.
pub fn run(_ctx: &Context) -> Result<(), Fatal> {
    Ok(())
}
