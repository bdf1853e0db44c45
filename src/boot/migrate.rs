//! Config migration: when `config.yaml` exists, hermes-agent's own
//! `hermes_cli.config.migrate_config(interactive=False)` (0.19.0's schema migrations; it also
//! repairs a corrupted `.env`) runs as hermes, its output in the log prefixed `[config-migrate]`.
//! `HERMES_SKIP_CONFIG_MIGRATION` truthy skips it; a failure or timeout is a warning.

/// The Python run with `-c`: a summary line after the migration's own output.
pub const CODE: &str = "\
import sys
from hermes_cli.config import check_config_version, migrate_config
before, latest = check_config_version()
r = migrate_config(interactive=False, quiet=False)
after, _ = check_config_version()
print(f\"config version {before} -> {after} (latest {latest}); \"
      f\"{len(r.get('config_added', []))} config and {len(r.get('env_added', []))} env entries added, \"
      f\"{len(r.get('warnings', []))} warnings\")
";

pub const PREFIX: &str = "[config-migrate]";
pub const TIMEOUT_SECS: u64 = 60;
