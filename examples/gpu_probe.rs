//! Prints what NVML reports on this machine — each device's name, memory, utilisation
//! and processes — or why GPUs are unavailable. A smoke test of the GPU source on a GPU
//! machine, independent of the rest of tfwatch:
//!
//! ```text
//! cargo run --example gpu_probe            # one reading
//! cargo run --example gpu_probe -- --json  # the GpuSample as JSON
//! ```

use tfwatch::source::gpu::{open_gpu_source, read_pid_namespace};
use tfwatch::units::format_bytes;

fn main() {
    let json = std::env::args().any(|a| a == "--json");
    let sample = open_gpu_source().sample();
    if json {
        match serde_json::to_string_pretty(&sample) {
            Ok(text) => println!("{text}"),
            Err(err) => eprintln!("gpu_probe: cannot encode the sample: {err}"),
        }
        return;
    }
    println!("pid namespace: {:?}", read_pid_namespace());
    if let Some(reason) = &sample.unavailable {
        println!("GPU: unavailable ({reason})");
    }
    for device in &sample.devices {
        println!(
            "GPU {} {} ({}): {} of {} used, utilization {}",
            device.index,
            device.name,
            device.uuid,
            format_bytes(device.memory_used_bytes),
            format_bytes(device.memory_total_bytes),
            device
                .utilization_percent
                .map_or("unknown".to_string(), |u| format!("{u} %")),
        );
        if device.processes.is_empty() {
            println!("  no processes");
        }
        for process in &device.processes {
            println!(
                "  pid {} ({}): {}",
                process.pid,
                process.kind,
                process
                    .used_memory_bytes
                    .map_or("memory not reported".to_string(), format_bytes),
            );
        }
    }
}
