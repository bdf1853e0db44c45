//! Bundled skills: hermes-agent's own `tools.skills_sync` (run as a module, as upstream's boot
//! runs its `skills_sync.py`) copies new and updated bundled skills into
//! `$HERMES_HOME/skills`, keeping user-modified ones, so a fresh volume has them. Run as hermes;
//! its `Done: …` summary goes to the log (the per-skill lines at debug level, and the last of
//! them as warnings when it fails). A failure or timeout is a warning.

pub const ARGS: [&str; 2] = ["-m", "tools.skills_sync"];
pub const PREFIX: &str = "[skills-sync]";
pub const TIMEOUT_SECS: u64 = 120;

/// Is this output line the summary?
pub fn is_summary(line: &str) -> bool {
    line.trim_start().starts_with("Done:")
}
