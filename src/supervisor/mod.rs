//! The service supervisor. Placeholder for the runtime; see servicedir for the on-disk form.

pub mod machine;
pub mod servicedir;
