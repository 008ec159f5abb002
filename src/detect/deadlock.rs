//! Proof of a deadlock: the wait-for graph of mutex owners across the whole tree.
//!
//! The sampler records, for each thread blocked in a futex wait, the lock it waits on
//! and — where the lock is a glibc `pthread_mutex_t` — the owner's tid
//! ([`crate::model::LockWait`]). Each waiter has at most one outgoing edge (waiter →
//! owner), so the graph is a set of chains, and a chain that returns to one of its
//! threads is a **cycle**: a deadlock, reported with certainty.
//!
//! - A cycle is a [`FindingKind::Deadlock`] (one per cycle). A thread relocking a
//!   non-recursive mutex it holds is a cycle of one.
//! - A chain that ends in a thread that is running, in I/O or asleep on something other
//!   than a mutex is not a deadlock: it becomes a [`LockNote`] ("lock chain"), shown in
//!   the snapshot report and as evidence on a `no-progress` finding of that process.
//! - Waiters whose lock records no owner (condition variables, semaphores, Python and
//!   Rust locks) are grouped by futex address into notes. In a CPython process with one
//!   thread running and several waiting on one address, the group is labelled "likely
//!   waiting for the GIL" — a heuristic, and the note says so.
//! - A private mutex whose owner is not a thread of the waiter's process, in a child
//!   of another watched process, was copied locked by `fork()`: a proven
//!   [`FindingKind::ForkInheritedLock`] ("lock inherited across fork, owner gone";
//!   confidence 1.0 when the owner is a thread of the parent, 0.9 when it is nowhere).
//!   The heuristic of `hang.rs` defers to it (see [`merge_fork_findings`]).

use std::collections::{BTreeMap, HashMap};

use crate::model::locks::{LockAnalysis, LockNote};
use crate::model::{
    Finding, FindingKind, LockWait, ProcessSample, Sample, Severity, Syscall, ThreadSample,
};

/// `FUTEX_PRIVATE_FLAG`: the futex is private to one process (not process-shared).
const FUTEX_PRIVATE_FLAG: u64 = 128;

struct Node<'a> {
    process: &'a ProcessSample,
    thread: &'a ThreadSample,
}

impl Node<'_> {
    fn label(&self, with_pid: bool) -> String {
        if with_pid {
            format!(
                "{} ({}, pid {})",
                self.thread.tid, self.thread.name, self.process.pid
            )
        } else {
            format!("{} ({})", self.thread.tid, self.thread.name)
        }
    }
}

/// waiter tid → (owner tid, mutex address)
type Edges = BTreeMap<i32, (i32, u64)>;

fn is_private(thread: &ThreadSample) -> bool {
    match &thread.syscall {
        Some(Syscall::InSyscall { args, .. }) => {
            args.get(1).is_some_and(|op| op & FUTEX_PRIVATE_FLAG != 0)
        }
        _ => true,
    }
}

fn owned_lock(thread: &ThreadSample) -> Option<(&LockWait, i32)> {
    let lock = thread.lock.as_ref()?;
    (lock.kind == LockWait::PTHREAD_MUTEX)
        .then_some(lock)
        .and_then(|l| l.owner_tid.map(|o| (l, o)))
}

/// Builds the wait-for graph of `sample` and reads what it proves.
pub fn analyse(sample: &Sample) -> LockAnalysis {
    // Runs on every sample of a watch: nothing to build when no thread waits on a lock.
    if !sample.threads().any(|(_, t)| t.lock.is_some()) {
        return LockAnalysis::default();
    }
    let nodes: HashMap<i32, Node> = sample
        .threads()
        .map(|(process, thread)| (thread.tid, Node { process, thread }))
        .collect();
    let mut analysis = LockAnalysis::default();
    let mut edges = Edges::new();
    // Inherited locks, by child pid: (waiter, owner, address).
    let mut inherited: BTreeMap<i32, Vec<(i32, i32, u64)>> = BTreeMap::new();

    for (process, thread) in sample.threads() {
        let Some((lock, owner)) = owned_lock(thread) else {
            continue;
        };
        let same_process = process.threads.iter().any(|t| t.tid == owner);
        if same_process || (!is_private(thread) && nodes.contains_key(&owner)) {
            edges.insert(thread.tid, (owner, lock.address));
        } else if is_private(thread) && sample.process(process.ppid).is_some() {
            inherited
                .entry(process.pid)
                .or_default()
                .push((thread.tid, owner, lock.address));
        } else {
            let text = if is_private(thread) {
                format!(
                    "thread {} ({}) waits for mutex {:#x} held by tid {owner}, which is not a thread of the process (it exited holding the lock?)",
                    thread.tid, thread.name, lock.address
                )
            } else {
                format!(
                    "thread {} ({}) waits for process-shared mutex {:#x} held by tid {owner}, outside the watched tree",
                    thread.tid, thread.name, lock.address
                )
            };
            analysis.notes.push(LockNote {
                pid: process.pid,
                kind: crate::model::locks::LockNoteKind::OwnerGone,
                text,
                tids: vec![thread.tid],
            });
        }
    }

    let cycles = find_cycles(&edges);
    let mut in_cycle: HashMap<i32, usize> = HashMap::new();
    for (index, cycle) in cycles.iter().enumerate() {
        for &tid in cycle {
            in_cycle.insert(tid, index);
        }
    }
    let mut behind: Vec<Vec<i32>> = vec![Vec::new(); cycles.len()];
    let mut chains: BTreeMap<(i32, u64), Vec<i32>> = BTreeMap::new();
    let owners: Vec<i32> = edges.values().map(|(owner, _)| *owner).collect();
    for (&waiter, &(owner, address)) in &edges {
        if in_cycle.contains_key(&waiter) {
            continue;
        }
        let mid_chain = owners.contains(&waiter);
        let end = chain_end(&edges, waiter);
        if mid_chain && !in_cycle.contains_key(&end) {
            // Described by the chain of the threads that wait for it.
            continue;
        }
        match in_cycle.get(&end) {
            Some(&index) => behind[index].push(waiter),
            None => chains.entry((owner, address)).or_default().push(waiter),
        }
    }
    for (cycle, blocked_behind) in cycles.iter().zip(&behind) {
        if let Some(finding) = deadlock_finding(cycle, blocked_behind, &edges, &nodes) {
            analysis.deadlocks.push(finding);
        } else if let Some(node) = cycle.first().and_then(|t| nodes.get(t)) {
            analysis.notes.push(LockNote {
                pid: node.process.pid,
                kind: crate::model::locks::LockNoteKind::LockChain,
                text: format!(
                    "threads {} form a lock cycle in the memory read, but one of them is running now: not confirmed",
                    join_tids(cycle)
                ),
                tids: cycle.clone(),
            });
        }
    }
    for ((owner, address), waiters) in chains {
        analysis
            .notes
            .extend(chain_note(owner, address, &waiters, &edges, &nodes));
    }
    for (child_pid, waits) in inherited {
        if let Some(child) = sample.process(child_pid) {
            analysis
                .fork_inherited
                .push(fork_finding(sample, child, &waits));
        }
    }
    analysis.notes.extend(unknown_owner_notes(sample));
    analysis
}

/// Each cycle once, rotated to start at its smallest tid.
fn find_cycles(edges: &Edges) -> Vec<Vec<i32>> {
    // 1: on the current walk, 2: done.
    let mut state: HashMap<i32, u8> = HashMap::new();
    let mut cycles = Vec::new();
    for &start in edges.keys() {
        if state.contains_key(&start) {
            continue;
        }
        let mut path = Vec::new();
        let mut current = start;
        loop {
            match state.get(&current) {
                None => {
                    state.insert(current, 1);
                    path.push(current);
                    match edges.get(&current) {
                        Some(&(next, _)) => current = next,
                        None => break,
                    }
                }
                Some(1) => {
                    if let Some(pos) = path.iter().position(|&t| t == current) {
                        let mut cycle = path[pos..].to_vec();
                        if let Some(min) = cycle.iter().enumerate().min_by_key(|(_, t)| **t) {
                            let at = min.0;
                            cycle.rotate_left(at);
                        }
                        cycles.push(cycle);
                    }
                    break;
                }
                Some(_) => break,
            }
        }
        for tid in path {
            state.insert(tid, 2);
        }
    }
    cycles
}

/// The last thread of the chain starting at `waiter` (a thread with no outgoing edge,
/// or the first thread seen twice).
fn chain_end(edges: &Edges, waiter: i32) -> i32 {
    let mut current = waiter;
    let mut steps = 0;
    while let Some(&(next, _)) = edges.get(&current) {
        current = next;
        steps += 1;
        if steps > edges.len() {
            break;
        }
    }
    current
}

fn join_tids(tids: &[i32]) -> String {
    tids.iter()
        .map(i32::to_string)
        .collect::<Vec<_>>()
        .join(", ")
}

fn deadlock_finding(
    cycle: &[i32],
    blocked_behind: &[i32],
    edges: &Edges,
    nodes: &HashMap<i32, Node>,
) -> Option<Finding> {
    let members: Vec<&Node> = cycle.iter().filter_map(|t| nodes.get(t)).collect();
    if members.len() != cycle.len() || members.iter().any(|n| n.thread.state == 'R') {
        return None;
    }
    let mut pids: Vec<i32> = members.iter().map(|n| n.process.pid).collect();
    pids.sort_unstable();
    pids.dedup();
    let cross = pids.len() > 1;
    let first = members[0];
    let summary = if cycle.len() == 1 {
        let (_, address) = edges.get(&cycle[0])?;
        format!(
            "thread {} waits for mutex {address:#x} that it holds itself (a non-recursive mutex locked twice): a cycle of one",
            first.label(cross)
        )
    } else {
        let mut text = format!("thread {}", first.label(cross));
        for (i, tid) in cycle.iter().enumerate() {
            let (owner, address) = edges.get(tid)?;
            let owner_label = nodes.get(owner)?.label(cross);
            if i == 0 {
                text.push_str(&format!(
                    " waits for mutex {address:#x} held by {owner_label}"
                ));
            } else if i + 1 == cycle.len() {
                text.push_str(&format!(
                    ", which waits for mutex {address:#x} held by {}",
                    nodes.get(owner)?.thread.tid
                ));
            } else {
                text.push_str(&format!(
                    ", which waits for mutex {address:#x} held by {owner_label}"
                ));
            }
        }
        format!("{text}: a lock cycle of {} threads", cycle.len())
    };
    let mut finding = Finding::new(FindingKind::Deadlock, Severity::Error, summary);
    finding.confidence = 1.0;
    for tid in cycle {
        let (owner, address) = edges.get(tid)?;
        let waiter = nodes.get(tid)?;
        let holder = nodes.get(owner)?;
        let shared = if is_private(waiter.thread) {
            ""
        } else {
            "process-shared "
        };
        finding.evidence.push(format!(
            "thread {} waits for {shared}mutex {address:#x} (pid {}); its owner recorded in the mutex is thread {}",
            waiter.label(false),
            waiter.process.pid,
            holder.label(cross)
        ));
    }
    if !blocked_behind.is_empty() {
        finding.evidence.push(format!(
            "also blocked behind the cycle: thread(s) {}",
            join_tids(blocked_behind)
        ));
    }
    let frozen = cycle.iter().find_map(|tid| {
        nodes
            .get(tid)?
            .thread
            .wchan
            .as_deref()
            .filter(|w| crate::model::waits::is_freezer_wait(w))
    });
    finding.evidence.push(match frozen {
        Some(wchan) => format!(
            "owners read from the glibc pthread_mutex_t words in the processes' memory (process_vm_readv); the threads of the cycle are in futex calls, {} now",
            crate::model::waits::frozen_wait(wchan).replace("its cgroup", "their cgroup")
        ),
        None => "owners read from the glibc pthread_mutex_t words in the processes' memory (process_vm_readv); every thread of the cycle is asleep in a futex wait".to_string(),
    });
    finding
        .metrics
        .insert("cycle_length".into(), cycle.len() as f64);
    finding
        .metrics
        .insert("blocked_behind".into(), blocked_behind.len() as f64);
    finding.pids = pids;
    finding.tids = cycle.to_vec();
    finding.tids.extend(blocked_behind);
    finding.remedy = format!(
        "Take the locks in one global order everywhere (or all at once: std::lock / std::scoped_lock in C++), or use try-lock with back-off. The stacks show where each lock is taken: `tfwatch snapshot {} --stacks`.",
        first.process.pid
    );
    Some(finding)
}

fn thread_activity(node: &Node) -> String {
    let t = node.thread;
    match t.state {
        'R' => "which is running".to_string(),
        'D' if t
            .wchan
            .as_deref()
            .is_some_and(crate::model::waits::is_freezer_wait) =>
        {
            format!(
                "which is {}",
                crate::model::waits::frozen_wait(t.wchan.as_deref().unwrap_or("?"))
            )
        }
        'D' => format!(
            "which is in uninterruptible I/O{}",
            t.wchan
                .as_deref()
                .map(|w| format!(" ({w})"))
                .unwrap_or_default()
        ),
        _ => format!(
            "which is asleep in {}",
            t.wait_name().unwrap_or("a wait that is not on a mutex")
        ),
    }
}

fn chain_note(
    owner: i32,
    address: u64,
    waiters: &[i32],
    edges: &Edges,
    nodes: &HashMap<i32, Node>,
) -> Option<LockNote> {
    let first = nodes.get(waiters.first()?)?;
    let holder = nodes.get(&owner)?;
    let cross = first.process.pid != holder.process.pid;
    let who = if waiters.len() == 1 {
        format!("thread {}", first.label(cross))
    } else {
        format!("{} threads ({})", waiters.len(), join_tids(waiters))
    };
    let mut text = format!(
        "lock chain: {who} wait{} for mutex {address:#x} held by {}",
        if waiters.len() == 1 { "s" } else { "" },
        holder.label(cross)
    );
    let mut current = owner;
    let mut tids = waiters.to_vec();
    tids.push(owner);
    let mut steps = 0;
    while let Some(&(next, next_address)) = edges.get(&current) {
        let next_node = nodes.get(&next)?;
        text.push_str(&format!(
            ", which waits for mutex {next_address:#x} held by {}",
            next_node.label(cross)
        ));
        tids.push(next);
        current = next;
        steps += 1;
        if steps > edges.len() {
            break;
        }
    }
    let end = nodes.get(&current)?;
    text.push_str(&format!(", {} (not a deadlock)", thread_activity(end)));
    Some(LockNote {
        pid: first.process.pid,
        kind: crate::model::locks::LockNoteKind::LockChain,
        text,
        tids,
    })
}

/// The GIL heuristic: in a CPython process, the largest set of waiters on one condition
/// variable (glibc's two signal words lie 4 bytes apart) while threads run. CPython's
/// GIL is a mutex and a condition variable; its waiters sleep on the latter.
fn gil_candidates<'a>(waiters: &[&'a ThreadSample]) -> Vec<&'a ThreadSample> {
    let mut sorted: Vec<&ThreadSample> = waiters.to_vec();
    sorted.sort_by_key(|t| t.lock.as_ref().map_or(0, |l| l.address));
    let mut best: Vec<&ThreadSample> = Vec::new();
    let mut cluster: Vec<&ThreadSample> = Vec::new();
    let mut cluster_start = 0u64;
    for thread in sorted {
        let address = thread.lock.as_ref().map_or(0, |l| l.address);
        if cluster.is_empty() || address.saturating_sub(cluster_start) > 4 {
            if cluster.len() > best.len() {
                best = std::mem::take(&mut cluster);
            }
            cluster.clear();
            cluster_start = address;
        }
        cluster.push(thread);
    }
    if cluster.len() > best.len() {
        best = cluster;
    }
    best
}

fn unknown_owner_notes(sample: &Sample) -> Vec<LockNote> {
    let mut notes = Vec::new();
    for process in &sample.processes {
        let mut waiters: Vec<&ThreadSample> = process
            .threads
            .iter()
            .filter(|t| t.state != 'R' && t.lock.as_ref().is_some_and(|l| l.owner_tid.is_none()))
            .collect();
        let running: Vec<&ThreadSample> =
            process.threads.iter().filter(|t| t.state == 'R').collect();
        if process.is_cpython() && !running.is_empty() {
            let gil = gil_candidates(&waiters);
            if gil.len() >= 2 {
                let address = gil[0].lock.as_ref().map_or(0, |l| l.address);
                let runners: Vec<String> = running
                    .iter()
                    .map(|t| format!("{} {}", t.tid, t.name))
                    .collect();
                notes.push(LockNote {
                    pid: process.pid,
                    kind: crate::model::locks::LockNoteKind::GilHeuristic,
                    text: format!(
                        "likely the GIL (heuristic: CPython loaded, {} thread(s) running while {} wait on one condition variable at {address:#x}): {} thread{} computing ({}), {} waiting for the GIL",
                        running.len(),
                        gil.len(),
                        running.len(),
                        if running.len() == 1 { "" } else { "s" },
                        runners.join(", "),
                        gil.len()
                    ),
                    tids: gil.iter().map(|t| t.tid).collect(),
                });
                waiters.retain(|t| !gil.iter().any(|g| g.tid == t.tid));
            }
        }
        let mut groups: BTreeMap<u64, Vec<&ThreadSample>> = BTreeMap::new();
        for thread in waiters {
            if let Some(lock) = &thread.lock {
                groups.entry(lock.address).or_default().push(thread);
            }
        }
        for (address, waiters) in groups {
            if waiters.len() < 2 {
                continue;
            }
            let tids: Vec<i32> = waiters.iter().map(|t| t.tid).collect();
            let kinds: Vec<crate::model::LockKind> = waiters
                .iter()
                .filter_map(|t| t.lock.as_ref().map(|l| l.kind))
                .collect();
            let what = if kinds.iter().all(|k| *k == LockWait::PTHREAD_MUTEX) {
                "a mutex that records no owner now"
            } else {
                "a lock that records no owner: a condition variable, a semaphore, or a Python or Rust lock"
            };
            notes.push(LockNote {
                pid: process.pid,
                kind: crate::model::locks::LockNoteKind::UnknownOwner,
                text: format!(
                    "{} threads wait on one address {address:#x} whose holder is unknown ({what}): {}",
                    waiters.len(),
                    join_tids(&tids)
                ),
                tids,
            });
        }
    }
    notes
}

fn fork_finding(sample: &Sample, child: &ProcessSample, waits: &[(i32, i32, u64)]) -> Finding {
    let parent = sample.process(child.ppid);
    let (waiter, owner, address) = waits[0];
    let owner_in_parent = parent.and_then(|p| p.threads.iter().find(|t| t.tid == owner));
    let whereabouts = match (parent, owner_in_parent) {
        (Some(p), Some(t)) => format!(
            "; tid {owner} is thread {} of the parent pid {} ({})",
            t.name, p.pid, p.comm
        ),
        (Some(p), None) => format!(
            "; it is not a thread of the parent pid {} ({}) now either",
            p.pid, p.comm
        ),
        (None, _) => String::new(),
    };
    let mut finding = Finding::new(
        FindingKind::ForkInheritedLock,
        Severity::Error,
        format!(
            "pid {}: lock inherited across fork, owner gone — thread {waiter} waits for mutex {address:#x} held by tid {owner}, which does not exist in the child{whereabouts}",
            child.pid
        ),
    );
    // Owner in the parent: the fork copied the lock held. Owner nowhere: the child is
    // certainly stuck, but the owner may also have been a thread of the child that
    // exited holding the lock.
    finding.confidence = if owner_in_parent.is_some() { 1.0 } else { 0.9 };
    for &(waiter, owner, address) in waits {
        finding.evidence.push(format!(
            "thread {waiter} of pid {} waits for private mutex {address:#x}; the mutex records owner tid {owner}, not a thread of pid {} (threads: {})",
            child.pid,
            child.pid,
            join_tids(&child.threads.iter().map(|t| t.tid).collect::<Vec<_>>())
        ));
    }
    if let (Some(p), Some(t)) = (parent, owner_in_parent) {
        finding.evidence.push(format!(
            "tid {owner} ({}) lives in the parent pid {} (state {}): it held the lock when the parent forked, and fork copies only the calling thread",
            t.name, p.pid, t.state
        ));
    }
    finding.pids = vec![child.pid];
    if let Some(p) = parent {
        finding.pids.push(p.pid);
    }
    finding.tids = waits.iter().map(|w| w.0).collect();
    finding.metrics.insert("owner_tid".into(), f64::from(owner));
    finding
        .metrics
        .insert("child_threads".into(), child.threads.len() as f64);
    finding.remedy = super::hang::FORK_REMEDY.to_string();
    finding
}

/// One `fork-inherited-lock` finding per child: a proven one absorbs the heuristic's
/// evidence and metrics for the same child; heuristic ones for other children stay.
pub fn merge_fork_findings(proven: Vec<Finding>, heuristic: Vec<Finding>) -> Vec<Finding> {
    let mut merged = proven;
    for guess in heuristic {
        let child = guess.pids.first().copied();
        match merged.iter_mut().find(|f| f.pids.first().copied() == child) {
            Some(finding) => {
                for line in guess.evidence {
                    if !finding.evidence.contains(&line) {
                        finding.evidence.push(line);
                    }
                }
                for (key, value) in guess.metrics {
                    finding.metrics.entry(key).or_insert(value);
                }
            }
            None => merged.push(guess),
        }
    }
    merged
}

#[cfg(test)]
mod tests;
