//! Ranks across hosts through Prometheus: a real torchrun job on two "hosts" of one
//! machine (two elastic agents, `--nnodes 2 --node-rank 0/1`, one rank each, each agent
//! in its own cgroup v1 `cpu` group as a pod on its own node would be), one `tfwatch
//! node --cgroup GROUP --listen 127.0.0.1:0` per host, and a real Prometheus scraping
//! both with the exported rules. The mismatch (the second host's rank skips an
//! `all_reduce`) is named by `tfwatch ranks` and by a firing alert on each rank within
//! a minute; a healthy two-host job raises none. And `promtool test rules` on the
//! exported rank rules with series of each case. Every process is ended by its guard
//! and the groups removed, on failure too; skipped (with the reason) without root, a
//! cgroup v1 `cpu` mount, torch or Prometheus, unless `TFWATCH_REQUIRE` names them.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::frameworks::script;
use crate::prometheus::{
    TempDir, drain, exported_rules, free_port, http_get, listening, promtool, query,
    serve_prometheus, tool_or_skip, write_file,
};
use crate::support::{ChildGuard, tfwatch, tfwatch_output};

/// A cgroup v1 `cpu` group for one "host", removed on drop once its processes ended.
struct HostGroup {
    dir: PathBuf,
    /// The path as `/proc/PID/cgroup` shows it, for `node --cgroup`.
    path: String,
}

impl Drop for HostGroup {
    fn drop(&mut self) {
        for _ in 0..100 {
            if std::fs::remove_dir(&self.dir).is_ok() || !self.dir.exists() {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

fn v1_cpu_mount() -> Option<PathBuf> {
    ["/sys/fs/cgroup/cpu,cpuacct", "/sys/fs/cgroup/cpu"]
        .iter()
        .map(PathBuf::from)
        .find(|dir| dir.join("cgroup.procs").is_file())
}

/// The two host groups, or `None` after skipping.
fn host_groups(test: &str) -> Option<[HostGroup; 2]> {
    if unsafe { libc::geteuid() } != 0 {
        crate::support::skip("root", format!("{test}: making a cgroup needs root"));
        return None;
    }
    let Some(mount) = v1_cpu_mount() else {
        crate::support::skip("cgroup", format!("{test}: no cgroup v1 cpu hierarchy"));
        return None;
    };
    let make = |host: &str| {
        let name = format!("tfwatch-ranks-{}-{host}", std::process::id());
        let dir = mount.join(&name);
        std::fs::create_dir_all(&dir)
            .map(|_| HostGroup {
                dir,
                path: format!("/{name}"),
            })
            .map_err(|e| format!("cannot make a cgroup under {}: {e}", mount.display()))
    };
    match (make("host-a"), make("host-b")) {
        (Ok(a), Ok(b)) => Some([a, b]),
        (Err(e), _) | (_, Err(e)) => {
            crate::support::skip("cgroup", format!("{test}: {e}"));
            None
        }
    }
}

/// One "host": its torchrun agent (in the host's group from its first instruction) and
/// its `tfwatch node`, with the URL it serves.
struct Host {
    /// The host group's `cgroup.procs`: the agent and its ranks.
    procs: PathBuf,
    _agent: ChildGuard,
    _node: ChildGuard,
    url: String,
}

impl Drop for Host {
    fn drop(&mut self) {
        // torchrun starts each rank in a session of its own, outside the agent's process
        // group: the ranks are ended by their pids, which the host's group lists.
        if let Ok(text) = std::fs::read_to_string(&self.procs) {
            for pid in text.lines().filter_map(|l| l.trim().parse::<i32>().ok()) {
                unsafe {
                    libc::kill(pid, libc::SIGKILL);
                }
            }
        }
    }
}

fn start_host(group: &HostGroup, node_rank: usize, port: u16, mode: &str) -> Host {
    let agent_command = format!(
        "echo $$ > {procs} && exec python3 -m torch.distributed.run --nnodes 2 --node-rank {node_rank} \
         --nproc-per-node 1 --master-addr 127.0.0.1 --master-port {port} {script} {mode}",
        procs = group.dir.join("cgroup.procs").display(),
        script = script("torch_gloo.py"),
    );
    let mut agent = Command::new("sh");
    agent
        .args(["-c", &agent_command])
        .env("PYTHONUNBUFFERED", "1")
        .env("OMP_NUM_THREADS", "1");
    let mut agent = ChildGuard::spawn(agent);
    let _ = drain(&mut agent);
    let (node, _, url) = listening(tfwatch(&[
        "node",
        "--json",
        "--cgroup",
        &group.path,
        "--listen",
        "127.0.0.1:0",
        "--hang-after",
        "10s",
    ]));
    Host {
        procs: group.dir.join("cgroup.procs"),
        _agent: agent,
        _node: node,
        url,
    }
}

/// A Prometheus server scraping both hosts' tfwatch, each target labelled with its node
/// (`host-a`, `host-b`), with the rules of `rules`; its guard and URL.
fn start_prometheus(dir: &TempDir, rules: &Path, hosts: &[&Host]) -> (ChildGuard, String) {
    let mut targets = String::new();
    for (n, host) in hosts.iter().enumerate() {
        let target = host
            .url
            .trim_start_matches("http://")
            .trim_end_matches("/metrics");
        targets.push_str(&format!(
            "      - targets: [\"{target}\"]\n        labels:\n          node: host-{}\n",
            ["a", "b"][n]
        ));
    }
    let (prometheus, _output, base) = serve_prometheus(dir, rules, "tfwatch-node", &targets);
    (prometheus, base)
}

/// `tfwatch ranks --prometheus BASE --json`.
fn ranks(base: &str) -> Value {
    let out = tfwatch_output(&["ranks", "--prometheus", base, "--json"]);
    assert!(out.status.success(), "{out:?}");
    serde_json::from_slice(&out.stdout).unwrap()
}

/// Polls `check` every second until it gives a value, or fails after `limit` with what
/// was seen last.
fn within<T>(what: &str, limit: Duration, mut check: impl FnMut() -> Result<T, String>) -> T {
    let deadline = Instant::now() + limit;
    loop {
        match check() {
            Ok(value) => return value,
            Err(seen) if Instant::now() >= deadline => {
                panic!("{what} not within {limit:?}; last seen:\n{seen}")
            }
            Err(_) => std::thread::sleep(Duration::from_secs(1)),
        }
    }
}

/// Until both hosts' ranks have series in Prometheus: how long the job took to start.
fn both_ranks_scraped(base: &str) {
    within(
        "both ranks' series in Prometheus",
        Duration::from_secs(240),
        || {
            let found = query(base, "tfwatch_rank_info").unwrap_or_default();
            if found.len() == 2 {
                Ok(())
            } else {
                Err(format!("{found:#?}"))
            }
        },
    );
}

#[test]
fn a_mismatch_across_two_hosts_is_named_by_tfwatch_ranks_and_alerts_and_a_healthy_job_by_none() {
    let test = "a_mismatch_across_two_hosts_is_named_by_tfwatch_ranks_and_alerts";
    if let Some(reason) = crate::distributed::torch_missing() {
        crate::support::skip("torch", format!("{test}: {reason}"));
        return;
    }
    let (Some(_), Some(_)) = (tool_or_skip("prometheus"), tool_or_skip("promtool")) else {
        return;
    };
    let Some(groups) = host_groups(test) else {
        return;
    };

    // The mismatch: rank 1 (host b) skips an all_reduce and waits in barrier.
    let dir = TempDir::new("ranks-mismatch");
    let rules = exported_rules(&dir);
    let port = free_port();
    let a = start_host(&groups[0], 0, port, "mismatch");
    let b = start_host(&groups[1], 1, port, "mismatch");
    let (prometheus, base) = start_prometheus(&dir, &rules, &[&a, &b]);
    both_ranks_scraped(&base);
    let started = Instant::now();
    let all_reduce = crate::distributed::line_of("the last rank skips this one");
    let report = within(
        "tfwatch ranks to name the mismatch",
        Duration::from_secs(60),
        || {
            let report = ranks(&base);
            let job = &report["jobs"][0];
            if job["verdict"] == "collective-mismatch" {
                Ok(report)
            } else {
                Err(format!("{report:#}"))
            }
        },
    );
    crate::schema::check_report(&crate::schema::validator("report"), &report.to_string());
    let job = &report["jobs"][0];
    let ranks_seen = job["ranks"].as_array().unwrap();
    assert_eq!(ranks_seen.len(), 2, "{report:#}");
    let instance = |url: &str| {
        url.trim_start_matches("http://")
            .trim_end_matches("/metrics")
            .to_string()
    };
    for (rank, host, collective, line) in [
        (0, &a, "all_reduce", all_reduce),
        (1, &b, "barrier", all_reduce + 1),
    ] {
        let r = &ranks_seen[rank];
        assert_eq!(r["rank"], rank, "{report:#}");
        assert_eq!(r["instance"], instance(&host.url), "{report:#}");
        assert_eq!(
            r["target"]["node"],
            ["host-a", "host-b"][rank],
            "{report:#}"
        );
        assert_eq!(r["collective"], collective, "{report:#}");
        assert!(
            r["call_site"]
                .as_str()
                .unwrap()
                .ends_with(&format!("torch_gloo.py:{line}")),
            "{report:#}"
        );
        assert!(r["pid"].as_i64().is_some_and(|p| p > 0), "{report:#}");
    }
    let summary = job["summary"].as_str().unwrap();
    assert!(
        summary.starts_with("collective mismatch") && summary.contains(&instance(&b.url)),
        "{summary}"
    );
    let firing = within(
        "the mismatch alert firing for each rank",
        Duration::from_secs(60).saturating_sub(started.elapsed()) + Duration::from_secs(5),
        || {
            let alerts = query(
                &base,
                "ALERTS{alertname=\"TfwatchCollectiveMismatch\",alertstate=\"firing\"}",
            )
            .unwrap_or_default();
            if alerts.len() == 2 {
                Ok(alerts)
            } else {
                Err(format!("{alerts:#?}"))
            }
        },
    );
    let mut named: Vec<(String, String)> = firing
        .iter()
        .map(|a| {
            (
                a["metric"]["rank"].as_str().unwrap_or("").to_string(),
                a["metric"]["instance"].as_str().unwrap_or("").to_string(),
            )
        })
        .collect();
    named.sort();
    assert_eq!(
        named,
        [
            ("0".to_string(), instance(&a.url)),
            ("1".to_string(), instance(&b.url))
        ],
        "{firing:#?}"
    );
    eprintln!(
        "mismatch named by tfwatch ranks and the alert {:.0}s after both ranks were scraped",
        started.elapsed().as_secs_f64()
    );
    // The series of one rank: one per family.
    let body = http_get(&a.url).unwrap();
    let per_rank = body
        .lines()
        .filter(|l| l.starts_with("tfwatch_rank_"))
        .count();
    assert_eq!(per_rank, 3, "{body}");
    let labelled = body
        .lines()
        .filter(|l| !l.starts_with('#') && l.contains("rank=\"0\""))
        .count();
    eprintln!(
        "series of the rank on host a: {per_rank} tfwatch_rank_* series, {labelled} series labelled with its rank in all"
    );
    drop((prometheus, a, b));

    // A healthy job: every rank computes; no rank alert, pending or firing.
    let dir = TempDir::new("ranks-healthy");
    let rules = exported_rules(&dir);
    let port = free_port();
    let a = start_host(&groups[0], 0, port, "healthy");
    let b = start_host(&groups[1], 1, port, "healthy");
    let (prometheus, base) = start_prometheus(&dir, &rules, &[&a, &b]);
    both_ranks_scraped(&base);
    // Watched as long as the mismatch took to alert, and longer.
    let watched = Instant::now();
    while watched.elapsed() < Duration::from_secs(45) {
        let alerts = query(&base, "ALERTS").unwrap_or_default();
        let ours: Vec<&Value> = alerts
            .iter()
            .filter(|a| {
                a["metric"]["alertname"].as_str().is_some_and(|n| {
                    n.starts_with("TfwatchRank")
                        || n.starts_with("TfwatchCollective")
                        || n.starts_with("TfwatchDistributed")
                })
            })
            .collect();
        assert!(ours.is_empty(), "a healthy job raised {ours:#?}");
        std::thread::sleep(Duration::from_secs(1));
    }
    let report = ranks(&base);
    assert_eq!(report["jobs"][0]["verdict"], "progressing", "{report:#}");
    assert_eq!(
        report["jobs"][0]["ranks"].as_array().map(Vec::len),
        Some(2),
        "{report:#}"
    );
    drop((prometheus, a, b));
    drop(groups);
}

/// `promtool test rules` on the exported rules: the four rank alerts each fire on the
/// series of their case, naming the odd ranks with their instance, and stay quiet on a
/// healthy job (job `h`: each case lists every alert of its name at that time).
#[test]
fn the_exported_rank_rules_pass_promtool_test_rules() {
    let Some(promtool_bin) = tool_or_skip("promtool") else {
        return;
    };
    let dir = TempDir::new("rank-rules");
    let rules = exported_rules(&dir);
    let series = |instance: &str,
                  job: &str,
                  rank: u32,
                  state: &str,
                  collective: &str,
                  site: &str,
                  still: &str| {
        format!(
            "      - series: 'tfwatch_rank_info{{instance=\"{instance}\",distributed_job=\"{job}\",rank=\"{rank}\",pid=\"{pid}\",world_size=\"2\",state=\"{state}\",collective=\"{collective}\",call_site=\"{site}\"}}'\n        values: '1x120'\n      - series: 'tfwatch_rank_seconds_without_progress{{instance=\"{instance}\",distributed_job=\"{job}\",rank=\"{rank}\",pid=\"{pid}\"}}'\n        values: '{still}'\n      - series: 'tfwatch_rank_world_size{{instance=\"{instance}\",distributed_job=\"{job}\",rank=\"{rank}\",pid=\"{pid}\"}}'\n        values: '2x120'\n",
            pid = 100 + rank
        )
    };
    let mut input = String::new();
    // Job m: a mismatch, stopped for long. Job s: a straggler. Job x: rank 1 missing.
    // Job h: healthy.
    input += &series(
        "a:9464",
        "m",
        0,
        "collective",
        "all_reduce",
        "t.py:5",
        "0+1x120",
    );
    input += &series(
        "b:9464",
        "m",
        1,
        "collective",
        "barrier",
        "t.py:6",
        "0+1x120",
    );
    input += &series(
        "a:9464",
        "s",
        0,
        "collective",
        "all_reduce",
        "t.py:5",
        "0+1x120",
    );
    input += &series("b:9464", "s", 1, "blocked", "", "t.py:4", "0+1x120");
    input += &series(
        "a:9464",
        "x",
        0,
        "collective",
        "all_reduce",
        "t.py:5",
        "0+1x120",
    );
    input += &series("a:9464", "h", 0, "computing", "", "", "0x120");
    input += &series("b:9464", "h", 1, "running", "", "", "0x120");
    // The expected alerts, written out: each rank alert carries the rank's labels.
    let info_labels = |instance: &str,
                       job: &str,
                       rank: u32,
                       state: &str,
                       collective: &str,
                       site: &str| {
        format!(
            "              instance: \"{instance}\"\n              distributed_job: \"{job}\"\n              rank: \"{rank}\"\n              pid: \"{}\"\n              world_size: \"2\"\n              state: \"{state}\"\n              collective: \"{collective}\"\n              call_site: \"{site}\"\n",
            100 + rank
        )
    };
    let collective_labels =
        |instance: &str, job: &str, rank: u32, state: &str, collective: &str, site: &str| {
            let mut text = info_labels(instance, job, rank, state, collective, site);
            text = text.replace("              collective: \"\"\n", "");
            text.replace("              call_site: \"\"\n", "")
        };
    // Each alert's description, as exported (a constant remedy); its summary, which
    // names the job and the odd rank with its instance, is what the cases check.
    let exported = std::fs::read_to_string(&rules).unwrap();
    let description = |name: &str| {
        let at = exported
            .find(&format!("- alert: \"{name}\""))
            .unwrap_or_else(|| panic!("no {name} in the exported rules"));
        exported[at..]
            .lines()
            .find_map(|l| l.trim().strip_prefix("description: "))
            .unwrap()
            .to_string()
    };
    let mut cases = String::new();
    let mut case = |at: &str, name: &str, alerts: &[(String, String)]| {
        cases +=
            &format!("      - eval_time: {at}\n        alertname: {name}\n        exp_alerts:");
        if alerts.is_empty() {
            cases += " []\n";
            return;
        }
        cases += "\n";
        for (labels, summary) in alerts {
            cases += &format!(
                "          - exp_labels:\n{labels}            exp_annotations:\n              summary: \"{summary}\"\n              description: {}\n",
                description(name)
            );
        }
    };
    let sev = |s: &str| format!("              severity: {s}\n");
    let mismatch = |rank: u32, instance: &str, collective: &str, site: &str| {
        (
            format!(
                "{}{}",
                sev("error"),
                collective_labels(instance, "m", rank, "collective", collective, site)
            ),
            format!(
                "distributed job m: collective mismatch: rank {rank} (pid {} on {instance}) waits in {collective} at {site} while other ranks wait in another collective or at another line",
                100 + rank
            ),
        )
    };
    case(
        "20s",
        "TfwatchCollectiveMismatch",
        &[
            mismatch(0, "a:9464", "all_reduce", "t.py:5"),
            mismatch(1, "b:9464", "barrier", "t.py:6"),
        ],
    );
    // Not before its `for`.
    case("10s", "TfwatchCollectiveMismatch", &[]);
    case(
        "40s",
        "TfwatchRankStraggler",
        &[(
            format!(
                "{}{}",
                sev("warning"),
                collective_labels("b:9464", "s", 1, "blocked", "", "t.py:4")
            ),
            "distributed job s: straggler: rank 1 (pid 101 on b:9464) is blocked outside any collective while other ranks wait in one".to_string(),
        )],
    );
    case(
        "40s",
        "TfwatchRankMissing",
        &[(
            format!("{}              distributed_job: \"x\"\n", sev("warning")),
            "distributed job x: 1 rank(s) of its world size report no series while the others wait in a collective".to_string(),
        )],
    );
    case("50s", "TfwatchDistributedJobStopped", &[]);
    let stopped = |instance: &str, job: &str, rank: u32| {
        (
            format!(
                "{}              instance: \"{instance}\"\n              distributed_job: \"{job}\"\n              rank: \"{rank}\"\n              pid: \"{}\"\n",
                sev("error"),
                100 + rank
            ),
            format!(
                "distributed job {job}: rank {rank} (pid {} on {instance}) made no progress for 1m 10s, as every watched rank of the job",
                100 + rank
            ),
        )
    };
    case(
        "70s",
        "TfwatchDistributedJobStopped",
        &[
            stopped("a:9464", "m", 0),
            stopped("b:9464", "m", 1),
            stopped("a:9464", "s", 0),
            stopped("b:9464", "s", 1),
            stopped("a:9464", "x", 0),
        ],
    );
    let unit = format!(
        "rule_files:\n  - {}\nevaluation_interval: 1s\ntests:\n  - interval: 1s\n    input_series:\n{input}    alert_rule_test:\n{cases}",
        rules.display()
    );
    let file = dir.path().join("ranks_test.yml");
    write_file(&file, &unit);
    let (ok, text) = promtool(
        &promtool_bin,
        &["test", "rules", file.to_str().unwrap()],
        None,
    );
    assert!(
        ok,
        "promtool test rules failed:\n{text}\n--- test file:\n{unit}"
    );
}

/// A Prometheus that never answers is given up at the deadline, one that is not there is
/// named, both as tfwatch's failure (125); a URL that is no server's address is a usage
/// error (2).
#[test]
fn an_unanswering_or_absent_prometheus_is_a_clear_error_within_the_deadline() {
    // Accepts and never answers.
    let silent = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}", silent.local_addr().unwrap());
    let started = Instant::now();
    let out = tfwatch_output(&["ranks", "--prometheus", &url, "--timeout", "1s"]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(125), "{stderr}");
    assert!(
        stderr.contains(&format!("cannot query Prometheus at {url} within 1000 ms")),
        "{stderr}"
    );
    assert!(
        started.elapsed() < Duration::from_secs(30),
        "{:?}",
        started.elapsed()
    );
    drop(silent);
    let absent = format!("http://127.0.0.1:{}", free_port());
    let out = tfwatch_output(&["ranks", "--prometheus", &absent, "--timeout", "2s"]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(125), "{stderr}");
    assert!(
        stderr.contains(&absent) && stderr.contains("refused"),
        "{stderr}"
    );
    for bad in [
        "127.0.0.1:9090",
        "https://p:9090",
        "http://p:9090/?query=up",
    ] {
        let out = tfwatch_output(&["ranks", "--prometheus", bad]);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{bad}: {stderr}");
        assert!(stderr.contains("--prometheus"), "{bad}: {stderr}");
    }
}
