//! `tfwatch ranks --prometheus URL [--job ID] [--json]`: the ranks of distributed jobs
//! across nodes, from the `tfwatch_rank_*` series Prometheus scrapes from `tfwatch node
//! --listen` on every node. Each rank is named with its host (the scrape target's
//! `instance` and its other target labels), and each job gets the verdict the local
//! diagnosis gives, from the same function ([`crate::detect::distributed::verdict`]):
//! mismatch, straggler, missing rank, the same collective everywhere.

use std::collections::BTreeMap;
use std::io::Write;
use std::time::Duration;

use anyhow::{Context, Result, bail};
use serde::Serialize;

use super::settings::{UsageError, check_duration};
use crate::cli::RanksArgs;
use crate::detect::distributed::{RankWait, Verdict, verdict};
use crate::sink::export::ranks::RankState;

/// The labels tfwatch puts on its rank series; every other label of a series is the
/// scrape target's (`instance`, `job`, a node name from relabelling).
const OWN_LABELS: &[&str] = &[
    "__name__",
    "distributed_job",
    "rank",
    "local_rank",
    "world_size",
    "pid",
    "state",
    "collective",
    "call_site",
    "function",
    "watched_job",
    "watched_pod",
    "watched_container",
    "watched_namespace",
];

/// The most bytes of one Prometheus answer read.
const MAX_ANSWER_BYTES: u64 = 16 << 20;

/// `tfwatch ranks`, checked.
#[derive(Debug, Clone, PartialEq)]
pub struct RanksSettings {
    /// The server's base URL, without a trailing `/`.
    pub prometheus: String,
    pub job: Option<String>,
    pub json: bool,
    pub timeout: Duration,
}

impl RanksSettings {
    pub fn from_args(args: &RanksArgs) -> Result<RanksSettings, UsageError> {
        Self::check(args).map_err(UsageError)
    }

    fn check(args: &RanksArgs) -> Result<RanksSettings> {
        check_duration("--timeout", args.timeout)?;
        if args.timeout.is_zero() {
            bail!("--timeout 0s leaves no time to query Prometheus: give e.g. 10s");
        }
        let url = args.prometheus.trim();
        let Some(rest) = url.strip_prefix("http://") else {
            bail!(
                "--prometheus {url:?}: only http:// is supported (give the server's address, e.g. http://127.0.0.1:9090)"
            );
        };
        if rest.is_empty() || rest.starts_with('/') || url.chars().any(char::is_whitespace) {
            bail!(
                "--prometheus {url:?}: no host (give the server's address, e.g. http://127.0.0.1:9090)"
            );
        }
        if url.contains(['?', '#']) {
            bail!(
                "--prometheus {url:?}: give the server's base URL without a query (e.g. http://127.0.0.1:9090)"
            );
        }
        if let Some(job) = &args.job
            && job.trim().is_empty()
        {
            bail!(
                "--job is empty: give a distributed_job label value (see `tfwatch ranks` without --job)"
            );
        }
        Ok(RanksSettings {
            prometheus: url.trim_end_matches('/').to_string(),
            job: args.job.clone(),
            json: args.json,
            timeout: args.timeout,
        })
    }
}

/// One rank as Prometheus has it.
#[derive(Debug, Clone, PartialEq, Serialize, schemars::JsonSchema)]
pub struct RemoteRank {
    pub rank: u32,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub local_rank: Option<u32>,
    pub pid: i32,
    /// The scrape target's `instance`: the node's tfwatch.
    pub instance: String,
    /// The target's other labels (`job`, a node name set by relabelling).
    pub target: BTreeMap<String, String>,
    /// `collective`, `computing`, `blocked`, `waiting` or `running`.
    pub state: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub collective: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub call_site: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub function: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub seconds_without_progress: Option<f64>,
    #[serde(skip)]
    world_size: Option<u32>,
}

impl RemoteRank {
    /// `rank 1/2 (pid 7) on node-b:9464`.
    fn label(&self, world: Option<u32>) -> String {
        let rank = match world {
            Some(world) => format!("rank {}/{world}", self.rank),
            None => format!("rank {}", self.rank),
        };
        format!("{rank} (pid {}) on {}", self.pid, self.host())
    }

    /// The instance with the target's other labels: `node-b:9464 (node=b)`.
    fn host(&self) -> String {
        let others: Vec<String> = self
            .target
            .iter()
            .filter(|(name, _)| name.as_str() != "job")
            .map(|(name, value)| format!("{name}={value}"))
            .collect();
        if others.is_empty() {
            self.instance.clone()
        } else {
            format!("{} ({})", self.instance, others.join(", "))
        }
    }
}

/// One distributed job across its nodes and its verdict.
#[derive(Debug, Clone, PartialEq, Serialize, schemars::JsonSchema)]
pub struct JobRanks {
    /// The `distributed_job` label.
    pub job: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub world_size: Option<u32>,
    /// `progressing`, `collective-mismatch`, `straggler`, `missing-rank`,
    /// `same-collective` or `unknown`.
    pub verdict: String,
    pub summary: String,
    #[serde(skip_serializing_if = "String::is_empty")]
    pub remedy: String,
    /// Ranks below the world size that no node reports.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub missing_ranks: Vec<u32>,
    pub ranks: Vec<RemoteRank>,
}

/// What `tfwatch ranks --json` prints: one document.
#[derive(Debug, Clone, PartialEq, Serialize, schemars::JsonSchema)]
pub struct RanksReport {
    pub prometheus: String,
    pub jobs: Vec<JobRanks>,
}

/// The ranks of each job in the answers of the two queries, `info` (`tfwatch_rank_info`)
/// and `still` (`tfwatch_rank_seconds_without_progress`).
pub fn ranks_of(
    info: &[serde_json::Value],
    still: &[serde_json::Value],
) -> BTreeMap<String, Vec<RemoteRank>> {
    let labels = |series: &serde_json::Value| -> BTreeMap<String, String> {
        series["metric"]
            .as_object()
            .map(|m| {
                m.iter()
                    .filter_map(|(k, v)| Some((k.clone(), v.as_str()?.to_string())))
                    .collect()
            })
            .unwrap_or_default()
    };
    let key = |l: &BTreeMap<String, String>| {
        ["distributed_job", "rank", "pid", "instance"]
            .map(|k| l.get(k).cloned().unwrap_or_default())
    };
    let seconds: BTreeMap<[String; 4], f64> = still
        .iter()
        .filter_map(|s| {
            let value = s["value"][1].as_str()?.parse::<f64>().ok()?;
            Some((key(&labels(s)), value))
        })
        .collect();
    let mut jobs: BTreeMap<String, Vec<RemoteRank>> = BTreeMap::new();
    for series in info {
        let l = labels(series);
        let text = |name: &str| l.get(name).filter(|v| !v.is_empty()).cloned();
        let (Some(job), Some(rank), Some(pid)) = (
            text("distributed_job"),
            text("rank").and_then(|r| r.parse().ok()),
            text("pid").and_then(|p| p.parse().ok()),
        ) else {
            continue;
        };
        let target = l
            .iter()
            .filter(|(name, _)| !OWN_LABELS.contains(&name.as_str()) && name.as_str() != "instance")
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        jobs.entry(job).or_default().push(RemoteRank {
            rank,
            local_rank: text("local_rank").and_then(|r| r.parse().ok()),
            pid,
            instance: text("instance").unwrap_or_else(|| "unknown instance".to_string()),
            target,
            state: text("state").unwrap_or_else(|| "unknown".to_string()),
            collective: text("collective"),
            call_site: text("call_site"),
            function: text("function"),
            seconds_without_progress: seconds.get(&key(&l)).copied(),
            world_size: text("world_size").and_then(|w| w.parse().ok()),
        });
    }
    for ranks in jobs.values_mut() {
        ranks.sort_by(|a, b| a.rank.cmp(&b.rank).then(a.instance.cmp(&b.instance)));
    }
    jobs
}

/// The verdict of one job's ranks: from the same [`verdict`] as on one machine, over
/// the ranks whose place is known (a rank whose stacks were not taken is left out, as
/// locally); ranks below the world size that no node reports are missing.
pub fn judge(job: &str, ranks: Vec<RemoteRank>) -> JobRanks {
    let world = ranks.iter().filter_map(|r| r.world_size).max();
    let missing: Vec<u32> = world.map_or_else(Vec::new, |world| {
        (0..world)
            .filter(|n| !ranks.iter().any(|r| r.rank == *n))
            .collect()
    });
    let state = |r: &RemoteRank| RankState::parse(&r.state);
    let stalled = ranks
        .iter()
        .any(|r| state(r).is_some_and(|s| !s.progresses()));
    let waits: Vec<RankWait> = ranks
        .iter()
        .filter(|r| !matches!(state(r), None | Some(RankState::Waiting)))
        .map(|r| RankWait {
            pid: r.pid,
            rank: r.rank,
            label: r.label(world),
            collective: r
                .collective
                .clone()
                .filter(|_| state(r) == Some(RankState::Collective)),
            site: r.call_site.clone(),
            function: r.function.clone(),
            busy: state(r).is_some_and(RankState::progresses),
        })
        .collect();
    let missing_text = || {
        let names: Vec<String> = missing.iter().map(|n| format!("rank {n}")).collect();
        format!(
            "{} of world size {} report no series: {}",
            missing.len(),
            world.unwrap_or_default(),
            names.join(", ")
        )
    };
    let (kind, summary, remedy) = if !stalled && missing.is_empty() {
        (
            "progressing".to_string(),
            "every rank makes progress".to_string(),
            String::new(),
        )
    } else {
        let v = verdict(&waits, world);
        let kind = match &v {
            Verdict::CollectiveMismatch => "collective-mismatch",
            Verdict::Straggler(_) => "straggler",
            Verdict::PeerOutside if !missing.is_empty() => "missing-rank",
            Verdict::PeerOutside => "unknown",
            Verdict::SameCollective => "same-collective",
            Verdict::Unknown if !missing.is_empty() => "missing-rank",
            Verdict::Unknown => "unknown",
        };
        let mut summary = match (&v, missing.is_empty()) {
            (Verdict::PeerOutside, false) => format!(
                "every rank that reports waits in the same collective at the same line: {}",
                missing_text()
            ),
            (Verdict::PeerOutside, true) | (Verdict::Unknown, true) => {
                "some ranks make no progress, and where they wait is not known yet (their stacks were not taken)".to_string()
            }
            (Verdict::Unknown, false) => missing_text(),
            _ => v.text(&waits),
        };
        if !missing.is_empty() && !matches!(v, Verdict::PeerOutside | Verdict::Unknown) {
            summary = format!("{summary}; {}", missing_text());
        }
        let remedy = match (&v, missing.is_empty()) {
            (Verdict::PeerOutside | Verdict::Unknown, false) => {
                "A missing rank died, or runs on a node whose tfwatch node Prometheus does not scrape: check its node and its logs.".to_string()
            }
            _ => v.remedy().to_string(),
        };
        (kind.to_string(), summary, remedy)
    };
    JobRanks {
        job: job.to_string(),
        world_size: world,
        verdict: kind,
        summary,
        remedy,
        missing_ranks: missing,
        ranks,
    }
}

/// The `data.result` of an instant query of `expr`, within the deadline.
fn query(settings: &RanksSettings, expr: &str) -> Result<Vec<serde_json::Value>> {
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .timeout_global(Some(settings.timeout))
        .http_status_as_error(false)
        .max_redirects(0)
        .proxy(None)
        .user_agent(format!("tfwatch/{}", env!("CARGO_PKG_VERSION")))
        .build()
        .into();
    let url = format!("{}/api/v1/query", settings.prometheus);
    let mut response = agent
        .get(&url)
        .query("query", expr)
        .call()
        .with_context(|| {
            format!(
                "cannot query Prometheus at {} within {} ms: is it up, and is the URL its address?",
                settings.prometheus,
                settings.timeout.as_millis()
            )
        })?;
    let status = response.status();
    let body = response
        .body_mut()
        .with_config()
        .limit(MAX_ANSWER_BYTES)
        .read_to_string()
        .with_context(|| format!("cannot read Prometheus's answer from {url}"))?;
    let json: serde_json::Value = serde_json::from_str(&body).with_context(|| {
        format!(
            "{url} answered HTTP {} with no Prometheus API JSON: is {} a Prometheus server?",
            status.as_u16(),
            settings.prometheus
        )
    })?;
    if json["status"] != "success" {
        bail!(
            "Prometheus at {} refused the query {expr:?}: {}",
            settings.prometheus,
            json["error"].as_str().unwrap_or("no reason given")
        );
    }
    Ok(json["data"]["result"]
        .as_array()
        .cloned()
        .unwrap_or_default())
}

/// The PromQL selector of the rank series, for one job where asked.
fn selector(name: &str, job: Option<&str>) -> String {
    match job {
        Some(job) => format!(
            "{}{name}{{distributed_job=\"{}\"}}",
            crate::sink::export::exposition::PREFIX,
            job.replace('\\', "\\\\").replace('"', "\\\"")
        ),
        None => format!("{}{name}", crate::sink::export::exposition::PREFIX),
    }
}

/// The report of every job (or the one asked for) Prometheus has ranks of.
pub fn report(settings: &RanksSettings) -> Result<RanksReport> {
    let job = settings.job.as_deref();
    let info = query(settings, &selector("rank_info", job))?;
    let still = query(settings, &selector("rank_seconds_without_progress", job))?;
    let jobs = ranks_of(&info, &still)
        .into_iter()
        .map(|(job, ranks)| judge(&job, ranks))
        .collect();
    Ok(RanksReport {
        prometheus: settings.prometheus.clone(),
        jobs,
    })
}

/// The report in text.
pub fn text(report: &RanksReport, job: Option<&str>) -> String {
    let mut out = String::new();
    if report.jobs.is_empty() {
        let what = job.map_or_else(
            || "no ranks of a distributed job".to_string(),
            |job| format!("no ranks of distributed job {job:?}"),
        );
        out.push_str(&format!(
            "{what} in Prometheus at {}: is `tfwatch node --listen` running on the job's nodes, and scraped?\n",
            report.prometheus
        ));
        return out;
    }
    for job in &report.jobs {
        let world = job
            .world_size
            .map_or_else(String::new, |w| format!(", world size {w}"));
        out.push_str(&format!(
            "distributed job {}{world}: {}\n",
            job.job, job.summary
        ));
        for r in &job.ranks {
            let place = match (&r.collective, &r.call_site) {
                (Some(c), Some(site)) => format!("in {c} at {site}"),
                (Some(c), None) => format!("in {c}"),
                (None, Some(site)) => format!("{} at {site}", r.state),
                (None, None) => r.state.clone(),
            };
            let function = r
                .function
                .as_ref()
                .map_or_else(String::new, |f| format!(" in {f}"));
            let still = match r.seconds_without_progress {
                Some(s) if s > 0.0 => {
                    format!(", no progress for {}", crate::units::format_seconds(s))
                }
                _ => String::new(),
            };
            out.push_str(&format!(
                "  {}: {place}{function}{still}\n",
                r.label(job.world_size)
            ));
        }
        if !job.remedy.is_empty() {
            out.push_str(&format!("  remedy: {}\n", job.remedy));
        }
    }
    out
}

/// `tfwatch ranks`.
pub fn command(args: &RanksArgs) -> Result<u8> {
    let settings = RanksSettings::from_args(args)?;
    let report = report(&settings)?;
    let mut stdout = std::io::stdout().lock();
    if settings.json {
        serde_json::to_writer(&mut stdout, &report)?;
        stdout.write_all(b"\n")?;
    } else {
        stdout.write_all(
            crate::units::escape_controls(&text(&report, settings.job.as_deref()), true).as_bytes(),
        )?;
    }
    stdout.flush()?;
    Ok(super::exit::OK)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn info(
        instance: &str,
        rank: u32,
        pid: i32,
        state: &str,
        collective: &str,
        site: &str,
    ) -> serde_json::Value {
        json!({"metric": {
            "__name__": "tfwatch_rank_info", "instance": instance, "job": "tfwatch-node",
            "node": format!("node-{rank}"), "watched_job": "cgroup/x",
            "distributed_job": "10.0.0.1:29500", "rank": rank.to_string(), "local_rank": "0",
            "world_size": "2", "pid": pid.to_string(), "state": state,
            "collective": collective, "call_site": site, "function": "rank_main"
        }, "value": [1.0, "1"]})
    }

    fn still(instance: &str, rank: u32, pid: i32, seconds: f64) -> serde_json::Value {
        json!({"metric": {"instance": instance, "distributed_job": "10.0.0.1:29500",
            "rank": rank.to_string(), "pid": pid.to_string()}, "value": [1.0, seconds.to_string()]})
    }

    fn job(info: &[serde_json::Value], still: &[serde_json::Value]) -> JobRanks {
        let mut jobs = ranks_of(info, still);
        assert_eq!(jobs.len(), 1, "{jobs:#?}");
        let (name, ranks) = jobs.pop_first().unwrap();
        judge(&name, ranks)
    }

    #[test]
    fn ranks_in_different_collectives_on_two_hosts_are_a_mismatch_naming_each_host() {
        let j = job(
            &[
                info("a:9464", 0, 10, "collective", "all_reduce", "train.py:68"),
                info("b:9464", 1, 20, "collective", "barrier", "train.py:69"),
            ],
            &[still("a:9464", 0, 10, 40.0), still("b:9464", 1, 20, 39.0)],
        );
        assert_eq!(j.verdict, "collective-mismatch", "{j:#?}");
        assert!(
            j.summary.contains("rank 0/2 (pid 10) on a:9464 (node=node-0) in all_reduce at train.py:68 in rank_main")
                && j.summary.contains("rank 1/2 (pid 20) on b:9464 (node=node-1) in barrier at train.py:69"),
            "{}",
            j.summary
        );
        assert_eq!(j.ranks[0].seconds_without_progress, Some(40.0));
        assert_eq!(
            j.ranks[1].target.get("node").map(String::as_str),
            Some("node-1")
        );
        assert!(j.missing_ranks.is_empty());
        let shown = text(
            &RanksReport {
                prometheus: "http://p".to_string(),
                jobs: vec![j],
            },
            None,
        );
        assert!(shown.contains("rank 1/2 (pid 20) on b:9464 (node=node-1): in barrier at train.py:69 in rank_main, no progress for"), "{shown}");
    }

    #[test]
    fn a_missing_rank_a_straggler_the_same_collective_and_a_healthy_job_are_told_apart() {
        let missing = job(
            &[info("a:1", 0, 10, "collective", "all_reduce", "t.py:5")],
            &[],
        );
        assert_eq!(missing.verdict, "missing-rank");
        assert_eq!(missing.missing_ranks, vec![1]);
        assert!(missing.summary.contains("rank 1"), "{}", missing.summary);
        let straggler = job(
            &[
                info("a:1", 0, 10, "collective", "all_reduce", "t.py:5"),
                info("b:1", 1, 20, "blocked", "", "t.py:4"),
            ],
            &[],
        );
        assert_eq!(straggler.verdict, "straggler");
        assert!(
            straggler.summary.contains("rank 1/2 (pid 20) on b:1"),
            "{}",
            straggler.summary
        );
        let same = job(
            &[
                info("a:1", 0, 10, "collective", "all_reduce", "t.py:5"),
                info("b:1", 1, 20, "collective", "all_reduce", "t.py:5"),
            ],
            &[],
        );
        assert_eq!(same.verdict, "same-collective");
        let healthy = job(
            &[
                info("a:1", 0, 10, "computing", "", ""),
                info("b:1", 1, 20, "running", "", ""),
            ],
            &[],
        );
        assert_eq!(healthy.verdict, "progressing");
        assert!(healthy.remedy.is_empty());
    }

    #[test]
    fn a_url_that_is_no_prometheus_address_is_a_usage_error() {
        let args = |url: &str, timeout: u64| RanksArgs {
            prometheus: url.to_string(),
            job: None,
            json: false,
            timeout: Duration::from_millis(timeout),
        };
        for (url, timeout, says) in [
            ("https://p:9090", 1000, "only http://"),
            ("p:9090", 1000, "only http://"),
            ("http://", 1000, "no host"),
            ("http://p:9090/api?x", 1000, "without a query"),
            ("http://p:9090", 0, "--timeout"),
        ] {
            let err = RanksSettings::from_args(&args(url, timeout))
                .unwrap_err()
                .0
                .to_string();
            assert!(err.contains(says), "{url}: {err}");
        }
        let ok = RanksSettings::from_args(&args("http://127.0.0.1:9090/", 1000)).unwrap();
        assert_eq!(ok.prometheus, "http://127.0.0.1:9090");
        assert_eq!(
            selector("rank_info", Some("a\"b")),
            "tfwatch_rank_info{distributed_job=\"a\\\"b\"}"
        );
    }
}
