//! A bounded pool of collection threads: `tfwatch node` samples each job on one of them,
//! so a job whose `/proc` read blocks in the kernel holds up one thread and only its
//! own sample. The pool starts a few threads and grows, up to a bound, only when told
//! that threads are held up ([`Pool::grow_to`]); a stuck thread is never joined.

use std::sync::mpsc::{self, Receiver, RecvTimeoutError, Sender};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

type Task<T> = Box<dyn FnOnce() -> T + Send>;

/// What waiting for a finished task gave.
#[derive(Debug)]
pub enum Done<T> {
    Finished(T),
    /// Nothing finished before the deadline.
    Waiting,
}

/// Threads that run tasks and hand back their results, in the order they finish.
pub struct Pool<T: Send + 'static> {
    tasks: Sender<Task<T>>,
    queue: Arc<Mutex<Receiver<Task<T>>>>,
    done_tx: Sender<T>,
    done: Receiver<T>,
    name: String,
    threads: usize,
    max_threads: usize,
}

impl<T: Send + 'static> Pool<T> {
    /// A pool of `threads` threads (at least one), which may grow to `max_threads`.
    pub fn new(name: &str, threads: usize, max_threads: usize) -> Pool<T> {
        let (tasks, queue) = mpsc::channel();
        let (done_tx, done) = mpsc::channel();
        let mut pool = Pool {
            tasks,
            queue: Arc::new(Mutex::new(queue)),
            done_tx,
            done,
            name: name.to_string(),
            threads: 0,
            max_threads: max_threads.max(1),
        };
        pool.grow_to(threads.max(1));
        pool
    }

    /// Threads started so far.
    pub fn threads(&self) -> usize {
        self.threads
    }

    /// Most threads it may have.
    pub fn max_threads(&self) -> usize {
        self.max_threads
    }

    /// Starts threads until there are `threads` (at most the bound): called with the
    /// usual number plus those held up by a stuck task, so the others keep theirs.
    pub fn grow_to(&mut self, threads: usize) {
        while self.threads < threads.min(self.max_threads) {
            let queue = Arc::clone(&self.queue);
            let done = self.done_tx.clone();
            let started = std::thread::Builder::new()
                .name(format!("{}-{}", self.name, self.threads))
                .spawn(move || {
                    loop {
                        // The lock is held only while waiting for a task, never while
                        // running one.
                        let task = {
                            let queue = queue.lock().unwrap_or_else(PoisonError::into_inner);
                            queue.recv()
                        };
                        let Ok(task) = task else { return };
                        if done.send(task()).is_err() {
                            return;
                        }
                    }
                });
            if started.is_err() {
                // No more threads to be had: the ones there are do the work.
                self.max_threads = self.threads.max(1);
                return;
            }
            self.threads += 1;
        }
    }

    /// Queues a task for the next free thread.
    pub fn submit(&self, task: impl FnOnce() -> T + Send + 'static) {
        // The threads hold the receiver while the pool lives: sending cannot fail.
        let _ = self.tasks.send(Box::new(task));
    }

    /// Waits up to `timeout` for the next finished task.
    pub fn next(&self, timeout: Duration) -> Done<T> {
        match self.done.recv_timeout(timeout) {
            Ok(result) => Done::Finished(result),
            Err(RecvTimeoutError::Timeout | RecvTimeoutError::Disconnected) => Done::Waiting,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Instant;

    fn next_within(pool: &Pool<u32>, deadline: Duration) -> Option<u32> {
        let until = Instant::now() + deadline;
        while Instant::now() < until {
            if let Done::Finished(value) = pool.next(Duration::from_millis(50)) {
                return Some(value);
            }
        }
        None
    }

    #[test]
    fn a_stuck_task_holds_one_thread_and_the_others_run() {
        let mut pool: Pool<u32> = Pool::new("test-pool", 2, 3);
        let (release, stuck) = mpsc::channel::<()>();
        pool.submit(move || {
            let _ = stuck.recv();
            1
        });
        for value in 2..6 {
            pool.submit(move || value);
        }
        let mut got: Vec<u32> = (0..4)
            .map(|_| next_within(&pool, Duration::from_secs(10)).expect("a result"))
            .collect();
        got.sort_unstable();
        assert_eq!(got, [2, 3, 4, 5], "the free thread ran the rest");
        pool.grow_to(10);
        assert_eq!(pool.threads(), 3, "bounded");
        release.send(()).unwrap();
        assert_eq!(next_within(&pool, Duration::from_secs(10)), Some(1));
    }
}
