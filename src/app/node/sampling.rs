//! One job's sample, taken on a collection thread: each root of the job (a pid whose
//! parent is not in it) has a sampler that follows those of its descendants that are
//! the job's (a job nested in the tree is read by its own samplers only); their
//! samples are merged.

use std::collections::{BTreeMap, BTreeSet, HashSet};
use std::sync::Arc;
use std::time::Duration;

use crate::model::Sample;
use crate::model::jobs::JobLabels;
use crate::source::clock::Clock;
use crate::source::proc::{SampleTime, Sampler, SamplerConfig, SharedFdBudget};

/// A job's samplers, and its own budget of kept descriptors (a share of the
/// open-files limit), so that a sampler stuck in a read holds up no other job's.
pub struct JobSampling {
    samplers: BTreeMap<i32, Sampler>,
    budget: SharedFdBudget,
}

/// What a collection thread is given to sample one job once.
pub struct SampleTask {
    pub labels: JobLabels,
    /// The node's tick this sample serves.
    pub tick: u64,
    pub sampling: JobSampling,
    pub roots: BTreeSet<i32>,
    pub members: Arc<HashSet<i32>>,
    pub config: SamplerConfig,
    pub clock: Arc<dyn Clock>,
    /// When the sample was due, on the clock: its lateness counts from there.
    pub due: Duration,
}

/// What comes back: the samplers, and the sample where a root could be sampled.
pub struct SampleResult {
    pub labels: JobLabels,
    pub tick: u64,
    pub sampling: JobSampling,
    pub sample: Option<Sample>,
}

impl JobSampling {
    pub fn new(budget: SharedFdBudget) -> JobSampling {
        JobSampling {
            samplers: BTreeMap::new(),
            budget,
        }
    }
}

impl SampleTask {
    /// The roots of `pids` (those whose parent is not one of them), for a task.
    pub fn roots_of(pids: &[i32], parents: &BTreeMap<i32, i32>) -> BTreeSet<i32> {
        let members: HashSet<i32> = pids.iter().copied().collect();
        pids.iter()
            .copied()
            .filter(|pid| parents.get(pid).is_none_or(|ppid| !members.contains(ppid)))
            .collect()
    }

    /// Takes the sample (on a collection thread).
    pub fn run(self) -> SampleResult {
        let SampleTask {
            labels,
            tick,
            mut sampling,
            roots,
            members,
            config,
            clock,
            due,
        } = self;
        let lateness = clock.elapsed().saturating_sub(due).as_secs_f64();
        let at = SampleTime::on(&*clock, lateness);
        let sample = sample_job(&mut sampling, &roots, &members, &config, at);
        SampleResult {
            labels,
            tick,
            sampling,
            sample,
        }
    }
}

/// One sample of a job, merged over its roots' samplers; `None` when no root could be
/// sampled.
fn sample_job(
    job: &mut JobSampling,
    roots: &BTreeSet<i32>,
    members: &Arc<HashSet<i32>>,
    config: &SamplerConfig,
    at: SampleTime,
) -> Option<Sample> {
    job.samplers.retain(|root, _| roots.contains(root));
    for &root in roots {
        if !job.samplers.contains_key(&root)
            && let Ok(sampler) = Sampler::with_budget(root, config.clone(), Arc::clone(&job.budget))
        {
            job.samplers.insert(root, sampler);
        }
    }
    for sampler in job.samplers.values_mut() {
        sampler.set_members(Some(Arc::clone(members)));
    }
    let mut merged: Option<Sample> = None;
    let mut gone = Vec::new();
    for (&root, sampler) in &mut job.samplers {
        match sampler.sample(at) {
            Ok(sample) => match merged.as_mut() {
                None => merged = Some(sample),
                Some(into) => {
                    let known: BTreeSet<i32> = into.processes.iter().map(|p| p.pid).collect();
                    into.processes.extend(
                        sample
                            .processes
                            .into_iter()
                            .filter(|p| !known.contains(&p.pid)),
                    );
                    into.unavailable.extend(sample.unavailable);
                    into.cost.duration_seconds += sample.cost.duration_seconds;
                }
            },
            Err(_) => gone.push(root),
        }
    }
    for root in gone {
        job.samplers.remove(&root);
    }
    merged
}
