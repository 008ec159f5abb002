//! Native stacks through rstack's libdw backend: the unwinder only collects instruction
//! addresses while each thread is stopped; symbols and lines are looked up after the
//! threads run again, from symbol tables cached per module (see [`super::lines`]).

use std::time::Instant;

use crate::model::stacks::{StackFrame, ThreadStack};

/// Instruction addresses of every thread of `pid`, with the thread names, and how long
/// the trace held the process. Threads are stopped one at a time, each while its own
/// stack is unwound (rstack's rolling mode: its snapshot mode, which stops them all
/// first, attaches the process id for every thread in rstack 0.3.3 and fails with
/// EPERM); the pause is the whole trace, an upper bound for any one thread.
pub struct RawStacks {
    pub pid: i32,
    pub threads: Vec<(i32, Option<String>, Vec<u64>)>,
    pub paused_seconds: f64,
}

pub fn unwind(pid: i32) -> Result<RawStacks, String> {
    let started = Instant::now();
    let traced = rstack::TraceOptions::new()
        .thread_names(true)
        .symbols(false)
        .snapshot(false)
        .trace(pid as u32)
        .map_err(|error| format!("native unwind of pid {pid} failed: {error}"))?;
    let paused_seconds = started.elapsed().as_secs_f64();
    Ok(RawStacks {
        pid,
        threads: traced
            .threads()
            .iter()
            .map(|thread| {
                (
                    thread.id() as i32,
                    thread.name().map(str::to_string),
                    thread.frames().iter().map(|f| f.ip()).collect(),
                )
            })
            .collect(),
        paused_seconds,
    })
}

/// Demangles a C++ (Itanium) or Rust symbol; other names come back as they are.
pub fn demangle(name: &str) -> String {
    if name.starts_with("_Z") {
        let options = cpp_demangle::DemangleOptions::new().no_return_type();
        // A versioned symbol (`_ZN…@@GLIBCXX_3.4`) demangles without its version.
        let (mangled, version) = match name.split_once('@') {
            Some((m, v)) => (m, Some(v)),
            None => (name, None),
        };
        if let Ok(demangled) = cpp_demangle::Symbol::new(mangled.as_bytes())
            .map_err(|_| ())
            .and_then(|s| s.demangle_with_options(&options).map_err(|_| ()))
        {
            // Rust's legacy mangling is Itanium-shaped: keep rustc-demangle's reading.
            if !demangled.contains("::h") || rustc_demangle::try_demangle(mangled).is_err() {
                return match version {
                    Some(v) => format!("{demangled}@{v}"),
                    None => demangled,
                };
            }
        }
    }
    format!("{:#}", rustc_demangle::demangle(name))
}

/// Symbolises raw stacks: function (demangled), file and line where the modules have
/// them. Runs after the unwind, with the threads running.
pub fn symbolise(raw: RawStacks) -> Vec<ThreadStack> {
    let mut lines = super::lines::SourceLines::new(raw.pid);
    raw.threads
        .into_iter()
        .map(|(tid, name, ips)| ThreadStack {
            pid: raw.pid,
            tid,
            name,
            kind: "native".to_string(),
            frames: ips
                .into_iter()
                .map(|ip| {
                    let found = lines.locate(ip);
                    StackFrame {
                        function: found.function.map(|f| demangle(&f)),
                        file: found.file,
                        line: found.line,
                        address: Some(ip),
                        ..StackFrame::default()
                    }
                })
                .collect(),
            paused_seconds: raw.paused_seconds,
            ..ThreadStack::default()
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cpp_and_rust_symbols_are_demangled() {
        assert_eq!(
            demangle(
                "_ZN4absl12lts_2025081424synchronization_internal11FutexWaiter9WaitUntilEPSt6atomicIiEiNS1_13KernelTimeoutE"
            ),
            "absl::lts_20250814::synchronization_internal::FutexWaiter::WaitUntil(std::atomic<int>*, int, absl::lts_20250814::synchronization_internal::KernelTimeout)"
        );
        assert_eq!(
            demangle("_ZNSt18condition_variable4waitERSt11unique_lockISt5mutexE@@GLIBCXX_3.4.11"),
            "std::condition_variable::wait(std::unique_lock<std::mutex>&)@@GLIBCXX_3.4.11"
        );
        assert_eq!(
            demangle("_ZN3std2rt10lang_start17h0123456789abcdefE"),
            "std::rt::lang_start"
        );
        assert_eq!(
            demangle("pthread_cond_wait@@GLIBC_2.3.2"),
            "pthread_cond_wait@@GLIBC_2.3.2"
        );
        assert_eq!(demangle("_Znot-a-symbol"), "_Znot-a-symbol");
    }
}
