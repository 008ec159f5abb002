//! `tfwatch node`: two unrelated jobs started separately (a deadlocked one and an
//! oversubscribed one), each found and attributed to its own job; a job that ends during
//! the watch; a bad `--match` is a usage error.

use std::time::Duration;

use serde_json::Value;

use crate::support::{ChildGuard, Lines, children, tfwatch, tfwatch_bin, tfwatch_output, wait_for};

/// A workload under `sh -c '…; true'` (sh stays its parent: a job boundary, so the
/// workload is a job of its own), with a `--duration` unique to this test run so
/// `--match` picks these and no other engineer's workloads.
fn job(scenario: &str, millis: u64, extra: &str) -> ChildGuard {
    let script = format!(
        "{} run-workload --scenario {scenario} --duration {millis}ms {extra}; true",
        tfwatch_bin().display()
    );
    let mut command = std::process::Command::new("sh");
    command.args(["-c", &script]);
    ChildGuard::spawn(command)
}

#[test]
fn two_jobs_are_found_and_attributed_each_to_its_own() {
    // Unique durations: the deadlocked job ends during the watch, the other outlives it.
    let unique = u64::from(std::process::id() % 500);
    let deadlock_ms = 6_000 + unique;
    let oversubscribed_ms = 30_000 + unique;
    let deadlocked = job("deadlock", deadlock_ms, "");
    // Far more work than the duration allows, so the job is still running when the
    // watch ends however fast the machine is (its default work can finish sooner).
    let oversubscribed = job("oversubscribe", oversubscribed_ms, "--units 1000000000");
    // The job is named by its root: the workload under its sh.
    let root: i32 = wait_for(
        "the oversubscribed workload under its sh",
        Duration::from_secs(10),
        || {
            std::fs::read_to_string(format!("/proc/{0}/task/{0}/children", oversubscribed.pid()))
                .ok()?
                .split_whitespace()
                .next()?
                .parse()
                .ok()
        },
    );
    let pattern = format!("run-workload .*--duration ({deadlock_ms}|{oversubscribed_ms})ms");
    let mut watcher = node_for_20s(&["--hang-after", "3s", "--match", &pattern]);
    let lines = Lines::new(watcher.child.stdout.take().unwrap());
    let mut started = Vec::new();
    let mut deadlock_job = None;
    let mut oversubscribed_job = None;
    let mut ended = Vec::new();
    let seen = lines.until(
        "both findings and the deadlocked job's end",
        Duration::from_secs(25),
        |line| {
            let value: Value = serde_json::from_str(line).unwrap();
            let job = value["job"].as_str().map(str::to_string);
            match value["type"].as_str().unwrap() {
                "job-started" => started.push(job.unwrap()),
                "job-ended" => ended.push(job.unwrap()),
                "finding" => match value["kind"].as_str().unwrap() {
                    "deadlock" => deadlock_job = job,
                    "oversubscription" => oversubscribed_job = job,
                    _ => {}
                },
                _ => {}
            }
            let deadlocked_ended = deadlock_job.as_ref().is_some_and(|j| ended.contains(j));
            deadlocked_ended && oversubscribed_job.is_some()
        },
    );
    let mut context = seen.join("\n");
    if oversubscribed_job.is_none() || deadlock_job.is_none() {
        use std::io::Read;
        let _ = watcher.child.kill();
        let mut stderr = String::new();
        let _ = watcher
            .child
            .stderr
            .take()
            .unwrap()
            .read_to_string(&mut stderr);
        context.push_str(&format!("\nstderr:\n{stderr}"));
    }
    let deadlock_job = deadlock_job.unwrap_or_else(|| panic!("no deadlock finding:\n{context}"));
    let oversubscribed_job =
        oversubscribed_job.unwrap_or_else(|| panic!("no oversubscription finding:\n{context}"));
    assert_ne!(
        deadlock_job, oversubscribed_job,
        "each finding has its own job"
    );
    assert!(deadlock_job.starts_with("tree/"), "{deadlock_job}");
    assert!(started.contains(&deadlock_job) && started.contains(&oversubscribed_job));
    assert!(
        ended.contains(&deadlock_job),
        "the job that ended is said to:\n{context}"
    );
    assert!(!ended.contains(&oversubscribed_job));
    assert!(
        oversubscribed_job.starts_with(&format!("tree/{root}-")),
        "{oversubscribed_job} vs root {root}"
    );
    drop(deadlocked);
    drop(watcher);
}

#[test]
fn a_bad_match_pattern_is_a_usage_error() {
    let out = tfwatch_output(&["node", "--json", "--match", "(unclosed", "--duration", "1s"]);
    assert_eq!(out.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("--match") && stderr.contains("regular expression"),
        "{stderr}"
    );
    let out = tfwatch_output(&["node", "--user", "no-such-user-here", "--duration", "1s"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("no such user"));
}

/// A tag unique to this test run, for `--match`.
fn unique(salt: u32) -> u32 {
    (std::process::id() * 7 + salt) % 1000
}

/// `sh -c script`, in its own process group (the guard ends the group).
fn shell(script: &str) -> ChildGuard {
    let mut command = std::process::Command::new("sh");
    command.args(["-c", script]);
    ChildGuard::spawn(command)
}

/// `tfwatch node --json --interval 500ms --duration 20s` with `args` (what it selects).
fn node_for_20s(args: &[&str]) -> ChildGuard {
    let mut all = vec!["node", "--json", "--interval", "500ms", "--duration", "20s"];
    all.extend_from_slice(args);
    ChildGuard::spawn(tfwatch(&all))
}

/// A `sleep` of 30 to 40 s under a shell, its length told apart by `n`: the shell's
/// guard, the sleep's pid and its argument.
fn long_sleep(n: u32) -> (ChildGuard, i32, String) {
    let seconds = format!("3{}.{n:03}", n % 10);
    let shell = shell(&format!("sleep {seconds}; true"));
    let pid = wait_for("the sleep", Duration::from_secs(10), || {
        children(shell.pid()).first().copied()
    });
    (shell, pid, seconds)
}

fn threads(pid: i32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/task")).map_or(0, |d| d.count())
}

/// `tfwatch node --json` with `args`, to its end; its lines.
fn node_lines(args: &[&str]) -> Vec<Value> {
    let mut all = vec!["node", "--json"];
    all.extend_from_slice(args);
    let out = tfwatch_output(&all);
    let text = String::from_utf8_lossy(&out.stdout);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{text}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    text.lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}")))
        .collect()
}

fn of_type<'a>(lines: &'a [Value], kind: &str) -> Vec<&'a Value> {
    lines.iter().filter(|l| l["type"] == kind).collect()
}

/// A python3 job (under its sh) with eight idle threads besides its main one; its pid
/// once it runs them.
fn python_job(tag: &str, seconds: u32) -> Option<(ChildGuard, i32)> {
    if std::process::Command::new("python3")
        .arg("-c")
        .arg("pass")
        .status()
        .map_or(true, |s| !s.success())
    {
        crate::support::skip("python3", "no python3 to run");
        return None;
    }
    let sh = shell(&format!(
        "python3 -c 'import threading, time\nfor _ in range(8): threading.Thread(target=time.sleep, args=({seconds},), daemon=True).start()\ntime.sleep({seconds})' {tag}; true"
    ));
    let pid = wait_for("the python job's threads", Duration::from_secs(30), || {
        let pid = *children(sh.pid()).first()?;
        (threads(pid) >= 9).then_some(pid)
    });
    Some((sh, pid))
}

#[test]
fn past_the_job_limit_admitted_jobs_stay_and_the_rest_are_counted() {
    let tag = format!("tfwatch-admission-{}", unique(1));
    let seconds = format!("4{}.{:03}", unique(2) % 10, unique(3));
    let Some((_python, python)) = python_job(&tag, 60) else {
        return;
    };
    let sleeps = shell(&format!(
        "for i in $(seq 100); do sleep {seconds} & done; wait"
    ));
    wait_for("100 sleeps", Duration::from_secs(30), || {
        (children(sleeps.pid()).len() == 100).then_some(())
    });
    let pattern = format!("sleep {}|{tag}", regex_escape(&seconds));
    let lines = node_lines(&["--interval", "1s", "--duration", "6s", "--match", &pattern]);
    let started = of_type(&lines, "job-started");
    let ended = of_type(&lines, "job-ended");
    let context = || {
        lines
            .iter()
            .filter(|l| l["type"] != "sample")
            .map(Value::to_string)
            .collect::<Vec<_>>()
            .join("\n")
    };
    assert_eq!(started.len(), 64, "the limit, each once:\n{}", context());
    assert!(ended.is_empty(), "no job ended:\n{}", context());
    let python_job = format!("tree/{python}-");
    let python_started: Vec<_> = started
        .iter()
        .filter(|l| l["job"].as_str().unwrap().starts_with(&python_job))
        .collect();
    assert_eq!(python_started.len(), 1, "{}", context());
    let python_samples = of_type(&lines, "sample")
        .into_iter()
        .filter(|l| l["job"].as_str().unwrap().starts_with(&python_job))
        .count();
    assert!(
        python_samples >= 3,
        "{python_samples} samples of the python job"
    );
    let exit = of_type(&lines, "exit")[0];
    assert_eq!(exit["jobs_seen"], 64, "{exit}");
    assert_eq!(exit["jobs_not_admitted"], 101 - 64, "{exit}");
}

fn regex_escape(text: &str) -> String {
    text.replace('.', "\\.")
}

#[test]
fn under_churn_no_job_is_started_and_ended_without_a_sample() {
    let n = unique(4);
    let (_long, long_pid, long) = long_sleep(n);
    let _churn = shell(&format!(
        "while :; do sleep 0.04{n:03} & sleep 0.02{n:03}; done"
    ));
    let pattern = format!("sleep (0\\.0[24]{n:03}|{})", regex_escape(&long));
    let lines = node_lines(&[
        "--interval",
        "500ms",
        "--duration",
        "5s",
        "--match",
        &pattern,
    ]);
    let mut sampled = std::collections::BTreeSet::new();
    for line in &lines {
        let job = line["job"].as_str().unwrap_or_default().to_string();
        match line["type"].as_str().unwrap() {
            "job-started" => assert!(sampled.insert(job.clone()), "{job} started twice"),
            "sample" => assert!(sampled.contains(&job), "{job} sampled before it started"),
            "job-ended" => assert!(sampled.contains(&job), "{job} ended, never started"),
            _ => {}
        }
    }
    // Every job said to start has its sample on the very next line.
    for (at, line) in lines.iter().enumerate() {
        if line["type"] == "job-started" {
            let next = &lines[at + 1];
            assert!(
                next["type"] == "sample" && next["job"] == line["job"],
                "{line} then {next}"
            );
        }
    }
    let long_job = format!("tree/{long_pid}-sleep");
    assert!(sampled.contains(&long_job), "{long_job} not watched");
    assert!(
        !of_type(&lines, "job-ended")
            .iter()
            .any(|l| l["job"] == long_job.as_str()),
        "the long-lived job never ends"
    );
    let exit = of_type(&lines, "exit")[0];
    assert!(
        exit["jobs_short_lived"].as_u64().unwrap() > 0,
        "the short-lived processes are counted: {exit}"
    );
}

#[test]
fn a_fork_burst_keeps_or_says_every_tick_of_an_idle_job() {
    let n = unique(5);
    let (_idle, idle, idle_seconds) = long_sleep(n);
    let tag = format!("tfwatch-burst-{n}");
    // A thousand processes as fast as they can be spawned, two seconds in.
    let _burst = shell(&format!(
        "python3 -c 'import os, time\ntime.sleep(2)\nfor _ in range(1000): os.posix_spawn(\"/bin/sleep\", [\"sleep\", \"4\"], {{}})\nwhile True:\n    try: os.wait()\n    except ChildProcessError: break' {tag}; true"
    ));
    let interval = 0.5;
    let lines = node_lines(&[
        "--interval",
        "500ms",
        "--duration",
        "8s",
        "--match",
        &format!("sleep {}|{tag}", regex_escape(&idle_seconds)),
    ]);
    let job = format!("tree/{idle}-sleep");
    // Each sample's due tick is its time less its lateness; ticks with no sample of
    // the job are said, by the node (node-late) or for the job (job-late).
    let mut last_tick: Option<i64> = None;
    let mut said = 0;
    let mut samples = 0;
    for line in &lines {
        match line["type"].as_str().unwrap() {
            "node-late" => said += line["skipped_ticks"].as_i64().unwrap(),
            "job-late" if line["job"] == job.as_str() && line["resumed"] == true => {
                said += line["skipped_ticks"].as_i64().unwrap();
            }
            "sample" if line["job"] == job.as_str() => {
                samples += 1;
                let due = line["elapsed_seconds"].as_f64().unwrap()
                    - line["lateness_seconds"].as_f64().unwrap();
                let tick = (due / interval).round() as i64;
                assert!((due - tick as f64 * interval).abs() < 0.01, "{line}");
                if let Some(last) = last_tick {
                    assert_eq!(tick - last - 1, said, "ticks missed and not said: {line}");
                }
                last_tick = Some(tick);
                said = 0;
            }
            _ => {}
        }
    }
    assert!(samples >= 4, "{samples} samples of the idle job");
}

fn running_as_root() -> bool {
    // SAFETY: geteuid has no preconditions.
    unsafe { libc::geteuid() == 0 }
}

/// A cgroup of the v1 cpu hierarchy named like a systemd unit, removed on drop.
struct UnitCgroup {
    dir: std::path::PathBuf,
}

impl Drop for UnitCgroup {
    fn drop(&mut self) {
        if let Ok(tasks) = std::fs::read_to_string(self.dir.join("cgroup.procs")) {
            for task in tasks.split_whitespace() {
                let _ = std::fs::write("/sys/fs/cgroup/cpu/cgroup.procs", task);
            }
        }
        let _ = std::fs::remove_dir(&self.dir);
    }
}

#[test]
fn a_process_moved_to_another_cgroup_or_uid_is_regrouped() {
    if !running_as_root() {
        crate::support::skip("root", "moving a process between cgroups needs root");
        return;
    }
    let root = std::path::Path::new("/sys/fs/cgroup/cpu");
    if !root.join("cgroup.procs").exists() {
        crate::support::skip(
            "cgroup",
            "no cgroup v1 cpu hierarchy under /sys/fs/cgroup/cpu",
        );
        return;
    }
    let n = unique(6);
    let unit = format!("tfwatch-regroup-{}.service", std::process::id());
    let cgroup = UnitCgroup {
        dir: root.join(&unit),
    };
    std::fs::create_dir_all(&cgroup.dir).unwrap();
    let (_sleeper, sleep, seconds) = long_sleep(n);
    // A process that drops to uid 65534 two seconds in.
    let tag = format!("tfwatch-setuid-{n}");
    let _dropper = shell(&format!(
        "python3 -c 'import os, time\ntime.sleep(2)\nos.setresuid(65534, 65534, 65534)\ntime.sleep(30)' {tag}; true"
    ));
    let pattern = format!("sleep {}|{tag}", regex_escape(&seconds));
    let mut by_match = node_for_20s(&["--match", &pattern]);
    let cgroup_prefix = format!("/{unit}");
    let mut by_cgroup = node_for_20s(&["--cgroup", &cgroup_prefix]);
    let mut by_user = node_for_20s(&["--user", "65534", "--match", &tag]);
    let matched = Lines::new(by_match.child.stdout.take().unwrap());
    let tree_job = format!("tree/{sleep}-sleep");
    matched.until(
        "the sleep's job in its tree",
        Duration::from_secs(15),
        |line| line.contains("job-started") && line.contains(&tree_job),
    );
    std::fs::write(cgroup.dir.join("cgroup.procs"), sleep.to_string()).unwrap();
    let unit_job = format!("unit/{unit}");
    let mut tree_ended = false;
    matched.until(
        "the sleep regrouped into its unit",
        Duration::from_secs(15),
        |line| {
            tree_ended |= line.contains("job-ended") && line.contains(&tree_job);
            tree_ended && line.contains("job-started") && line.contains(&unit_job)
        },
    );
    let by_cgroup_lines = Lines::new(by_cgroup.child.stdout.take().unwrap());
    by_cgroup_lines.until(
        "--cgroup finds the moved process",
        Duration::from_secs(15),
        |line| line.contains("job-started") && line.contains(&unit_job),
    );
    let by_user_lines = Lines::new(by_user.child.stdout.take().unwrap());
    by_user_lines.until(
        "--user finds the process that changed uid",
        Duration::from_secs(20),
        |line| line.contains("job-started"),
    );
    drop(cgroup);
}
