//! GPU findings: pure functions of recorded GPU samples and the watched tree's pids.
//! They never call NVML, so fixtures under `fixtures/gpu/` test them anywhere.

use std::collections::BTreeMap;

use crate::model::PidNamespace;
use crate::model::{Finding, FindingKind, GpuDevice, GpuProcess, GpuSample, Severity};
use crate::units::format_bytes;

const SHARED_REMEDY: &str = "Give each process its own GPU: set CUDA_VISIBLE_DEVICES per worker (worker i sees GPU i), or let one owner process hold the device and serve the others through a queue. Several processes on one GPU contend for its memory and serialise their kernels; with collective or blocking device calls they can wait on each other forever.";

const IDLE_HELD_REMEDY: &str = "The process holds GPU memory but runs no kernels and makes no progress: a stalled device call or a deadlock around one. Look at its threads with `tfwatch snapshot PID --stacks`: a thread blocked in an ioctl on /dev/nvidia* points at the driver (check `dmesg` for Xid errors); threads waiting on futexes around a device call point at a lock or a peer process (another process of the job on the same GPU, or a collective waiting for a rank that died).";

/// The share of a device's memory in use, 0.0 – 1.0.
pub fn memory_share(device: &GpuDevice) -> Option<f64> {
    (device.memory_total_bytes > 0)
        .then(|| device.memory_used_bytes as f64 / device.memory_total_bytes as f64)
}

/// Processes of the tree on a device, one entry per pid (a pid listed as both compute
/// and graphics is merged, memory taken once: NVML reports the same allocation twice).
fn tree_processes<'a>(device: &'a GpuDevice, tree_pids: &[i32]) -> Vec<&'a GpuProcess> {
    let mut by_pid: BTreeMap<i32, &GpuProcess> = BTreeMap::new();
    for process in device
        .processes
        .iter()
        .filter(|p| tree_pids.contains(&p.pid))
    {
        let entry = by_pid.entry(process.pid).or_insert(process);
        if entry.used_memory_bytes.is_none() {
            *entry = process;
        }
    }
    by_pid.into_values().collect()
}

fn describe_device(device: &GpuDevice) -> String {
    let share = memory_share(device)
        .map(|s| format!(" ({:.0} %)", s * 100.0))
        .unwrap_or_default();
    let utilization = device
        .utilization_percent
        .map_or("utilization unknown".to_string(), |u| {
            format!("utilization {u} %")
        });
    format!(
        "GPU {} {} ({}): {} of {} used{share}, {utilization}",
        device.index,
        device.name,
        if device.uuid.is_empty() {
            "no uuid"
        } else {
            &device.uuid
        },
        format_bytes(device.memory_used_bytes),
        format_bytes(device.memory_total_bytes),
    )
}

fn describe_process(process: &GpuProcess) -> String {
    let memory = process
        .used_memory_bytes
        .map_or("memory not reported".to_string(), format_bytes);
    format!("pid {} ({}): {memory}", process.pid, process.kind)
}

fn others_line(device: &GpuDevice, tree_pids: &[i32]) -> Option<String> {
    let mut others: Vec<i32> = device
        .processes
        .iter()
        .map(|p| p.pid)
        .filter(|pid| !tree_pids.contains(pid))
        .collect();
    others.sort_unstable();
    others.dedup();
    (!others.is_empty()).then(|| {
        format!(
            "{} more process(es) outside the watched tree on this GPU: {}",
            others.len(),
            others
                .iter()
                .map(i32::to_string)
                .collect::<Vec<_>>()
                .join(", ")
        )
    })
}

/// More than one process of the watched tree on one GPU. One finding per device.
/// Nothing when the pids cannot be compared (see [`pid_mapping_note`]).
pub fn gpu_shared(sample: &GpuSample, tree_pids: &[i32], namespace: &PidNamespace) -> Vec<Finding> {
    if !namespace.pids_comparable() {
        return Vec::new();
    }
    let mut findings = Vec::new();
    for device in &sample.devices {
        let processes = tree_processes(device, tree_pids);
        if processes.len() < 2 {
            continue;
        }
        let mut finding = Finding::new(
            FindingKind::GpuShared,
            Severity::Warning,
            format!(
                "{} processes of the watched tree share GPU {} ({})",
                processes.len(),
                device.index,
                device.name
            ),
        );
        finding.confidence = 0.9;
        finding.evidence.push(describe_device(device));
        finding
            .evidence
            .extend(processes.iter().map(|p| describe_process(p)));
        finding.evidence.extend(others_line(device, tree_pids));
        finding
            .metrics
            .insert("gpu".into(), f64::from(device.index));
        finding
            .metrics
            .insert("tree_processes".into(), processes.len() as f64);
        finding
            .metrics
            .insert("memory_used_bytes".into(), device.memory_used_bytes as f64);
        if let Some(share) = memory_share(device) {
            finding.metrics.insert("memory_share".into(), share);
        }
        for process in &processes {
            if let Some(bytes) = process.used_memory_bytes {
                finding
                    .metrics
                    .insert(format!("pid_{}_memory_bytes", process.pid), bytes as f64);
            }
        }
        finding.pids = processes.iter().map(|p| p.pid).collect();
        finding.remedy = SHARED_REMEDY.to_string();
        findings.push(finding);
    }
    findings
}

/// GPU memory held by a process of the tree while the device's utilisation was 0 in
/// every sample of the window and the process made no progress (`no_progress_pids`,
/// judged by the engine from CPU and thread states). `window` is oldest first; a device
/// is matched across samples by uuid, else by index. One finding per device.
pub fn gpu_idle_held(
    window: &[&GpuSample],
    tree_pids: &[i32],
    no_progress_pids: &[i32],
    namespace: &PidNamespace,
) -> Vec<Finding> {
    if !namespace.pids_comparable() {
        return Vec::new();
    }
    let readings: Vec<&GpuSample> = window
        .iter()
        .copied()
        .filter(|s| !s.devices.is_empty())
        .collect();
    let Some(latest) = readings.last() else {
        return Vec::new();
    };
    let mut findings = Vec::new();
    for device in &latest.devices {
        let same_device = |d: &&GpuDevice| {
            if device.uuid.is_empty() {
                d.index == device.index
            } else {
                d.uuid == device.uuid
            }
        };
        let history: Vec<Option<u32>> = readings
            .iter()
            .filter_map(|s| s.devices.iter().find(same_device))
            .map(|d| d.utilization_percent)
            .collect();
        // Unknown utilisation is not zero.
        if !history.iter().all(|u| *u == Some(0)) {
            continue;
        }
        let holders: Vec<&GpuProcess> = tree_processes(device, tree_pids)
            .into_iter()
            .filter(|p| no_progress_pids.contains(&p.pid))
            .filter(|p| p.used_memory_bytes != Some(0))
            .collect();
        if holders.is_empty() {
            continue;
        }
        let held: u64 = holders.iter().filter_map(|p| p.used_memory_bytes).sum();
        let mut finding = Finding::new(
            FindingKind::GpuIdleHeld,
            Severity::Error,
            format!(
                "GPU {} ({}) is held but idle: {} held by {} stalled process(es), utilization 0 % over {} reading(s)",
                device.index,
                device.name,
                format_bytes(held),
                holders.len(),
                history.len()
            ),
        );
        finding.confidence = if history.len() >= 3 { 0.85 } else { 0.6 };
        finding.evidence.push(describe_device(device));
        finding.evidence.push(format!(
            "utilization 0 % in all {} GPU readings of the window",
            history.len()
        ));
        finding.evidence.extend(
            holders
                .iter()
                .map(|p| format!("{}; no progress", describe_process(p))),
        );
        finding
            .metrics
            .insert("gpu".into(), f64::from(device.index));
        finding.metrics.insert("held_bytes".into(), held as f64);
        finding
            .metrics
            .insert("idle_readings".into(), history.len() as f64);
        if let Some(share) = memory_share(device) {
            finding.metrics.insert("memory_share".into(), share);
        }
        finding.pids = holders.iter().map(|p| p.pid).collect();
        finding.remedy = IDLE_HELD_REMEDY.to_string();
        findings.push(finding);
    }
    findings
}

/// Why NVML's pids cannot be mapped onto the tree, for an "unavailable" entry (source
/// "gpu"): tfwatch runs in a nested pid namespace while NVML lists processes, or — when
/// the namespace is unknown — the tree uses a GPU (`tree_uses_gpu`, from the runtime
/// audit) yet none of NVML's pids is in it.
pub fn pid_mapping_note(
    sample: &GpuSample,
    tree_pids: &[i32],
    namespace: &PidNamespace,
    tree_uses_gpu: bool,
) -> Option<String> {
    let nvml_pids: Vec<i32> = sample
        .devices
        .iter()
        .flat_map(|d| d.processes.iter().map(|p| p.pid))
        .collect();
    if nvml_pids.is_empty() {
        return None;
    }
    match namespace {
        PidNamespace::Nested { nspids } => Some(format!(
            "mapping not possible: pid namespace: tfwatch runs in a nested pid namespace (NSpid {}) and NVML reports host pids; run tfwatch in the host pid namespace (e.g. `docker run --pid=host`) to map GPU processes to the tree",
            nspids
                .iter()
                .map(i32::to_string)
                .collect::<Vec<_>>()
                .join(" ")
        )),
        PidNamespace::Unknown { reason }
            if tree_uses_gpu && !nvml_pids.iter().any(|p| tree_pids.contains(p)) =>
        {
            Some(format!(
                "mapping not possible: pid namespace: the tree uses a GPU but none of the {} pids NVML reports is in it, and tfwatch's pid namespace is unknown ({reason}); NVML reports host pids, so run tfwatch in the host pid namespace",
                nvml_pids.len()
            ))
        }
        _ => None,
    }
}

/// One entry of `CUDA_VISIBLE_DEVICES`.
#[derive(Debug, Clone, PartialEq, Eq)]
enum VisibleDevice {
    Index(u32),
    /// `GPU-…` (a prefix is enough for CUDA) or `MIG-…`.
    Uuid(String),
}

/// Parses `CUDA_VISIBLE_DEVICES` as CUDA does: entries up to the first invalid one.
fn parse_visible(value: &str) -> Vec<VisibleDevice> {
    let mut visible = Vec::new();
    for entry in value.split(',').map(str::trim) {
        if entry.starts_with("GPU-") || entry.starts_with("MIG-") {
            visible.push(VisibleDevice::Uuid(entry.to_string()));
        } else if let Ok(index) = entry.parse::<u32>() {
            visible.push(VisibleDevice::Index(index));
        } else {
            break;
        }
    }
    visible
}

/// `CUDA_VISIBLE_DEVICES` of a process against the GPUs it actually has contexts on
/// (NVML indices). `None` when they agree or it cannot be told: the variable is unset,
/// or lists UUIDs (use [`cuda_visible_mismatch_devices`] with the devices for those).
pub fn cuda_visible_mismatch(
    env_value: Option<&str>,
    used_device_indices: &[u32],
) -> Option<String> {
    let devices: Vec<GpuDevice> = used_device_indices
        .iter()
        .map(|&index| GpuDevice {
            index,
            ..GpuDevice::default()
        })
        .collect();
    let used: Vec<&GpuDevice> = devices.iter().collect();
    cuda_visible_mismatch_devices(env_value, &used)
}

/// As [`cuda_visible_mismatch`], with the devices themselves so UUID entries can be
/// matched. A `MIG-…` entry is not matched to its parent GPU (it could be any).
pub fn cuda_visible_mismatch_devices(
    env_value: Option<&str>,
    used: &[&GpuDevice],
) -> Option<String> {
    let value = env_value?;
    if used.is_empty() {
        return None;
    }
    let visible = parse_visible(value);
    let has_mig = visible
        .iter()
        .any(|v| matches!(v, VisibleDevice::Uuid(u) if u.starts_with("MIG-")));
    let is_visible = |device: &GpuDevice| {
        visible.iter().any(|entry| match entry {
            VisibleDevice::Index(index) => *index == device.index,
            VisibleDevice::Uuid(uuid) if uuid.starts_with("MIG-") => true,
            // Without the device's uuid it cannot be told: no claim.
            VisibleDevice::Uuid(_) if device.uuid.is_empty() => true,
            VisibleDevice::Uuid(uuid) => device
                .uuid
                .to_ascii_lowercase()
                .starts_with(&uuid.to_ascii_lowercase()),
        })
    };
    let mut hidden: Vec<u32> = used
        .iter()
        .filter(|d| !is_visible(d))
        .map(|d| d.index)
        .collect();
    if hidden.is_empty() || has_mig {
        return None;
    }
    hidden.sort_unstable();
    hidden.dedup();
    let list = |indices: &[u32]| {
        indices
            .iter()
            .map(|i| format!("GPU {i}"))
            .collect::<Vec<_>>()
            .join(", ")
    };
    Some(if visible.is_empty() {
        format!(
            "CUDA_VISIBLE_DEVICES={value:?} hides every GPU, yet the process has a context on {}: the variable was changed after CUDA started, or the context belongs to a library that ignores it",
            list(&hidden)
        )
    } else {
        format!(
            "the process uses {} although CUDA_VISIBLE_DEVICES={value:?} does not make it visible: the variable was changed after CUDA started or a library ignores it; set it per worker before the framework loads (and CUDA_DEVICE_ORDER=PCI_BUS_ID so CUDA numbers GPUs as NVML does)",
            list(&hidden)
        )
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::source::gpu::RecordedGpu;

    const TWO_PROCS: &str = include_str!("../../fixtures/gpu/two_procs_one_gpu.json");
    const IDLE_HELD: &str = include_str!("../../fixtures/gpu/idle_held.json");

    fn recording(text: &str) -> Vec<GpuSample> {
        RecordedGpu::from_json(text).unwrap().samples().to_vec()
    }

    #[test]
    fn two_tree_processes_on_one_gpu_is_shared() {
        let sample = &recording(TWO_PROCS)[0];
        let findings = gpu_shared(sample, &[4242, 4243, 4244], &PidNamespace::Host);
        assert_eq!(findings.len(), 1, "{findings:#?}");
        let finding = &findings[0];
        assert_eq!(finding.kind, FindingKind::GpuShared);
        assert_eq!(finding.severity, Severity::Warning);
        assert_eq!(finding.pids, vec![4242, 4243]);
        assert_eq!(finding.metrics["gpu"], 0.0);
        assert_eq!(finding.metrics["tree_processes"], 2.0);
        assert!(finding.metrics.contains_key("pid_4242_memory_bytes"));
        let evidence = finding.evidence.join("\n");
        assert!(evidence.contains("GPU 0 NVIDIA H100"), "{evidence}");
        assert!(
            evidence.contains("pid 4242 (compute): 14.0 GiB"),
            "{evidence}"
        );
        assert!(
            evidence.contains("outside the watched tree on this GPU: 999"),
            "{evidence}"
        );
        assert!(finding.remedy.contains("CUDA_VISIBLE_DEVICES"));
        assert!(finding.remedy.contains("queue"));
    }

    #[test]
    fn one_tree_process_per_gpu_is_fine() {
        let sample = &recording(TWO_PROCS)[0];
        assert!(gpu_shared(sample, &[4242], &PidNamespace::Host).is_empty());
        // 999 is someone else's: one tree process plus a stranger is not sharing.
        assert!(gpu_shared(sample, &[4242, 999 + 1], &PidNamespace::Host).is_empty());
        assert!(gpu_shared(&GpuSample::default(), &[1, 2], &PidNamespace::Host).is_empty());
    }

    #[test]
    fn compute_and_graphics_entries_of_one_pid_count_once() {
        let mut sample = recording(TWO_PROCS)[0].clone();
        sample.devices[0].processes.push(GpuProcess {
            pid: 4242,
            kind: crate::model::GpuProcessKind::Graphics,
            used_memory_bytes: None,
        });
        assert!(gpu_shared(&sample, &[4242, 999 + 1], &PidNamespace::Host).is_empty());
    }

    #[test]
    fn nested_namespace_makes_no_guess_and_says_why() {
        let sample = &recording(TWO_PROCS)[0];
        let nested = PidNamespace::Nested {
            nspids: vec![90210, 12],
        };
        assert!(gpu_shared(sample, &[4242, 4243], &nested).is_empty());
        let note = pid_mapping_note(sample, &[12, 13], &nested, true).unwrap();
        assert!(
            note.starts_with("mapping not possible: pid namespace"),
            "{note}"
        );
        assert!(note.contains("90210 12"), "{note}");
        assert_eq!(
            pid_mapping_note(sample, &[4242], &PidNamespace::Host, true),
            None
        );
        let unknown = PidNamespace::Unknown {
            reason: "no NSpid".into(),
        };
        assert!(pid_mapping_note(sample, &[12], &unknown, true).is_some());
        assert_eq!(pid_mapping_note(sample, &[12], &unknown, false), None);
        assert_eq!(
            pid_mapping_note(&GpuSample::default(), &[12], &nested, true),
            None
        );
    }

    #[test]
    fn idle_gpu_held_by_a_stalled_process() {
        let samples = recording(IDLE_HELD);
        let window: Vec<&GpuSample> = samples.iter().collect();
        let findings = gpu_idle_held(&window, &[5151, 5152], &[5151], &PidNamespace::Host);
        assert_eq!(findings.len(), 1, "{findings:#?}");
        let finding = &findings[0];
        assert_eq!(finding.kind, FindingKind::GpuIdleHeld);
        assert_eq!(finding.severity, Severity::Error);
        assert_eq!(finding.pids, vec![5151]);
        assert_eq!(
            finding.metrics["held_bytes"],
            12.0 * 1024.0 * 1024.0 * 1024.0
        );
        assert_eq!(finding.metrics["idle_readings"], window.len() as f64);
        assert!(
            finding.summary.contains("held but idle"),
            "{}",
            finding.summary
        );
        assert!(finding.remedy.contains("--stacks"));
    }

    #[test]
    fn idle_held_needs_no_progress_zero_utilization_and_comparable_pids() {
        let samples = recording(IDLE_HELD);
        let window: Vec<&GpuSample> = samples.iter().collect();
        // The process is progressing.
        assert!(gpu_idle_held(&window, &[5151], &[], &PidNamespace::Host).is_empty());
        // Not a tree process.
        assert!(gpu_idle_held(&window, &[1], &[1], &PidNamespace::Host).is_empty());
        // One busy reading in the window.
        let mut busy = samples.clone();
        busy[0].devices[0].utilization_percent = Some(35);
        let busy_window: Vec<&GpuSample> = busy.iter().collect();
        assert!(gpu_idle_held(&busy_window, &[5151], &[5151], &PidNamespace::Host).is_empty());
        // Unknown utilisation is not zero.
        let mut unknown = samples.clone();
        unknown[1].devices[0].utilization_percent = None;
        let unknown_window: Vec<&GpuSample> = unknown.iter().collect();
        assert!(gpu_idle_held(&unknown_window, &[5151], &[5151], &PidNamespace::Host).is_empty());
        // Unavailable readings are skipped, an empty window gives nothing.
        let gap = GpuSample {
            devices: Vec::new(),
            unavailable: Some("GPU lost".into()),
        };
        let mut with_gap = window.clone();
        with_gap.insert(1, &gap);
        assert_eq!(
            gpu_idle_held(&with_gap, &[5151], &[5151], &PidNamespace::Host).len(),
            1
        );
        assert!(gpu_idle_held(&[], &[5151], &[5151], &PidNamespace::Host).is_empty());
        let nested = PidNamespace::Nested { nspids: vec![1, 2] };
        assert!(gpu_idle_held(&window, &[5151], &[5151], &nested).is_empty());
    }

    #[test]
    fn cuda_visible_devices_against_used_gpus() {
        assert_eq!(cuda_visible_mismatch(None, &[0, 1]), None);
        assert_eq!(cuda_visible_mismatch(Some("0,1"), &[1]), None);
        assert_eq!(cuda_visible_mismatch(Some(" 1 , 0 "), &[0, 1]), None);
        assert_eq!(cuda_visible_mismatch(Some("0"), &[]), None);
        let message = cuda_visible_mismatch(Some("0"), &[0, 1]).unwrap();
        assert!(
            message.contains("GPU 1") && message.contains("\"0\""),
            "{message}"
        );
        assert!(!message.contains("GPU 0,"), "{message}");
        let message = cuda_visible_mismatch(Some(""), &[0]).unwrap();
        assert!(message.contains("hides every GPU"), "{message}");
        // CUDA stops at the first invalid entry: "-1" hides what follows.
        let message = cuda_visible_mismatch(Some("0,-1,1"), &[1]).unwrap();
        assert!(message.contains("GPU 1"), "{message}");
        assert!(cuda_visible_mismatch(Some("NoDevFiles"), &[2]).is_some());
        // UUIDs cannot be told from indices alone.
        assert_eq!(cuda_visible_mismatch(Some("GPU-8932f937"), &[3]), None);
    }

    #[test]
    fn cuda_visible_devices_with_uuids() {
        let sample = &recording(TWO_PROCS)[0];
        let gpu0 = &sample.devices[0];
        let gpu1 = &sample.devices[1];
        assert_eq!(
            cuda_visible_mismatch_devices(Some("GPU-8932f937"), &[gpu0]),
            None
        );
        // Lower-case "gpu-" is no UUID entry for CUDA: parsing stops there, nothing is visible.
        assert!(cuda_visible_mismatch_devices(Some("gpu-8932f937"), &[gpu0]).is_some());
        let message = cuda_visible_mismatch_devices(Some("GPU-8932f937"), &[gpu0, gpu1]).unwrap();
        assert!(message.contains("GPU 1"), "{message}");
        assert_eq!(
            cuda_visible_mismatch_devices(Some("MIG-0ab1"), &[gpu0, gpu1]),
            None
        );
    }

    #[test]
    fn memory_share_of_a_device() {
        let sample = &recording(TWO_PROCS)[0];
        let share = memory_share(&sample.devices[0]).unwrap();
        assert!(share > 0.3 && share < 0.5, "{share}");
        assert_eq!(memory_share(&GpuDevice::default()), None);
    }
}
