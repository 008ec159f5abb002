use super::*;

fn process(pid: i32, ppid: i32, comm: &str, cgroup: &str) -> NodeProcess {
    NodeProcess {
        pid,
        ppid,
        comm: comm.to_string(),
        num_threads: 1,
        cgroup: cgroup.to_string(),
        namespace: None,
        rank: None,
    }
}

#[test]
fn a_tree_is_one_job_under_the_first_boundary() {
    // systemd(1) → sshd → bash → python (trainer) → two workers; bash → sleep.
    let processes = vec![
        process(1, 0, "systemd", "/"),
        process(2, 0, "kthreadd", "/"),
        process(9, 2, "kworker/0:1", "/"),
        process(100, 1, "sshd", "/"),
        process(200, 100, "bash", "/"),
        process(300, 200, "python3", "/"),
        process(301, 300, "python3", "/"),
        process(302, 300, "python3", "/"),
        process(400, 200, "sleep", "/"),
    ];
    let jobs = group_jobs(&processes);
    let names: Vec<&str> = jobs.keys().map(|l| l.job.as_str()).collect();
    assert_eq!(names, ["tree/300-python3", "tree/400-sleep"]);
    assert_eq!(jobs.values().next().unwrap(), &vec![300, 301, 302]);
}

#[test]
fn a_cgroup_job_holds_processes_of_different_trees() {
    let pod = "/kubepods/burstable/pod0a1b2c3d-1111-2222-3333-444455556666/9f8e7d6c5b4a39281706f5e4d3c2b1a09f8e7d6c5b4a39281706f5e4d3c2b1a0";
    let mut shim = process(50, 1, "containerd-shim-runc-v2", "/");
    shim.num_threads = 12;
    let mut main = process(60, 50, "python3", pod);
    main.namespace = Some("training".into());
    let processes = vec![shim, main, process(61, 50, "python3", pod)];
    let jobs = group_jobs(&processes);
    assert_eq!(jobs.len(), 1);
    let (labels, pids) = jobs.iter().next().unwrap();
    assert_eq!(
        labels.pod.as_deref(),
        Some("0a1b2c3d-1111-2222-3333-444455556666")
    );
    assert_eq!(labels.container.as_deref(), Some("9f8e7d6c5b4a"));
    assert_eq!(labels.namespace.as_deref(), Some("training"));
    assert_eq!(pids, &vec![60, 61]);
}

#[test]
fn jobs_past_the_bound_are_merged_into_other() {
    let mut processes = vec![process(1, 0, "systemd", "/"), process(10, 1, "bash", "/")];
    let count = MAX_JOBS + 10;
    for i in 0..count {
        let mut p = process(1000 + i as i32, 10, "worker", "/");
        // Job i has i + 1 threads: the smallest are merged.
        p.num_threads = i as u32 + 1;
        processes.push(p);
    }
    let jobs = group_jobs(&processes);
    assert_eq!(jobs.len(), MAX_JOBS, "the bound holds");
    let other = &jobs[&JobLabels::other()];
    assert_eq!(other.len(), count - (MAX_JOBS - 1));
    // The merged are the ones with the fewest threads: pids 1000.. upward.
    assert_eq!(other[0], 1000);
    assert!(!jobs.keys().any(|l| l.job == "tree/1000-worker"));
    assert!(
        jobs.keys()
            .any(|l| l.job == format!("tree/{}-worker", 1000 + count - 1))
    );
}

#[test]
fn odd_paths_name_no_job() {
    for path in [
        "",
        "/",
        "/user.slice/user-1000.slice/session-4.scope",
        "/process_api/c07e",
    ] {
        assert_eq!(job_from_cgroup(path), None, "{path}");
    }
    assert_eq!(
        job_from_cgroup("/kubepods/burstable"),
        None,
        "a pod slice without a pod"
    );
}
