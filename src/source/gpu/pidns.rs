//! Whether the pids NVML reports can be compared with the pids tfwatch sees.
//!
//! NVML reports pids of the host's pid namespace. When tfwatch runs in a nested pid
//! namespace (a container without `--pid=host`), the watched tree's pids are different
//! numbers, and matching them against NVML's would be a guess. `NSpid` in
//! `/proc/self/status` lists tfwatch's pid in each namespace from the one `/proc` was
//! mounted in down to its own: more than one entry means nested.

use crate::model::PidNamespace;

/// Reads the namespace from the text of a `status` file.
pub fn pid_namespace_from_status(status: &str) -> PidNamespace {
    let Some(line) = status.lines().find_map(|l| l.strip_prefix("NSpid:")) else {
        return PidNamespace::Unknown {
            reason: "no NSpid line in /proc/self/status (kernel older than 4.1)".to_string(),
        };
    };
    let parsed: Result<Vec<i32>, _> = line.split_whitespace().map(str::parse).collect();
    match parsed {
        Ok(nspids) if nspids.len() == 1 => PidNamespace::Host,
        Ok(nspids) if nspids.len() > 1 => PidNamespace::Nested { nspids },
        _ => PidNamespace::Unknown {
            reason: format!("unreadable NSpid line {:?}", line.trim()),
        },
    }
}

/// Reads tfwatch's own namespace from `/proc/self/status`.
pub fn read_pid_namespace() -> PidNamespace {
    read_pid_namespace_in(std::path::Path::new("/proc"))
}

/// Reads tfwatch's own namespace from `self/status` under `proc_root`.
pub fn read_pid_namespace_in(proc_root: &std::path::Path) -> PidNamespace {
    let path = proc_root.join("self/status");
    match std::fs::read_to_string(&path) {
        Ok(status) => pid_namespace_from_status(&status),
        Err(err) => PidNamespace::Unknown {
            reason: format!("cannot read {}: {err}", path.display()),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn host_nested_and_unknown() {
        let host = "Name:\ttfwatch\nTgid:\t812\nNSpid:\t812\nNSpgid:\t812\n";
        assert_eq!(pid_namespace_from_status(host), PidNamespace::Host);
        let nested = "Name:\ttfwatch\nNSpid:\t40211\t7\n";
        let ns = pid_namespace_from_status(nested);
        assert_eq!(
            ns,
            PidNamespace::Nested {
                nspids: vec![40211, 7]
            }
        );
        assert!(!ns.pids_comparable());
        assert!(matches!(
            pid_namespace_from_status("Name:\tx\n"),
            PidNamespace::Unknown { .. }
        ));
        assert!(matches!(
            pid_namespace_from_status("NSpid:\tabc\n"),
            PidNamespace::Unknown { .. }
        ));
        assert!(matches!(
            pid_namespace_from_status("NSpid:\n"),
            PidNamespace::Unknown { .. }
        ));
    }

    #[test]
    fn reads_this_process() {
        // Whatever the machine, the reader answers without failing.
        let _ = read_pid_namespace().pids_comparable();
    }
}
