//! Added cost of reading lock owners: a detail sample of a process whose threads are
//! each blocked on their own pthread mutex (the worst case: one `process_vm_readv` per
//! thread), with `read_lock_owners` on and off, in the same run. Wall and CPU time per
//! sample are printed with the machine. Run: `cargo bench --bench locks`.
//!
//! The target is forked while the bench has one thread: its main thread locks N
//! mutexes, then starts N threads with small stacks, thread i blocking on mutex i.

use std::hint::black_box;
use std::time::Instant;

use tfwatch::source::proc::{SampleTime, Sampler, SamplerConfig};

const SIZES: [usize; 2] = [100, 1_000];
const ROUNDS: u32 = 30;

mod support;

use support::{Target, cpu_seconds};

/// A forked process whose main thread locks `threads` mutexes, then starts `threads`
/// threads with small stacks, thread i blocking on mutex i.
fn mutex_waiters(threads: usize) -> Target {
    Target::fork(|| {
        let mutexes: &'static [libc::pthread_mutex_t] = Box::leak(
            (0..threads)
                .map(|_| libc::PTHREAD_MUTEX_INITIALIZER)
                .collect::<Vec<_>>()
                .into_boxed_slice(),
        );
        for m in mutexes {
            // SAFETY: an initialised mutex that lives for the rest of the process.
            unsafe { libc::pthread_mutex_lock(std::ptr::from_ref(m).cast_mut()) };
        }
        mutexes.iter().all(|mutex| {
            let address = std::ptr::from_ref(mutex) as usize;
            std::thread::Builder::new()
                .stack_size(64 * 1024)
                .spawn(move || {
                    // SAFETY: as above; the main thread holds it, so this blocks.
                    unsafe { libc::pthread_mutex_lock(address as *mut libc::pthread_mutex_t) };
                })
                .is_ok()
        })
    })
}

fn thread_cpu_seconds() -> f64 {
    cpu_seconds().0
}

/// Wall and CPU ms per detail sample, and lock reads per sample.
fn measure(pid: i32, read_lock_owners: bool) -> (f64, f64, u32) {
    let config = SamplerConfig {
        audit_every_seconds: f64::INFINITY,
        read_lock_owners,
        ..SamplerConfig::default()
    };
    let mut sampler = Sampler::new(pid, config).expect("sampler attaches");
    let mut reads = 0;
    let mut sample = |sampler: &mut Sampler| {
        sampler.request_details();
        let s = sampler.sample(SampleTime::default()).expect("sample");
        reads = s.cost.lock_memory_reads;
        black_box(s.thread_count())
    };
    sample(&mut sampler);
    let cpu = thread_cpu_seconds();
    let started = Instant::now();
    for _ in 0..ROUNDS {
        sample(&mut sampler);
    }
    let wall = started.elapsed().as_secs_f64() * 1e3 / f64::from(ROUNDS);
    let cpu = (thread_cpu_seconds() - cpu) * 1e3 / f64::from(ROUNDS);
    (wall, cpu, reads)
}

fn main() {
    let mut rows = Vec::new();
    for threads in SIZES {
        let target = mutex_waiters(threads);
        // Every waiter in its futex wait, and the main thread in pause().
        target.wait_until_asleep(threads + 1);
        let off = measure(target.pid, false);
        let on = measure(target.pid, true);
        rows.push((threads, off, on));
    }
    let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default();
    let cpus = std::thread::available_parallelism().map_or(0, |n| n.get());
    println!("machine: {cpus} CPUs (nproc), kernel {}", kernel.trim());
    println!(
        "| mutex waiters | lock reads / sample | detail sample off: wall ms, CPU ms | on: wall ms, CPU ms | added CPU ms / waiter |"
    );
    println!("|---:|---:|---:|---:|---:|");
    for (threads, off, on) in rows {
        println!(
            "| {threads} | {} | {:.2}, {:.2} | {:.2}, {:.2} | {:.4} |",
            on.2,
            off.0,
            off.1,
            on.0,
            on.1,
            (on.1 - off.1) / threads as f64
        );
    }
}
