//! Thread-runtime audit: which thread runtimes a process loaded (from `maps`), the
//! thread-count variables in effect (from `environ`), and the pool each runtime will
//! start by its own rules. Pure functions of file contents and the CPU budget.

use crate::model::{CpuBudget, Finding, RuntimeAudit, Sample};

/// Audits one process from the text of its `maps` and the bytes of its `environ`
/// (`None` when `environ` could not be read; `env_unreadable` says why).
pub fn audit_process(
    _maps: &str,
    _environ: Option<&[u8]>,
    _env_unreadable: Option<&str>,
    _cpus: &CpuBudget,
) -> RuntimeAudit {
    RuntimeAudit::default()
}

/// Tree-level findings from the audits in a sample: duplicate runtimes, pools sized from
/// the host, processes × pool threads beyond the usable CPUs.
pub fn audit_findings(_sample: &Sample) -> Vec<Finding> {
    Vec::new()
}
