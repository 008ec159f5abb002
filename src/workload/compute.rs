//! Real dense numeric work and a compute pool that behaves like an OpenMP team.
//!
//! A work unit is one blocked f64 matrix multiply `C = A × B`. The team splits every unit
//! by rows across its threads and ends it with a barrier whose waiters spin for a bounded
//! count before they sleep in the kernel — as libgomp's barrier does (`GOMP_SPINCOUNT`,
//! 300,000 by default). Spinning is what makes real BLAS/OpenMP pools collapse when
//! several of them share too few CPUs: a waiter burns the CPU that the thread it waits for
//! needs.

use std::sync::Arc;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::time::Instant;

/// Side of the square matrices of one work unit.
pub const UNIT_N: usize = 128;
/// Spins before a barrier waiter sleeps (libgomp's default `GOMP_SPINCOUNT`).
pub const DEFAULT_SPIN_COUNT: u32 = 300_000;
const BLOCK: usize = 32;

/// Row-major n×n matrices.
#[derive(Debug, Clone)]
pub struct Matrices {
    pub n: usize,
    pub a: Vec<f64>,
    pub b: Vec<f64>,
}

impl Matrices {
    /// Deterministic inputs with values in a small range (so sums stay exact enough).
    pub fn new(n: usize) -> Matrices {
        let a = (0..n * n)
            .map(|i| ((i * 7 + 3) % 13) as f64 - 6.0)
            .collect();
        let b = (0..n * n)
            .map(|i| ((i * 5 + 1) % 11) as f64 - 5.0)
            .collect();
        Matrices { n, a, b }
    }
}

/// Rows `rows` of `C = A × B` into `c` (which holds just those rows), blocked for cache.
pub fn matmul_rows(a: &[f64], b: &[f64], n: usize, rows: std::ops::Range<usize>, c: &mut [f64]) {
    let row_count = rows.len();
    c[..row_count * n].iter_mut().for_each(|x| *x = 0.0);
    for kk in (0..n).step_by(BLOCK) {
        let k_end = (kk + BLOCK).min(n);
        for jj in (0..n).step_by(BLOCK) {
            let j_end = (jj + BLOCK).min(n);
            for (local, i) in rows.clone().enumerate() {
                let c_row = &mut c[local * n + jj..local * n + j_end];
                for k in kk..k_end {
                    let a_ik = a[i * n + k];
                    let b_row = &b[k * n + jj..k * n + j_end];
                    for (c_ij, b_kj) in c_row.iter_mut().zip(b_row) {
                        *c_ij += a_ik * b_kj;
                    }
                }
            }
        }
    }
}

/// The whole product, single-threaded.
pub fn matmul(m: &Matrices) -> Vec<f64> {
    let mut c = vec![0.0; m.n * m.n];
    matmul_rows(&m.a, &m.b, m.n, 0..m.n, &mut c);
    c
}

/// One work unit on one thread; returns a checksum so the work cannot be optimised away.
pub fn work_unit(m: &Matrices, c: &mut [f64]) -> f64 {
    matmul_rows(&m.a, &m.b, m.n, 0..m.n, c);
    std::hint::black_box(c.iter().sum())
}

/// The rows thread `index` of `threads` computes.
pub fn row_share(n: usize, index: usize, threads: usize) -> std::ops::Range<usize> {
    let threads = threads.max(1);
    (n * index / threads)..(n * (index + 1) / threads)
}

/// A reusable barrier whose waiters spin `spin_count` times, then sleep on a futex.
pub struct SpinBarrier {
    parties: u32,
    arrived: AtomicU32,
    generation: AtomicU32,
    spin_count: u32,
}

impl SpinBarrier {
    pub fn new(parties: usize, spin_count: u32) -> SpinBarrier {
        SpinBarrier {
            parties: u32::try_from(parties.max(1)).unwrap_or(u32::MAX),
            arrived: AtomicU32::new(0),
            generation: AtomicU32::new(0),
            spin_count,
        }
    }

    pub fn wait(&self) {
        let generation = self.generation.load(Ordering::Acquire);
        if self.arrived.fetch_add(1, Ordering::AcqRel) + 1 == self.parties {
            self.arrived.store(0, Ordering::Relaxed);
            self.generation.fetch_add(1, Ordering::Release);
            futex_wake_all(&self.generation);
            return;
        }
        for _ in 0..self.spin_count {
            if self.generation.load(Ordering::Acquire) != generation {
                return;
            }
            std::hint::spin_loop();
        }
        while self.generation.load(Ordering::Acquire) == generation {
            futex_wait(&self.generation, generation);
        }
    }
}

fn futex_wait(word: &AtomicU32, expected: u32) {
    // SAFETY: FUTEX_WAIT on a live, aligned u32; the kernel only reads it. A null timeout
    // waits until woken; spurious returns are handled by the caller's loop.
    unsafe {
        libc::syscall(
            libc::SYS_futex,
            word.as_ptr(),
            libc::FUTEX_WAIT | libc::FUTEX_PRIVATE_FLAG,
            expected,
            std::ptr::null::<libc::timespec>(),
        );
    }
}

fn futex_wake_all(word: &AtomicU32) {
    // SAFETY: FUTEX_WAKE on a live, aligned u32 touches no memory.
    unsafe {
        libc::syscall(
            libc::SYS_futex,
            word.as_ptr(),
            libc::FUTEX_WAKE | libc::FUTEX_PRIVATE_FLAG,
            i32::MAX,
        );
    }
}

/// What a team run achieved.
#[derive(Debug, Clone, Copy)]
pub struct TeamRun {
    pub units: u64,
    pub seconds: f64,
}

/// Runs up to `units` work units (stopping at `deadline`) on a team of `threads` threads,
/// the calling thread being member 0 as an OpenMP master is. Threads are named
/// `{name}-{i}`.
pub fn run_team(
    threads: usize,
    units: u64,
    deadline: Instant,
    spin_count: u32,
    name: &str,
) -> std::io::Result<TeamRun> {
    let threads = threads.max(1);
    let start = Instant::now();
    let matrices = Arc::new(Matrices::new(UNIT_N));
    let barrier = Arc::new(SpinBarrier::new(threads, spin_count));
    // The unit after which everyone stops; set by the master before it arrives at that
    // unit's barrier, read by the others after it.
    let stop_after = Arc::new(AtomicU64::new(units.saturating_sub(1)));
    let member = {
        let matrices = Arc::clone(&matrices);
        let barrier = Arc::clone(&barrier);
        let stop_after = Arc::clone(&stop_after);
        move |index: usize, is_master: bool| -> u64 {
            let rows = row_share(matrices.n, index, threads);
            let mut c = vec![0.0; rows.len().max(1) * matrices.n];
            let mut unit = 0u64;
            loop {
                matmul_rows(&matrices.a, &matrices.b, matrices.n, rows.clone(), &mut c);
                std::hint::black_box(&c);
                if is_master && Instant::now() >= deadline {
                    stop_after.fetch_min(unit, Ordering::Relaxed);
                }
                barrier.wait();
                if unit >= stop_after.load(Ordering::Relaxed) {
                    return unit + 1;
                }
                unit += 1;
            }
        }
    };
    if units == 0 {
        return Ok(TeamRun {
            units: 0,
            seconds: 0.0,
        });
    }
    let mut handles = Vec::with_capacity(threads - 1);
    for index in 1..threads {
        let member = member.clone();
        let handle = std::thread::Builder::new()
            .name(format!("{name}-{index}"))
            .spawn(move || member(index, false));
        match handle {
            Ok(handle) => handles.push(handle),
            Err(err) => {
                // The team cannot form: tell the threads already waiting to stop.
                stop_after.store(0, Ordering::Relaxed);
                return Err(err);
            }
        }
    }
    let done = member(0, true);
    for handle in handles {
        let _ = handle.join();
    }
    Ok(TeamRun {
        units: done,
        seconds: start.elapsed().as_secs_f64(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn naive(m: &Matrices) -> Vec<f64> {
        let n = m.n;
        let mut c = vec![0.0; n * n];
        for i in 0..n {
            for j in 0..n {
                c[i * n + j] = (0..n).map(|k| m.a[i * n + k] * m.b[k * n + j]).sum();
            }
        }
        c
    }

    #[test]
    fn blocked_matmul_matches_naive() {
        for n in [1, 5, 32, 33, 70] {
            let m = Matrices::new(n);
            assert_eq!(matmul(&m), naive(&m), "n={n}");
        }
    }

    #[test]
    fn row_shares_cover_every_row_once() {
        for threads in 1..6 {
            let mut next = 0;
            for index in 0..threads {
                let rows = row_share(70, index, threads);
                assert_eq!(rows.start, next);
                next = rows.end;
            }
            assert_eq!(next, 70);
        }
    }

    #[test]
    fn split_rows_give_the_same_product() {
        let m = Matrices::new(40);
        let whole = matmul(&m);
        let rows = row_share(40, 1, 3);
        let mut part = vec![0.0; rows.len() * 40];
        matmul_rows(&m.a, &m.b, 40, rows.clone(), &mut part);
        assert_eq!(part[..], whole[rows.start * 40..rows.end * 40]);
    }

    #[test]
    fn team_runs_every_unit_and_stops_at_the_deadline() {
        let far = Instant::now() + std::time::Duration::from_secs(60);
        let run = run_team(3, 5, far, 100, "test-team").unwrap();
        assert_eq!(run.units, 5);
        let past = Instant::now();
        let run = run_team(2, 1_000_000, past, 100, "test-team").unwrap();
        assert_eq!(run.units, 1);
    }
}
