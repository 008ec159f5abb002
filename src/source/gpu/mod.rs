//! GPUs through NVML: memory, utilisation and the processes on each device.
//!
//! One small interface, [`GpuSource`], stands between the engine and NVML, so detectors
//! and tests use recorded samples ([`RecordedGpu`]). NVML is optional twice over: at
//! build time (the `nvml` Cargo feature, on by default) and at run time. No driver
//! library, no device, a permission error, or NVML failing mid-run each become
//! `GpuSample { unavailable: Some(reason), .. }`, never an error exit.
//!
//! ```no_run
//! let mut gpu = tfwatch::source::gpu::open_gpu_source();
//! let sample = gpu.sample(); // once per interval
//! if let Some(reason) = &sample.unavailable {
//!     println!("GPU: unavailable ({reason})");
//! }
//! ```

#[cfg(feature = "nvml")]
mod nvml;
pub mod pidns;

use crate::model::GpuSample;

pub use pidns::{pid_namespace_from_status, read_pid_namespace, read_pid_namespace_in};

/// The reason given when the NVML library cannot be loaded.
pub const NO_NVML_LIBRARY: &str = "no NVML library (no NVIDIA driver)";
/// The reason given when NVML finds no device.
pub const NO_GPU_DEVICE: &str = "no GPU device";

/// Something that reads the machine's GPUs once per interval.
pub trait GpuSource: Send {
    /// One reading. Never fails: what cannot be read is in `unavailable`.
    fn sample(&mut self) -> GpuSample;
}

/// The NVML source when NVML works, otherwise a source that always says why not.
pub fn open_gpu_source() -> Box<dyn GpuSource> {
    #[cfg(feature = "nvml")]
    {
        match nvml::NvmlSource::open() {
            Ok(source) => Box::new(source),
            Err(reason) => Box::new(UnavailableGpu::new(reason)),
        }
    }
    #[cfg(not(feature = "nvml"))]
    {
        Box::new(UnavailableGpu::new(
            "tfwatch was built without the `nvml` feature (rebuild with `--features nvml`)",
        ))
    }
}

/// A source that always reports the same reason for having no GPUs.
#[derive(Debug, Clone)]
pub struct UnavailableGpu {
    reason: String,
}

impl UnavailableGpu {
    pub fn new(reason: impl Into<String>) -> UnavailableGpu {
        UnavailableGpu {
            reason: reason.into(),
        }
    }
}

impl GpuSource for UnavailableGpu {
    fn sample(&mut self) -> GpuSample {
        GpuSample {
            devices: Vec::new(),
            unavailable: Some(self.reason.clone()),
        }
    }
}

/// Why a recording cannot be replayed.
#[derive(Debug, thiserror::Error)]
pub enum GpuError {
    #[error(
        "GPU recording is not valid JSON for a GPU sample or a list of them: {0} (see fixtures/gpu/ for the shape)"
    )]
    Recording(#[from] serde_json::Error),
    #[error("GPU recording holds no samples; record at least one")]
    EmptyRecording,
}

/// Replays recorded [`GpuSample`]s in order, then keeps returning the last one.
#[derive(Debug, Clone)]
pub struct RecordedGpu {
    samples: Vec<GpuSample>,
    next: usize,
}

impl RecordedGpu {
    pub fn new(samples: Vec<GpuSample>) -> Result<RecordedGpu, GpuError> {
        if samples.is_empty() {
            return Err(GpuError::EmptyRecording);
        }
        Ok(RecordedGpu { samples, next: 0 })
    }

    /// A recording in JSON: one `GpuSample` object, or an array of them.
    pub fn from_json(text: &str) -> Result<RecordedGpu, GpuError> {
        #[derive(serde::Deserialize)]
        #[serde(untagged)]
        enum Recording {
            Many(Vec<GpuSample>),
            One(GpuSample),
        }
        let samples = match serde_json::from_str::<Recording>(text) {
            Ok(Recording::Many(samples)) => samples,
            Ok(Recording::One(sample)) => vec![sample],
            // Re-parse as one sample for serde's precise message (line, column, field).
            Err(_) => vec![serde_json::from_str::<GpuSample>(text)?],
        };
        RecordedGpu::new(samples)
    }

    /// All recorded samples.
    pub fn samples(&self) -> &[GpuSample] {
        &self.samples
    }
}

impl GpuSource for RecordedGpu {
    fn sample(&mut self) -> GpuSample {
        let index = self.next.min(self.samples.len() - 1);
        self.next = self.next.saturating_add(1);
        self.samples[index].clone()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn open_gpu_source_never_fails() {
        let sample = open_gpu_source().sample();
        match &sample.unavailable {
            // This machine has no NVIDIA driver (the usual case for CI).
            Some(reason) if sample.devices.is_empty() => {
                let expected = if cfg!(feature = "nvml") {
                    NO_NVML_LIBRARY
                } else {
                    "without the `nvml` feature"
                };
                assert!(
                    reason.contains(expected)
                        || reason.contains(NO_GPU_DEVICE)
                        || reason.starts_with("permission denied"),
                    "{reason}"
                );
            }
            // A real GPU is present: devices were read.
            _ => {
                assert!(!sample.devices.is_empty(), "{sample:?}");
                for device in &sample.devices {
                    assert!(device.memory_total_bytes > 0, "{device:?}");
                }
            }
        }
    }

    #[test]
    fn unavailable_source_repeats_its_reason() {
        let mut source = UnavailableGpu::new("no GPU device");
        for _ in 0..2 {
            let sample = source.sample();
            assert_eq!(sample.unavailable.as_deref(), Some("no GPU device"));
            assert!(sample.devices.is_empty());
        }
    }

    #[test]
    fn recorded_source_replays_then_holds_the_last() {
        let mut source = RecordedGpu::from_json(include_str!(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/fixtures/gpu/idle_held.json"
        )))
        .unwrap();
        let count = source.samples().len();
        assert!(count >= 2);
        let replayed: Vec<GpuSample> = (0..count + 2).map(|_| source.sample()).collect();
        assert_eq!(&replayed[..count], source.samples());
        assert_eq!(replayed[count + 1], source.samples()[count - 1]);

        let one = RecordedGpu::from_json(include_str!(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/fixtures/gpu/two_procs_one_gpu.json"
        )))
        .unwrap();
        assert_eq!(one.samples().len(), 1);
    }

    #[test]
    fn bad_recordings_are_refused() {
        let err = RecordedGpu::from_json("{\"devices\": 3}")
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("not valid JSON") && err.contains("line 1"),
            "{err}"
        );
        assert!(matches!(
            RecordedGpu::from_json("[]"),
            Err(GpuError::EmptyRecording)
        ));
    }
}
