//! The NVML source. Everything that touches `nvml-wrapper` is here, behind the `nvml`
//! feature; the rest of tfwatch sees only [`GpuSource`](super::GpuSource).

use nvml_wrapper::Nvml;
use nvml_wrapper::enums::device::UsedGpuMemory;
use nvml_wrapper::error::NvmlError;
use nvml_wrapper::struct_wrappers::device::ProcessInfo;

use super::{GpuSource, NO_GPU_DEVICE, NO_NVML_LIBRARY};
use crate::model::{GpuDevice, GpuProcess, GpuProcessKind, GpuSample};

/// NVML, initialised once and kept for the whole watch.
pub struct NvmlSource {
    nvml: Nvml,
}

impl NvmlSource {
    /// Loads `libnvidia-ml.so.1` and checks there is a device; the error is the
    /// "unavailable" reason.
    pub fn open() -> Result<NvmlSource, String> {
        let nvml = Nvml::init().map_err(|err| describe(&err, "initialising NVML"))?;
        match nvml.device_count() {
            Ok(0) => Err(NO_GPU_DEVICE.to_string()),
            Ok(_) => Ok(NvmlSource { nvml }),
            Err(err) => Err(describe(&err, "counting devices")),
        }
    }

    fn read_device(&self, index: u32) -> Result<GpuDevice, String> {
        let context = |what: &str| format!("GPU {index}: {what}");
        let device = self
            .nvml
            .device_by_index(index)
            .map_err(|err| describe(&err, &context("opening the device")))?;
        let memory = device
            .memory_info()
            .map_err(|err| describe(&err, &context("reading memory")))?;
        // Some boards (and MIG instances) do not report utilisation: that is "unknown".
        let utilization_percent = match device.utilization_rates() {
            Ok(rates) => Some(rates.gpu),
            Err(NvmlError::NotSupported) => None,
            Err(err) => return Err(describe(&err, &context("reading utilisation"))),
        };
        let mut processes = Vec::new();
        for (kind, list) in [
            (GpuProcessKind::Compute, device.running_compute_processes()),
            (
                GpuProcessKind::Graphics,
                device.running_graphics_processes(),
            ),
        ] {
            match list {
                Ok(list) => processes.extend(list.iter().map(|p| process(kind, p))),
                Err(NvmlError::NotSupported) => {}
                Err(err) => {
                    return Err(describe(
                        &err,
                        &context(&format!("listing {kind} processes")),
                    ));
                }
            }
        }
        let name = device
            .name()
            .unwrap_or_else(|err| format!("unknown GPU (name unreadable: {err})"));
        Ok(GpuDevice {
            index,
            name,
            uuid: device.uuid().unwrap_or_default(),
            memory_used_bytes: memory.used,
            memory_total_bytes: memory.total,
            utilization_percent,
            processes,
        })
    }
}

fn process(kind: GpuProcessKind, info: &ProcessInfo) -> GpuProcess {
    GpuProcess {
        pid: i32::try_from(info.pid).unwrap_or(i32::MAX),
        kind,
        used_memory_bytes: match info.used_gpu_memory {
            UsedGpuMemory::Used(bytes) => Some(bytes),
            UsedGpuMemory::Unavailable => None,
        },
    }
}

impl GpuSource for NvmlSource {
    fn sample(&mut self) -> GpuSample {
        let count = match self.nvml.device_count() {
            Ok(count) => count,
            Err(err) => {
                return GpuSample {
                    devices: Vec::new(),
                    unavailable: Some(describe(&err, "counting devices")),
                };
            }
        };
        let mut devices = Vec::new();
        let mut problems = Vec::new();
        for index in 0..count {
            match self.read_device(index) {
                Ok(device) => devices.push(device),
                Err(reason) => problems.push(reason),
            }
        }
        if count == 0 {
            problems.push(NO_GPU_DEVICE.to_string());
        }
        GpuSample {
            devices,
            unavailable: (!problems.is_empty()).then(|| problems.join("; ")),
        }
    }
}

/// An NVML error as an "unavailable" reason that says what to do.
fn describe(err: &NvmlError, doing: &str) -> String {
    match err {
        NvmlError::LibloadingError(cause) => {
            format!("{NO_NVML_LIBRARY}: libnvidia-ml.so.1 could not be loaded ({cause})")
        }
        NvmlError::LibraryNotFound => {
            format!("{NO_NVML_LIBRARY}: NVML could not find its library")
        }
        NvmlError::DriverNotLoaded => format!(
            "NVIDIA driver not loaded ({doing}): load the kernel module or check `nvidia-smi`"
        ),
        NvmlError::NoPermission => format!(
            "permission denied: {doing}: NVML refused access; run as root or give this user access to /dev/nvidia*"
        ),
        NvmlError::FailedToLoadSymbol(symbol) => {
            format!("NVML library too old ({doing}): it lacks {symbol}; update the NVIDIA driver")
        }
        NvmlError::GpuLost => format!(
            "GPU lost ({doing}): the device fell off the bus or is inaccessible; check `dmesg` for Xid errors"
        ),
        other => format!("NVML error {doing}: {other}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reasons_say_what_to_do() {
        assert!(describe(&NvmlError::NoPermission, "x").starts_with("permission denied: "));
        assert!(describe(&NvmlError::LibraryNotFound, "x").starts_with(NO_NVML_LIBRARY));
        assert!(describe(&NvmlError::GpuLost, "reading memory").contains("reading memory"));
    }

    #[test]
    fn source_is_send() {
        fn assert_send<T: Send>() {}
        assert_send::<NvmlSource>();
    }
}
