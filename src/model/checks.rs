//! Whether the times of a sample read back from a file are ones a reading could give:
//! a recorded timeline is input from outside, and a time of 2e19 s or -1e300 s would
//! overflow a clock or print as an infinite CPU share.

use super::Sample;

/// The longest watch a sample's `elapsed_seconds` may tell of: about 31 years (a
/// watch's clock counts nanoseconds in 64 bits, about 584 years).
pub const MAX_ELAPSED_SECONDS: f64 = 1e9;

/// More seconds than any process or machine has counted (CPU time of a process on
/// thousands of CPUs for decades, seconds since boot, a Unix time): beyond it a time
/// is not a reading.
pub const MAX_SECONDS: f64 = 1e15;

/// `value` as a time of `field`: finite, not negative and at most `max`.
fn check_seconds(field: &str, value: f64, max: f64) -> Result<(), String> {
    if value.is_finite() && (0.0..=max).contains(&value) {
        return Ok(());
    }
    // Huge values with an exponent: 2e19, not twenty digits.
    let written = if value.abs() < 1e15 {
        value.to_string()
    } else {
        format!("{value:e}")
    };
    Err(format!(
        "{field} {written} is not a time a sample can hold (it must be a number of seconds from 0 to {max:e})"
    ))
}

impl Sample {
    /// Whether every time in the sample is finite, not negative and in range:
    /// `elapsed_seconds` up to [`MAX_ELAPSED_SECONDS`], CPU, run-queue and start times
    /// up to [`MAX_SECONDS`]. The error names the field, the pid or tid and the value.
    pub fn check_times(&self) -> Result<(), String> {
        check_seconds("elapsed_seconds", self.elapsed_seconds, MAX_ELAPSED_SECONDS)?;
        check_seconds("time_unix_seconds", self.time_unix_seconds, MAX_SECONDS)?;
        if let Some(uptime) = self.uptime_seconds {
            check_seconds("uptime_seconds", uptime, MAX_SECONDS)?;
        }
        for p in &self.processes {
            let of_process = |field: &str| format!("pid {}'s {field}", p.pid);
            check_seconds(&of_process("cpu_seconds"), p.cpu_seconds, MAX_SECONDS)?;
            check_seconds(
                &of_process("start_time_seconds"),
                p.start_time_seconds,
                MAX_SECONDS,
            )?;
            check_seconds(
                &of_process("carried_seconds"),
                p.carried_seconds,
                MAX_SECONDS,
            )?;
            for t in p.threads.iter() {
                let of_thread = |field: &str| format!("tid {}'s {field}", t.tid);
                check_seconds(&of_thread("cpu_seconds"), t.cpu_seconds, MAX_SECONDS)?;
                check_seconds(
                    &of_thread("start_time_seconds"),
                    t.start_time_seconds,
                    MAX_SECONDS,
                )?;
                check_seconds(
                    &of_thread("details_age_seconds"),
                    t.details_age_seconds,
                    MAX_SECONDS,
                )?;
                for (field, value) in [
                    ("run_seconds", t.run_seconds),
                    ("runqueue_wait_seconds", t.runqueue_wait_seconds),
                ] {
                    if let Some(value) = value {
                        check_seconds(&of_thread(field), value, MAX_SECONDS)?;
                    }
                }
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{ProcessSample, ThreadSample};

    fn sample(elapsed: f64, process_cpu: f64, thread_cpu: f64) -> Sample {
        Sample {
            elapsed_seconds: elapsed,
            processes: vec![ProcessSample {
                pid: 7,
                cpu_seconds: process_cpu,
                threads: vec![ThreadSample {
                    tid: 8,
                    cpu_seconds: thread_cpu,
                    run_seconds: Some(thread_cpu),
                    ..ThreadSample::default()
                }]
                .into(),
                ..ProcessSample::default()
            }],
            ..Sample::default()
        }
    }

    #[test]
    fn readings_pass() {
        assert_eq!(sample(0.0, 0.0, 0.0).check_times(), Ok(()));
        assert_eq!(sample(86_400.0, 1e6, 3e5).check_times(), Ok(()));
        assert_eq!(sample(MAX_ELAPSED_SECONDS, 0.0, 0.0).check_times(), Ok(()));
    }

    #[test]
    fn times_no_reading_gives_are_named() {
        let why = sample(2e19, 0.0, 0.0).check_times().unwrap_err();
        assert!(
            why.starts_with("elapsed_seconds 2e19 is not a time"),
            "{why}"
        );
        assert!(why.contains("from 0 to 1e9"), "{why}");
        assert!(sample(-1.0, 0.0, 0.0).check_times().is_err());
        assert!(sample(f64::NAN, 0.0, 0.0).check_times().is_err());
        let why = sample(1.0, -1e300, 0.0).check_times().unwrap_err();
        assert!(why.starts_with("pid 7's cpu_seconds -1e300"), "{why}");
        let why = sample(1.0, 0.0, f64::INFINITY).check_times().unwrap_err();
        assert!(why.starts_with("tid 8's cpu_seconds inf"), "{why}");
        assert!(sample(1.0, 1e16, 0.0).check_times().is_err());
    }
}
