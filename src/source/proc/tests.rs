//! Sampler tests against recorded proc trees under `fixtures/proc/` (recorded with
//! `fixtures/record.sh`) and hand-written cgroup trees under `fixtures/cgroup/`.

use std::path::{Path, PathBuf};

use super::process::STILL_THREAD_SAMPLES;
use super::*;
use crate::model::{CpuThrottling, Syscall};

fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures")
}

/// A sampler of a recorded tree. Level sampling is off: these tests edit threads' files
/// without touching the process's `stat`, which a live process cannot do; the tests of
/// level sampling turn it on.
fn config(proc_tree: &str, cgroup_tree: &str) -> SamplerConfig {
    SamplerConfig {
        proc_root: fixtures().join("proc").join(proc_tree),
        cgroup_root: fixtures().join("cgroup").join(cgroup_tree),
        level_sampling: false,
        ..SamplerConfig::default()
    }
}

fn at(elapsed_seconds: f64) -> SampleTime {
    SampleTime {
        elapsed_seconds,
        time_unix_seconds: 1_700_000_000.0 + elapsed_seconds,
        lateness_seconds: 0.25,
    }
}

fn ticks() -> f64 {
    // SAFETY: sysconf has no preconditions.
    unsafe { libc::sysconf(libc::_SC_CLK_TCK) as f64 }
}

fn page_size() -> u64 {
    // SAFETY: sysconf has no preconditions.
    unsafe { libc::sysconf(libc::_SC_PAGESIZE) as u64 }
}

fn running_as_root() -> bool {
    // SAFETY: geteuid has no preconditions.
    unsafe { libc::geteuid() == 0 }
}

fn tids(process: &crate::model::ProcessSample) -> Vec<i32> {
    process.threads.iter().map(|t| t.tid).collect()
}

#[test]
fn threads_and_forked_child_in_tree_order() {
    let mut sampler = Sampler::new(11416, config("threads_child", "v1")).unwrap();
    let sample = sampler.sample(at(0.0)).unwrap();
    assert_eq!(sample.root_pid, 11416);
    let pids: Vec<i32> = sample.processes.iter().map(|p| p.pid).collect();
    assert_eq!(pids, [11416, 11470]);

    let root = &sample.processes[0];
    assert_eq!(root.ppid, 11244);
    assert_eq!(root.comm, "python3");
    assert_eq!(root.state, 'S');
    assert_eq!(root.num_threads, 4);
    assert_eq!(root.cmdline[1], "-c");
    assert!(root.cmdline[0].ends_with("python3"), "{:?}", root.cmdline);
    assert!(root.exe.as_deref().unwrap().contains("python3"));
    assert_eq!(root.rss_bytes, 3405 * page_size());
    assert_eq!(root.cpu_seconds, 7.0 / ticks());
    assert_eq!(root.start_time_seconds, 62812.0 / ticks());
    assert_eq!(root.uid, Some(0));
    assert_eq!(root.io.unwrap().rchar, 1685842);
    assert_eq!(root.io.unwrap().wchar, 1707);
    assert_eq!(tids(root), [11416, 11467, 11468, 11469]);
    assert!(root.audit.is_some());

    let main = &root.threads[0];
    assert_eq!(main.name, "python3");
    assert_eq!(main.state, 'S');
    assert_eq!(main.cpu_seconds, 7.0 / ticks());
    assert_eq!(main.run_seconds, Some(0.077209536));
    assert_eq!(main.runqueue_wait_seconds, Some(0.003415826));
    assert_eq!(main.timeslices, Some(42));
    assert_eq!(main.voluntary_ctxt_switches, Some(24));
    assert_eq!(main.nonvoluntary_ctxt_switches, Some(18));
    assert_eq!(main.wchan.as_deref(), Some("futex_do_wait"));
    assert_eq!(main.processor, Some(1));
    assert_eq!(main.details_age_seconds, 0.0);
    match &main.syscall {
        Some(Syscall::InSyscall { number, args, .. }) => {
            assert_eq!(*number, 202);
            assert_eq!(args.len(), 6);
        }
        other => panic!("unexpected syscall {other:?}"),
    }
    for worker in &root.threads[1..] {
        assert_eq!(worker.state, 'S');
        assert_eq!(worker.voluntary_ctxt_switches, Some(1));
        assert_eq!(worker.nonvoluntary_ctxt_switches, Some(3));
        assert_eq!(worker.timeslices, Some(4));
    }

    let child = &sample.processes[1];
    assert_eq!(child.ppid, 11416);
    assert_eq!(child.num_threads, 1);
    assert_eq!(tids(child), [11470]);
    assert_eq!(child.threads[0].wchan.as_deref(), Some("anon_pipe_read"));

    assert_eq!(sample.thread_count(), 5);
    assert_eq!(sample.cost.detailed_threads, 5);
    assert_eq!(sample.cost.lateness_seconds, 0.25);
    assert!(sample.cost.duration_seconds > 0.0);
    assert_eq!(sample.elapsed_seconds, 0.0);
    if running_as_root() {
        assert_eq!(sample.unavailable, []);
    }
}

#[test]
fn a_one_shot_sample_reads_what_one_sample_shows() {
    let mut full = Sampler::new(11416, config("threads_child", "v1")).unwrap();
    let full = full.sample(at(0.0)).unwrap();
    // The later futex waiters' channel files say otherwise: a read of them would show.
    let tree = TreeCopy::new("threads_child");
    for tid in [11467, 11468, 11469] {
        rewrite(&tree, tid, "wchan", |_| "futex_not_read".into());
    }
    let mut sampler = sampler_on(&tree, |config| config.one_shot = true);
    let sample = sampler.sample(at(0.0)).unwrap();
    assert_eq!(sample.thread_count(), full.thread_count());
    for (one, all) in sample.threads().zip(full.threads()) {
        let (one, all) = (one.1, all.1);
        assert_eq!(one.tid, all.tid);
        // What one sample shows: state, name, CPU time, system call, and the wait
        // channel where the system call does not name the wait by itself.
        assert_eq!(
            (&one.name, one.state, one.cpu_seconds, &one.syscall),
            (&all.name, all.state, all.cpu_seconds, &all.syscall)
        );
        assert_eq!(one.wchan, all.wchan, "{one:?}");
        // What counts only over a window is not read.
        assert_eq!(one.voluntary_ctxt_switches, None);
        assert_eq!(one.run_seconds, None);
        assert_eq!(one.timeslices, None);
    }
    assert!(all_have_syscall(&sample));
    let machine = sample.machine.as_ref().unwrap();
    assert!(machine.busiest_others.is_empty());
    // Every thread of the root sleeps in `futex`: one thread's channel showed the futex
    // wait, the others' were not read (none shows what their files say) and each is
    // given the first one's.
    let root = &sample.processes[0];
    let shown: Vec<&str> = root
        .threads
        .iter()
        .filter_map(|t| t.wchan.as_deref())
        .collect();
    assert_eq!(shown, ["futex_do_wait"; 4], "{:?}", root.threads);
}

/// A one-shot sample reads the wait channel of every thread in a system call whose
/// first thread sleeps where that call does not (a frozen task traps in the freezer).
#[test]
fn a_one_shot_sample_reads_every_channel_where_the_call_does_not_tell() {
    let tree = TreeCopy::new("threads_child");
    for tid in [11416, 11467, 11468, 11469] {
        rewrite(&tree, tid, "wchan", |_| "do_freezer_trap".into());
    }
    let mut sampler = sampler_on(&tree, |config| config.one_shot = true);
    let sample = sampler.sample(at(0.0)).unwrap();
    let root = &sample.processes[0];
    assert_eq!(root.threads.len(), 4);
    assert!(
        root.threads
            .iter()
            .all(|t| t.wchan.as_deref() == Some("do_freezer_trap")),
        "{:?}",
        root.threads
    );
    // A watch (not one-shot) reads every channel, whatever the call.
    let mut sampler = Sampler::new(11416, config("threads_child", "v1")).unwrap();
    let sample = sampler.sample(at(0.0)).unwrap();
    assert!(sample.threads().all(|(_, t)| t.wchan.is_some()));
}

/// Descriptors of this process open on files under `dir`.
fn descriptors_under(dir: &Path) -> usize {
    std::fs::read_dir("/proc/self/fd")
        .unwrap()
        .filter_map(|entry| std::fs::read_link(entry.ok()?.path()).ok())
        .filter(|target| target.starts_with(dir))
        .count()
}

/// A one-shot sample reads each file once: it opens, reads and closes it at once and
/// keeps no descriptor (each kept one would hold a cold page of kernel buffer to the
/// end); a watch keeps its threads' descriptors for the next sample.
#[test]
fn a_one_shot_sample_keeps_no_descriptor() {
    let tree = TreeCopy::new("threads_child");
    let mut one_shot = sampler_on(&tree, |config| config.one_shot = true);
    let sample = one_shot.sample(at(0.0)).unwrap();
    assert_eq!(sample.thread_count(), 5);
    assert!(all_have_syscall(&sample));
    assert_eq!(descriptors_under(&tree.0), 0);
    assert_eq!(one_shot.kept_descriptors().0, 0);
    let mut watch = sampler_on(&tree, |_| {});
    watch.sample(at(0.0)).unwrap();
    assert!(descriptors_under(&tree.0) > 0);
    drop(watch);
    assert_eq!(descriptors_under(&tree.0), 0);
    drop(one_shot);
}

fn all_have_syscall(sample: &Sample) -> bool {
    sample.threads().all(|(_, t)| t.syscall.is_some())
}

#[test]
fn steady_state_carries_details_with_their_age() {
    let mut sampler = Sampler::new(11416, config("threads_child", "v1")).unwrap();
    let first = sampler.sample(at(0.0)).unwrap();
    let second = sampler.sample(at(1.0)).unwrap();
    assert_eq!(second.cost.detailed_threads, 0);
    assert_eq!(second.processes, {
        // Same figures, one second older; the audit is carried too.
        let mut expected = first.processes.clone();
        for thread in expected.iter_mut().flat_map(|p| &mut p.threads) {
            thread.details_age_seconds = 1.0;
        }
        expected
    });
    sampler.request_details();
    let third = sampler.sample(at(2.0)).unwrap();
    assert_eq!(third.cost.detailed_threads, 5);
    assert!(third.threads().all(|(_, t)| t.details_age_seconds == 0.0));
    // details_every = 5: samples 1, 6, 11… read in full.
    for n in 4..=6 {
        let sample = sampler.sample(at(f64::from(n - 1))).unwrap();
        let expected = if n == 6 { 5 } else { 0 };
        assert_eq!(sample.cost.detailed_threads, expected, "sample {n}");
    }
}

#[test]
fn descriptors_are_kept_within_the_budget() {
    let mut sampler = Sampler::new(11416, config("threads_child", "v1")).unwrap();
    sampler.sample(at(0.0)).unwrap();
    // 5 threads × 6 files, 2 processes × 3 files.
    assert_eq!(sampler.kept_descriptors().0, 36);

    let mut small = config("threads_child", "v1");
    small.max_kept_descriptors = Some(10);
    let mut sampler = Sampler::new(11416, small).unwrap();
    let full = sampler.sample(at(0.0)).unwrap();
    assert!(sampler.kept_descriptors().0 <= 10);
    let steady = sampler.sample(at(1.0)).unwrap();
    assert_eq!(steady.thread_count(), 5);
    assert_eq!(full.processes[0].threads, {
        let mut threads = steady.processes[0].threads.clone();
        for thread in &mut threads {
            thread.details_age_seconds = 0.0;
        }
        threads
    });
}

#[test]
fn zombie_child_is_marked() {
    let mut sampler = Sampler::new(11473, config("zombie", "v1")).unwrap();
    let sample = sampler.sample(at(0.0)).unwrap();
    let pids: Vec<i32> = sample.processes.iter().map(|p| p.pid).collect();
    assert_eq!(pids, [11473, 11520]);
    let zombie = &sample.processes[1];
    assert_eq!(zombie.state, 'Z');
    assert!(zombie.cmdline.is_empty());
    assert_eq!(zombie.exe, None);
    assert_eq!(zombie.rss_bytes, 0);
    assert_eq!(zombie.audit, None);
    assert_eq!(tids(zombie), [11520]);
    assert_eq!(zombie.threads[0].state, 'Z');
    assert_eq!(zombie.threads[0].wchan, None);
    assert_eq!(zombie.threads[0].syscall, Some(Syscall::NotInSyscall));
    // The parent waits in read(2) on a pipe.
    match &sample.processes[0].threads[0].syscall {
        Some(Syscall::InSyscall {
            number: 0, name, ..
        }) => {
            assert_eq!(name.as_deref(), Some("read"));
        }
        other => panic!("unexpected syscall {other:?}"),
    }
}

#[test]
fn names_with_spaces_and_parentheses() {
    let mut sampler = Sampler::new(11523, config("odd_name", "v1")).unwrap();
    let sample = sampler.sample(at(0.0)).unwrap();
    assert_eq!(sample.processes.len(), 1);
    let process = &sample.processes[0];
    assert_eq!(process.comm, "a (b) c");
    let names: Vec<&str> = process.threads.iter().map(|t| t.name.as_str()).collect();
    assert_eq!(names, ["a (b) c", "x) (y"]);
    assert_eq!(process.threads[1].cpu_seconds, 0.0);
    assert_eq!(process.threads[1].run_seconds, Some(0.000266059));
}

#[test]
fn host_budget_without_limits() {
    let mut sampler = Sampler::new(11416, config("threads_child", "v1")).unwrap();
    let sample = sampler.sample(at(0.0)).unwrap();
    // The recorded cgroup paths do not exist under the fixture mounts, so the mount
    // roots apply; both are unlimited.
    assert_eq!(
        sample.cpus,
        CpuBudget {
            online: 2,
            affinity: Some(2),
            affinity_list: Some("0-1".into()),
            quota: None,
            quota_source: None,
            usable: 2.0,
            throttling: None,
        }
    );
    let machine = sample.machine.clone().unwrap_or_default();
    assert_eq!(machine.loadavg_1m, Some(0.52));
    assert_eq!(
        (machine.runnable_tasks, machine.total_tasks),
        (Some(2), Some(143))
    );
    assert_eq!(machine.cpu_pressure_some_avg10, Some(0.015));
    assert_eq!(
        sample.memory_limit,
        MemoryLimit {
            bytes: 24683656 * 1024,
            source: "MemTotal".into(),
            mem_total_bytes: 24683656 * 1024,
        }
    );
}

#[test]
fn cgroup_v1_quota_and_memory_limit_up_the_hierarchy() {
    let mut sampler = Sampler::new(11523, config("in_cgroup", "v1")).unwrap();
    let sample = sampler.sample(at(0.0)).unwrap();
    assert_eq!(sample.cpus.quota, Some(1.5));
    assert_eq!(
        sample.cpus.quota_source.as_deref(),
        Some("cgroup v1 cpu,cpuacct/job/cpu.cfs_quota_us=150000 cpu.cfs_period_us=100000")
    );
    assert_eq!(sample.cpus.usable, 1.5);
    // Throttling from the quota's group, and re-read on a steady (non-detail) sample.
    let throttling = sample.cpus.throttling.clone();
    assert_eq!(
        throttling,
        Some(CpuThrottling {
            periods: 1200,
            throttled_periods: 300,
            throttled_seconds: 45.5,
            path: "cpu,cpuacct/job/cpu.stat".into(),
            source: "cgroup v1 cpu,cpuacct/job/cpu.stat".into(),
        })
    );
    let steady = sampler.sample(at(1.0)).unwrap();
    assert_eq!(steady.cpus.throttling, throttling);
    // This tree has no loadavg or pressure files: both are noted, neither is invented.
    let machine = sample.machine.clone().unwrap_or_default();
    assert_eq!(machine.loadavg_1m, None);
    assert_eq!(machine.cpu_pressure_some_avg10, None);
    let sources: Vec<&str> = sample
        .unavailable
        .iter()
        .map(|u| u.source.as_str())
        .collect();
    assert!(sources.contains(&"loadavg"), "{sources:?}");
    assert!(sources.contains(&"cpu-pressure"), "{sources:?}");
    assert_eq!(sample.memory_limit.bytes, 2 << 30);
    assert_eq!(
        sample.memory_limit.source,
        "cgroup v1 memory/job/memory.limit_in_bytes"
    );
}

#[test]
fn cgroup_v2_quota_and_memory_limit_up_the_hierarchy() {
    let cpus = cpu_budget(
        &fixtures().join("proc/in_cgroup"),
        &fixtures().join("cgroup/v2"),
        11523,
        None,
    );
    assert_eq!(cpus.quota, Some(0.5));
    assert_eq!(
        cpus.quota_source.as_deref(),
        Some("cgroup v2 job/worker/cpu.max=50000 100000")
    );
    assert_eq!(cpus.usable, 1.0);
    let throttling = cpus.throttling.unwrap_or_default();
    assert_eq!(
        (throttling.periods, throttling.throttled_periods),
        (800, 600)
    );
    assert!((throttling.throttled_seconds - 120.25).abs() < 1e-9);
    assert_eq!(throttling.source, "cgroup v2 job/worker/cpu.stat");
    let memory = memory_limit(
        &fixtures().join("proc/in_cgroup"),
        &fixtures().join("cgroup/v2"),
        11523,
    );
    assert_eq!(memory.bytes, 1 << 30);
    assert_eq!(memory.source, "cgroup v2 job/memory.max");
}

#[test]
fn missing_pid_is_refused() {
    match Sampler::new(99, config("threads_child", "v1")) {
        Err(SampleError::NoSuchProcess { pid: 99 }) => {}
        other => panic!("unexpected {:?}", other.err()),
    }
}

#[test]
fn without_children_only_the_root() {
    let mut only_root = config("threads_child", "v1");
    only_root.include_children = false;
    let sample = Sampler::new(11416, only_root)
        .unwrap()
        .sample(at(0.0))
        .unwrap();
    assert_eq!(sample.processes.len(), 1);
    assert_eq!(sample.thread_count(), 4);
}

/// A writable copy of a fixture tree.
struct TreeCopy(PathBuf);

impl TreeCopy {
    fn new(name: &str) -> TreeCopy {
        let to = std::env::temp_dir().join(format!(
            "tfwatch-sampler-{name}-{}-{:?}",
            std::process::id(),
            std::thread::current().id()
        ));
        let _ = std::fs::remove_dir_all(&to);
        copy_tree(&fixtures().join("proc").join(name), &to);
        TreeCopy(to)
    }
}

impl Drop for TreeCopy {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn copy_tree(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        let target = to.join(entry.file_name());
        let kind = entry.file_type().unwrap();
        if kind.is_dir() {
            copy_tree(&entry.path(), &target);
        } else if kind.is_symlink() {
            std::os::unix::fs::symlink(std::fs::read_link(entry.path()).unwrap(), target).unwrap();
        } else {
            std::fs::copy(entry.path(), target).unwrap();
        }
    }
}

#[test]
fn tree_from_ppid_when_children_files_are_missing() {
    let tree = TreeCopy::new("threads_child");
    for pid in ["11416", "11470"] {
        for entry in std::fs::read_dir(tree.0.join(pid).join("task")).unwrap() {
            std::fs::remove_file(entry.unwrap().path().join("children")).unwrap();
        }
    }
    let mut config = config("threads_child", "v1");
    config.proc_root = tree.0.clone();
    let sample = Sampler::new(11416, config)
        .unwrap()
        .sample(at(0.0))
        .unwrap();
    let pids: Vec<i32> = sample.processes.iter().map(|p| p.pid).collect();
    assert_eq!(pids, [11416, 11470]);
}

#[test]
fn vanished_threads_and_children_disappear() {
    let tree = TreeCopy::new("threads_child");
    let mut sampler = sampler_on(&tree, |_| {});
    assert_eq!(sampler.sample(at(0.0)).unwrap().thread_count(), 5);
    let before = sampler.kept_descriptors().0;

    // A thread exits: its task directory goes, and the process counts one thread less.
    std::fs::remove_dir_all(tree.0.join("11416/task/11468")).unwrap();
    let stat_path = tree.0.join("11416/stat");
    let stat = std::fs::read_to_string(&stat_path).unwrap();
    std::fs::write(&stat_path, stat.replace(" 20 0 4 0 ", " 20 0 3 0 ")).unwrap();
    // The child exits. A kept descriptor of a real /proc file then fails; one of a
    // fixture file still reads the unlinked file, so empty it first (an empty `stat`
    // reads as a vanished task).
    std::fs::write(tree.0.join("11470/stat"), "").unwrap();
    std::fs::remove_dir_all(tree.0.join("11470")).unwrap();
    let sample = sampler.sample(at(1.0)).unwrap();
    assert_eq!(sample.processes.len(), 1);
    assert_eq!(tids(&sample.processes[0]), [11416, 11467, 11469]);
    assert!(
        sample.unavailable.iter().all(|u| u.source != "stat"),
        "{:?}",
        sample.unavailable
    );
    // The vanished thread's 6 and the vanished child's 3 + 6 descriptors are closed.
    assert_eq!(sampler.kept_descriptors().0, before - 15);
}

#[test]
fn unparsable_thread_stat_is_reported_not_fatal() {
    let tree = TreeCopy::new("odd_name");
    std::fs::write(tree.0.join("11523/task/11570/stat"), "11570 (x) (y) S 1 2").unwrap();
    let mut config = config("odd_name", "v1");
    config.proc_root = tree.0.clone();
    let sample = Sampler::new(11523, config)
        .unwrap()
        .sample(at(0.0))
        .unwrap();
    assert_eq!(tids(&sample.processes[0]), [11523]);
    assert!(
        sample
            .unavailable
            .iter()
            .any(|u| u.source == "stat" && u.pid == Some(11523)),
        "{:?}",
        sample.unavailable
    );
}

#[test]
fn a_reused_child_pid_is_not_taken_for_a_child() {
    let tree = TreeCopy::new("threads_child");
    let mut sampler = sampler_on(&tree, |_| {});
    assert_eq!(sampler.sample(at(0.0)).unwrap().processes.len(), 2);
    // Pid 11470 now names a process of another parent; the root's main thread has not
    // run, so its remembered `children` still lists 11470.
    let stat_path = tree.0.join("11470/stat");
    let stat = std::fs::read_to_string(&stat_path).unwrap();
    std::fs::write(&stat_path, stat.replace(" S 11416 ", " S 1 ")).unwrap();
    let sample = sampler.sample(at(1.0)).unwrap();
    let pids: Vec<i32> = sample.processes.iter().map(|p| p.pid).collect();
    assert_eq!(pids, [11416]);
}

#[test]
fn a_child_forked_by_a_worker_thread_appears() {
    let tree = TreeCopy::new("threads_child");
    let mut sampler = sampler_on(&tree, |_| {});
    assert_eq!(sampler.sample(at(0.0)).unwrap().processes.len(), 2);

    // Worker 11468 runs and forks 11480 (a copy of the first child, renumbered).
    copy_tree(&tree.0.join("11470"), &tree.0.join("11480"));
    std::fs::rename(
        tree.0.join("11480/task/11470"),
        tree.0.join("11480/task/11480"),
    )
    .unwrap();
    for stat in ["11480/stat", "11480/task/11480/stat"] {
        let text = std::fs::read_to_string(tree.0.join(stat)).unwrap();
        std::fs::write(tree.0.join(stat), text.replacen("11470 ", "11480 ", 1)).unwrap();
    }
    std::fs::write(tree.0.join("11416/task/11468/children"), "11480 ").unwrap();
    std::fs::write(tree.0.join("11416/task/11468/schedstat"), "99999 83927 5\n").unwrap();

    let sample = sampler.sample(at(1.0)).unwrap();
    assert_eq!(
        sample.cost.detailed_threads, 1,
        "only the new child's thread"
    );
    let pids: Vec<i32> = sample.processes.iter().map(|p| p.pid).collect();
    assert_eq!(pids, [11416, 11470, 11480]);
    assert_eq!(sample.processes[2].ppid, 11416);
}

#[test]
fn the_sampler_can_move_to_its_own_thread() {
    fn assert_send<T: Send>() {}
    assert_send::<Sampler>();
}

#[test]
fn another_users_process_hides_wchan() {
    let mut sampler = Sampler::new(11523, config("odd_name", "v1")).unwrap();
    // As an unprivileged user other than the owner (uid 0 in the recording).
    sampler.our_uid = 1000;
    let sample = sampler.sample(at(0.0)).unwrap();
    assert!(sample.threads().all(|(_, t)| t.wchan.is_none()));
    let wchan: Vec<_> = sample
        .unavailable
        .iter()
        .filter(|u| u.source == "wchan")
        .collect();
    assert_eq!(wchan.len(), 1, "one entry per process, not per thread");
    assert_eq!(wchan[0].pid, Some(11523));
    assert!(wchan[0].fix.as_deref().unwrap().contains("CAP_SYS_PTRACE"));
}

#[test]
fn a_kernel_without_schedstat_is_reported_every_sample() {
    let tree = TreeCopy::new("odd_name");
    for tid in ["11523", "11570"] {
        std::fs::remove_file(tree.0.join(format!("11523/task/{tid}/schedstat"))).unwrap();
    }
    let mut config = config("odd_name", "v1");
    config.proc_root = tree.0.clone();
    let mut sampler = Sampler::new(11523, config).unwrap();
    for elapsed in [0.0, 1.0] {
        let sample = sampler.sample(at(elapsed)).unwrap();
        assert_eq!(sample.thread_count(), 2);
        assert!(
            sample
                .threads()
                .all(|(_, t)| t.runqueue_wait_seconds.is_none())
        );
        let schedstat: Vec<_> = sample
            .unavailable
            .iter()
            .filter(|u| u.source == "schedstat")
            .collect();
        assert_eq!(schedstat.len(), 1, "{:?}", sample.unavailable);
        assert!(
            schedstat[0]
                .fix
                .as_deref()
                .unwrap()
                .contains("CONFIG_SCHED")
        );
    }
}

/// Rewrites a file of a thread of the `threads_child` copy, in place (kept descriptors
/// see the new text, as they see a live file's).
fn rewrite(tree: &TreeCopy, tid: i32, file: &str, edit: impl Fn(&str) -> String) {
    let path = tree.0.join(format!("11416/task/{tid}/{file}"));
    let text = std::fs::read_to_string(&path).unwrap();
    std::fs::write(&path, edit(&text)).unwrap();
}

/// A sampler of pid 11416 on a `threads_child` copy, configured by `configure`.
fn sampler_on(tree: &TreeCopy, configure: impl FnOnce(&mut SamplerConfig)) -> Sampler {
    let mut config = config("threads_child", "v1");
    config.proc_root = tree.0.clone();
    configure(&mut config);
    Sampler::new(11416, config).unwrap()
}

fn thread(sample: &Sample, tid: i32) -> &crate::model::ThreadSample {
    sample
        .threads()
        .map(|(_, t)| t)
        .find(|t| t.tid == tid)
        .unwrap()
}

#[test]
fn a_thread_that_has_not_run_is_not_read_again_in_steady_samples() {
    let tree = TreeCopy::new("threads_child");
    let mut sampler = sampler_on(&tree, |_| {});
    let first = sampler.sample(at(0.0)).unwrap();
    assert_eq!(first.cost.unchanged_threads, 0);

    // `stat` of 11467 changes while its `schedstat` does not: a live thread cannot do
    // that, so the steady sample carries what it read.
    rewrite(&tree, 11467, "stat", |s| s.replacen(" S ", " D ", 1));
    let steady = sampler.sample(at(1.0)).unwrap();
    assert_eq!(thread(&steady, 11467).state, 'S');
    assert_eq!(steady.cost.unchanged_threads, 5);

    // Once it has run (`schedstat` moved), the steady sample reads `stat` again.
    rewrite(&tree, 11467, "schedstat", |_| "92953 99586 5\n".into());
    let steady = sampler.sample(at(2.0)).unwrap();
    let moved = thread(&steady, 11467);
    assert_eq!(moved.state, 'D');
    assert_eq!(moved.timeslices, Some(5));
    assert_eq!(steady.cost.unchanged_threads, 4);
}

#[test]
fn detail_samples_read_every_state_and_the_slow_files_of_threads_that_changed() {
    let tree = TreeCopy::new("threads_child");
    let mut sampler = sampler_on(&tree, |_| {});
    sampler.sample(at(0.0)).unwrap();

    // Not run, same state: the slow files are confirmed, not read; `stat` is read.
    rewrite(&tree, 11467, "wchan", |_| "do_epoll_wait".into());
    rewrite(&tree, 11467, "stat", |s| {
        s.replacen("(python3)", "(renamed)", 1)
    });
    sampler.request_details();
    let detail = sampler.sample(at(1.0)).unwrap();
    let unchanged = thread(&detail, 11467);
    assert_eq!(unchanged.name, "renamed");
    assert_eq!(unchanged.wchan.as_deref(), Some("futex_do_wait"));
    assert_eq!(unchanged.details_age_seconds, 0.0);
    assert_eq!(detail.cost.detailed_threads, 5);
    assert_eq!(detail.cost.unchanged_threads, 5);

    // Woken without having run yet (S to R): the state differs, so the slow files are
    // read again.
    rewrite(&tree, 11467, "stat", |s| s.replacen(" S ", " R ", 1));
    sampler.request_details();
    let detail = sampler.sample(at(2.0)).unwrap();
    let woken = thread(&detail, 11467);
    assert_eq!(woken.state, 'R');
    assert_eq!(woken.wchan.as_deref(), Some("do_epoll_wait"));
    assert_eq!(detail.cost.unchanged_threads, 4);
}

#[test]
fn a_thread_without_timeslices_is_always_read() {
    let tree = TreeCopy::new("threads_child");
    rewrite(&tree, 11467, "schedstat", |_| "0 0 0\n".into());
    let mut sampler = sampler_on(&tree, |_| {});
    sampler.sample(at(0.0)).unwrap();
    rewrite(&tree, 11467, "stat", |s| s.replacen(" S ", " R ", 1));
    let steady = sampler.sample(at(1.0)).unwrap();
    assert_eq!(thread(&steady, 11467).state, 'R');
    assert_eq!(steady.cost.unchanged_threads, 4);
}

#[test]
fn a_wait_channel_hidden_while_the_thread_was_queued_is_read_again() {
    let tree = TreeCopy::new("threads_child");
    // Asleep but still queued (delayed dequeue): the kernel shows "0".
    rewrite(&tree, 11467, "wchan", |_| "0".into());
    let mut sampler = sampler_on(&tree, |_| {});
    let first = sampler.sample(at(0.0)).unwrap();
    assert_eq!(thread(&first, 11467).wchan, None);
    // Dequeued without running: `schedstat` is the same, the wait channel shows.
    rewrite(&tree, 11467, "wchan", |_| "futex_do_wait".into());
    sampler.request_details();
    let detail = sampler.sample(at(1.0)).unwrap();
    assert_eq!(
        thread(&detail, 11467).wchan.as_deref(),
        Some("futex_do_wait")
    );
    assert_eq!(detail.cost.unchanged_threads, 4);
}

#[test]
fn without_carrying_every_thread_is_read_again() {
    let tree = TreeCopy::new("threads_child");
    let mut sampler = sampler_on(&tree, |config| config.carry_unchanged = false);
    sampler.sample(at(0.0)).unwrap();
    rewrite(&tree, 11467, "stat", |s| s.replacen(" S ", " D ", 1));
    rewrite(&tree, 11467, "wchan", |_| "do_epoll_wait".into());
    let steady = sampler.sample(at(1.0)).unwrap();
    assert_eq!(thread(&steady, 11467).state, 'D');
    assert_eq!(steady.cost.unchanged_threads, 0);
    sampler.request_details();
    let detail = sampler.sample(at(2.0)).unwrap();
    assert_eq!(
        thread(&detail, 11467).wchan.as_deref(),
        Some("do_epoll_wait")
    );
    assert_eq!(detail.cost.unchanged_threads, 0);
}

/// Rewrites the process-level `stat` of pid 11416 in a `threads_child` copy.
fn rewrite_process_stat(tree: &TreeCopy, edit: impl Fn(&str) -> String) {
    let path = tree.0.join("11416/stat");
    let text = std::fs::read_to_string(&path).unwrap();
    std::fs::write(&path, edit(&text)).unwrap();
}

/// Adds `ticks` to the utime of a stat line (field 14).
fn add_utime(stat: &str, ticks: u64) -> String {
    let (head, rest) = stat.rsplit_once(") ").unwrap();
    let mut fields: Vec<String> = rest.split(' ').map(str::to_string).collect();
    // Fields after the name start at field 3 (state); utime is field 14.
    let utime: u64 = fields[11].parse().unwrap();
    fields[11] = (utime + ticks).to_string();
    format!("{head}) {}", fields.join(" "))
}

#[test]
fn a_still_process_is_carried_whole_until_it_uses_cpu() {
    let tree = TreeCopy::new("threads_child");
    let mut sampler = sampler_on(&tree, |config| config.level_sampling = true);
    let first = sampler.sample(at(0.0)).unwrap();
    assert_eq!(first.cost.carried_processes, 0);
    let threads = first.processes[0].threads.len();

    // A thread's files change but the process used no CPU: carried, nothing read.
    rewrite(&tree, 11467, "schedstat", |_| "92953 99586 5\n".into());
    rewrite(&tree, 11467, "stat", |s| s.replacen(" S ", " D ", 1));
    let still = sampler.sample(at(1.0)).unwrap();
    assert_eq!(still.cost.carried_processes, 2, "{:?}", still.cost);
    assert_eq!(thread(&still, 11467).state, 'S');
    assert_eq!(still.processes[0].threads.len(), threads);
    let age = still.processes[0].details_age_seconds(thread(&still, 11467));
    assert!((age - 1.0).abs() < 1e-9, "carried details age: {age}");
    // Carried, the thread list is the one of the full read, not a copy.
    assert!(
        still.processes[0]
            .threads
            .shares(&first.processes[0].threads)
    );
    let pids = |s: &Sample| s.processes.iter().map(|p| p.pid).collect::<Vec<_>>();
    assert_eq!(
        pids(&still),
        pids(&first),
        "the carried root still leads to its child"
    );

    // The process used CPU: its threads are read again.
    rewrite_process_stat(&tree, |s| add_utime(s, 3));
    let moved = sampler.sample(at(2.0)).unwrap();
    assert_eq!(moved.cost.carried_processes, 1, "the child stayed still");
    assert_eq!(thread(&moved, 11467).state, 'D');
    assert_eq!(thread(&moved, 11467).timeslices, Some(5));
}

#[test]
fn a_still_process_is_read_when_details_are_requested() {
    let tree = TreeCopy::new("threads_child");
    let mut sampler = sampler_on(&tree, |config| config.level_sampling = true);
    sampler.sample(at(0.0)).unwrap();
    rewrite(&tree, 11467, "schedstat", |_| "92953 99586 5\n".into());
    rewrite(&tree, 11467, "stat", |s| s.replacen(" S ", " D ", 1));
    sampler.request_details();
    let detail = sampler.sample(at(1.0)).unwrap();
    assert_eq!(detail.cost.carried_processes, 0);
    assert_eq!(thread(&detail, 11467).state, 'D');
}

/// A `threads_child` sampler whose thread budget the root spends: its child (one
/// thread, pid 11470) is deferred, and read once it has been still for 10 s.
fn deferring_sampler(tree: &TreeCopy) -> Sampler {
    sampler_on(tree, |config| {
        config.level_sampling = true;
        config.new_threads_per_sample = 1;
        config.read_still_after_seconds = 10.0;
    })
}

fn child_of(sample: &Sample) -> &crate::model::ProcessSample {
    sample.processes.iter().find(|p| p.pid == 11470).unwrap()
}

fn deferred_noted(sample: &Sample) -> bool {
    sample
        .unavailable
        .iter()
        .any(|u| u.source == "threads-deferred")
}

#[test]
fn a_still_process_past_the_thread_budget_is_known_by_its_stat_until_the_still_window() {
    let tree = TreeCopy::new("threads_child");
    let mut sampler = deferring_sampler(&tree);
    // The root is always read; its child is past the budget it spent.
    let first = sampler.sample(at(0.0)).unwrap();
    let child = child_of(&first);
    assert!(child.threads.is_empty(), "{child:?}");
    assert_eq!(child.num_threads, 1);
    assert!(deferred_noted(&first), "{:?}", first.unavailable);
    // Still (the same CPU time, threads and state): still its stat alone.
    let second = sampler.sample(at(5.0)).unwrap();
    assert!(child_of(&second).threads.is_empty());
    assert!(deferred_noted(&second));
    // Still for the window: read in full.
    let third = sampler.sample(at(10.0)).unwrap();
    assert_eq!(tids(child_of(&third)), vec![11470]);
    assert!(!deferred_noted(&third), "{:?}", third.unavailable);
}

#[test]
fn a_deferred_process_that_runs_is_read_at_once() {
    let tree = TreeCopy::new("threads_child");
    let mut sampler = deferring_sampler(&tree);
    let first = sampler.sample(at(0.0)).unwrap();
    assert!(child_of(&first).threads.is_empty());
    let path = tree.0.join("11470/stat");
    let text = std::fs::read_to_string(&path).unwrap();
    std::fs::write(&path, add_utime(&text, 3)).unwrap();
    let second = sampler.sample(at(1.0)).unwrap();
    assert_eq!(tids(child_of(&second)), vec![11470]);
    assert!(!deferred_noted(&second));
}

#[test]
fn requested_details_read_every_deferred_process_past_the_budget() {
    let tree = TreeCopy::new("threads_child");
    let mut sampler = deferring_sampler(&tree);
    assert!(
        child_of(&sampler.sample(at(0.0)).unwrap())
            .threads
            .is_empty()
    );
    sampler.request_details();
    let detail = sampler.sample(at(1.0)).unwrap();
    assert_eq!(tids(child_of(&detail)), vec![11470]);
    // A snapshot's first sample reads the whole tree too.
    let mut snapshot = deferring_sampler(&tree);
    snapshot.request_details();
    assert_eq!(
        tids(child_of(&snapshot.sample(at(0.0)).unwrap())),
        vec![11470]
    );
}

/// Sets the state letter of a `stat` line (field 3).
fn set_state(stat: &str, state: char) -> String {
    let (head, rest) = stat.rsplit_once(") ").unwrap();
    format!("{head}) {state}{}", &rest[1..])
}

/// The `threads_child` tree whose main thread (11416) is first read while it runs: its
/// slow files say "running" and no wait channel.
fn main_thread_read_running() -> (TreeCopy, Sampler, Sample) {
    let tree = TreeCopy::new("threads_child");
    rewrite(&tree, 11416, "stat", |s| set_state(s, 'R'));
    rewrite(&tree, 11416, "wchan", |_| "0".into());
    rewrite(&tree, 11416, "syscall", |_| "running\n".into());
    rewrite_process_stat(&tree, |s| set_state(s, 'R'));
    let mut sampler = sampler_on(&tree, |config| config.level_sampling = true);
    let first = sampler.sample(at(0.0)).unwrap();
    (tree, sampler, first)
}

/// Issue 18: a launcher's main thread read while it ran (starting its ranks), then
/// asleep in `wait4` for them. Its slow files said "running" and no wait channel; kept
/// until the next detail sample, and carried with the still process after it, they made
/// the thread's wait unknown and the launcher look blocked on its idle pool thread's
/// futex. Once `stat` says it sleeps, its wait is read at once and carried as it is.
#[test]
fn a_thread_gone_to_sleep_since_its_wait_was_read_running_is_read_again_at_once() {
    let (tree, mut sampler, first) = main_thread_read_running();
    let main = thread(&first, 11416);
    assert_eq!((main.state, main.wchan.as_deref()), ('R', None));
    assert_eq!(main.syscall, Some(Syscall::Running));

    // It ran on, then went to sleep waiting for a child: a steady sample (not a detail
    // one) reads `stat` because `schedstat` moved, and finds it asleep.
    rewrite(&tree, 11416, "schedstat", |_| {
        "97209536 3415826 60\n".into()
    });
    rewrite(&tree, 11416, "stat", |s| add_utime(&set_state(s, 'S'), 2));
    rewrite(&tree, 11416, "wchan", |_| "do_wait".into());
    rewrite(&tree, 11416, "syscall", |_| {
        "61 0x2cb6 0x7ffedef5f7dc 0x0 0x0 0x0 0x0 0x7ffedef5f7c0 0x7fa43caa3f16\n".into()
    });
    rewrite_process_stat(&tree, |s| add_utime(&set_state(s, 'S'), 2));
    let asleep = |sample: &Sample| {
        let main = thread(sample, 11416).clone();
        assert_eq!(main.state, 'S');
        assert_eq!(main.wchan.as_deref(), Some("do_wait"), "{main:?}");
        match &main.syscall {
            Some(Syscall::InSyscall { name, .. }) => assert_eq!(name.as_deref(), Some("wait4")),
            other => panic!("the wait for a child, not {other:?}"),
        }
    };
    let steady = sampler.sample(at(1.0)).unwrap();
    assert_eq!(steady.cost.carried_processes, 1, "only the child was still");
    asleep(&steady);
    assert_eq!(thread(&steady, 11416).details_age_seconds, 0.0);

    // Still from here on: carried whole, in the wait it was read in.
    for n in 2..8 {
        let still = sampler.sample(at(f64::from(n))).unwrap();
        assert_eq!(
            still.cost.carried_processes, 2,
            "sample {n}: {:?}",
            still.cost
        );
        asleep(&still);
    }
}

/// The same for a thread that went from running into D (a `stat` on a FUSE mount whose
/// server never answers): its wait channel is read at once, not left unknown.
#[test]
fn a_thread_gone_into_d_since_its_wait_was_read_running_is_read_again_at_once() {
    let (tree, mut sampler, first) = main_thread_read_running();
    assert_eq!(thread(&first, 11416).wchan, None);

    rewrite(&tree, 11416, "schedstat", |_| {
        "97209536 3415826 60\n".into()
    });
    rewrite(&tree, 11416, "stat", |s| add_utime(&set_state(s, 'D'), 2));
    rewrite(&tree, 11416, "wchan", |_| "request_wait_answer".into());
    rewrite_process_stat(&tree, |s| add_utime(&set_state(s, 'D'), 2));
    let steady = sampler.sample(at(1.0)).unwrap();
    let main = thread(&steady, 11416);
    assert_eq!(main.state, 'D');
    assert_eq!(
        main.wchan.as_deref(),
        Some("request_wait_answer"),
        "{main:?}"
    );
    assert_eq!(main.details_age_seconds, 0.0);
}

/// A thread that ran and went back to sleep between detail samples has slow files older
/// than its run: its process is read, not carried whole, until a detail sample has read
/// them; carried before, it would repeat the old wait for as long as it stayed still.
#[test]
fn a_process_is_not_carried_whole_while_a_threads_wait_is_older_than_its_run() {
    let tree = TreeCopy::new("threads_child");
    let mut sampler = sampler_on(&tree, |config| config.level_sampling = true);
    sampler.sample(at(0.0)).unwrap();

    // 11467 ran: from its futex into epoll_wait. The process used CPU, so it is read;
    // a steady sample reads `stat` alone, and keeps the old wait.
    rewrite(&tree, 11467, "schedstat", |_| "92953 99586 5\n".into());
    rewrite(&tree, 11467, "wchan", |_| "do_epoll_wait".into());
    rewrite(&tree, 11467, "syscall", |_| {
        "232 0x3 0x7fa43c5130a0 0x1 0xffffffff 0x0 0x0 0x7fa43c5138c0 0x7fa43caa3f16\n".into()
    });
    rewrite_process_stat(&tree, |s| add_utime(s, 3));
    let moved = sampler.sample(at(1.0)).unwrap();
    assert_eq!(moved.cost.carried_processes, 1);
    assert_eq!(
        thread(&moved, 11467).wchan.as_deref(),
        Some("futex_do_wait")
    );

    // Still now, but not carried while that wait is older than the run.
    for n in 2..5 {
        let sample = sampler.sample(at(f64::from(n))).unwrap();
        assert_eq!(
            sample.cost.carried_processes, 1,
            "sample {n}: the root is read"
        );
    }
    // details_every = 5: the sixth sample reads the slow files; carried after it.
    let detail = sampler.sample(at(5.0)).unwrap();
    assert_eq!(
        thread(&detail, 11467).wchan.as_deref(),
        Some("do_epoll_wait")
    );
    let carried = sampler.sample(at(6.0)).unwrap();
    assert_eq!(carried.cost.carried_processes, 2);
    assert_eq!(
        thread(&carried, 11467).wchan.as_deref(),
        Some("do_epoll_wait")
    );
}

/// Sets a thread's `schedstat` run time (ns) and timeslices.
fn set_schedstat(tree: &TreeCopy, tid: i32, run_ns: u64, timeslices: u64) {
    rewrite(tree, tid, "schedstat", |_| {
        format!("{run_ns} 99586 {timeslices}\n")
    });
}

/// A level sampler of a `threads_child` copy whose main thread runs 30 ms (3 ticks) a
/// sample (the process is never carried whole), after the samples that make its other
/// threads long still; `step(ticks)` moves the main thread on and the process by `ticks`.
struct MovingMain {
    tree: TreeCopy,
    sampler: Sampler,
    main_run: u64,
}

impl MovingMain {
    fn new() -> MovingMain {
        let tree = TreeCopy::new("threads_child");
        let sampler = sampler_on(&tree, |config| {
            config.level_sampling = true;
            config.details_every = 100;
        });
        let mut moving = MovingMain {
            tree,
            sampler,
            main_run: 77_209_536,
        };
        moving.sampler.sample(at(0.0)).unwrap();
        for i in 1..=(STILL_THREAD_SAMPLES + 1) {
            moving.step(3);
            let sample = moving.sampler.sample(at(f64::from(i))).unwrap();
            assert_eq!(sample.cost.carried_processes, 1, "only the child is still");
        }
        moving
    }

    fn step(&mut self, ticks: u64) {
        self.main_run += 30_000_000;
        set_schedstat(&self.tree, 11416, self.main_run, self.main_run / 30_000_000);
        rewrite_process_stat(&self.tree, |s| add_utime(s, ticks));
    }
}

/// A steady sample of a moving process takes its threads asleep and not run for a few
/// samples as last read, unless the process used CPU time its other threads do not
/// account for.
#[test]
fn long_still_threads_are_read_only_when_the_process_cpu_is_unexplained() {
    let mut moving = MovingMain::new();
    // 11467 ran 20 ms and went to sleep in D: the process's 3 ticks are the main
    // thread's 30 ms, so it is taken as last read.
    set_schedstat(&moving.tree, 11467, 20_091_953, 5);
    rewrite(&moving.tree, 11467, "stat", |s| s.replacen(" S ", " D ", 1));
    moving.step(3);
    let carried = moving.sampler.sample(at(10.0)).unwrap();
    assert_eq!(thread(&carried, 11467).timeslices, Some(4));
    assert_eq!(thread(&carried, 11467).state, 'S');
    let age = carried.processes[0].details_age_seconds(thread(&carried, 11467));
    assert!(age > 1.0, "carried from its last read: {age}");
    // The process used 10 ticks, 7 more than the main thread: every thread is read.
    moving.step(10);
    let read = moving.sampler.sample(at(11.0)).unwrap();
    assert_eq!(thread(&read, 11467).timeslices, Some(5));
    assert_eq!(thread(&read, 11467).state, 'D');
}

/// A detail sample reads the long-still threads whatever the process used.
#[test]
fn a_detail_sample_reads_long_still_threads() {
    let mut moving = MovingMain::new();
    set_schedstat(&moving.tree, 11468, 10_061_786, 6);
    moving.step(3);
    moving.sampler.request_details();
    let sample = moving.sampler.sample(at(20.0)).unwrap();
    assert_eq!(thread(&sample, 11468).timeslices, Some(6));
}
