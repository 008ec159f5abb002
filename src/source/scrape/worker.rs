//! One endpoint scraped on its own thread, so that a slow, hung or huge endpoint never
//! holds up the caller: [`Background::request`] asks for a scrape and returns at once,
//! [`Background::status`] gives the newest finished result and when it finished.
//!
//! The thread scrapes only when asked (requests made while a scrape runs are folded into
//! one), each scrape bounded by the scraper's timeout and caps. It ends when the
//! [`Background`] is dropped, after the scrape under way, if any; it is never joined.

use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use super::Scraper;
use crate::model::AppMetrics;

/// How long the idle thread waits before it looks again whether its owner is gone.
const IDLE_WAIT: Duration = Duration::from_secs(1);

/// A finished scrape.
#[derive(Debug, Clone)]
pub struct Finished {
    pub metrics: AppMetrics,
    pub started: Instant,
    pub finished: Instant,
}

/// Where the endpoint's thread stands.
#[derive(Debug, Clone, Default)]
pub struct Status {
    /// The newest finished scrape.
    pub latest: Option<Finished>,
    /// When the scrape under way started, if one is.
    pub busy_since: Option<Instant>,
    /// When the first scrape was asked for.
    pub first_request: Option<Instant>,
}

#[derive(Default)]
struct State {
    /// Requests made, and the number the thread has taken up.
    requested: u64,
    taken: u64,
    stop: bool,
    status: Status,
}

struct Shared {
    state: Mutex<State>,
    wake: Condvar,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, State> {
        // A panic cannot happen while the lock is held (only plain assignments are
        // made under it); a poisoned lock is used as it is rather than panicking.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// One endpoint's scraper running on its own thread.
pub struct Background {
    url: String,
    shared: Arc<Shared>,
    _thread: JoinHandle<()>,
}

impl Background {
    /// Starts the thread (named after the endpoint). Fails only when no thread can be
    /// made.
    pub fn start(mut scraper: Scraper) -> std::io::Result<Background> {
        let url = scraper.url().to_string();
        let shared = Arc::new(Shared {
            state: Mutex::new(State::default()),
            wake: Condvar::new(),
        });
        let theirs = Arc::clone(&shared);
        let thread = std::thread::Builder::new()
            .name("tfwatch-scrape".to_string())
            .spawn(move || run(&theirs, &mut scraper))?;
        Ok(Background {
            url,
            shared,
            _thread: thread,
        })
    }

    pub fn url(&self) -> &str {
        &self.url
    }

    /// Asks for a scrape; never waits (a scrape under way is not interrupted, and the
    /// request is taken up when it ends).
    pub fn request(&self) {
        let mut state = self.shared.lock();
        state.requested = state.requested.wrapping_add(1);
        if state.status.first_request.is_none() {
            state.status.first_request = Some(Instant::now());
        }
        drop(state);
        self.shared.wake.notify_one();
    }

    /// The newest finished scrape and whether one is under way; never waits on I/O.
    pub fn status(&self) -> Status {
        self.shared.lock().status.clone()
    }
}

impl Drop for Background {
    fn drop(&mut self) {
        self.shared.lock().stop = true;
        self.shared.wake.notify_one();
    }
}

fn run(shared: &Arc<Shared>, scraper: &mut Scraper) {
    loop {
        let started = {
            let mut state = shared.lock();
            // Each wait is bounded, and the owner's end is noticed even without `stop`.
            while !state.stop && state.taken == state.requested {
                if Arc::strong_count(shared) == 1 {
                    return;
                }
                state = match shared.wake.wait_timeout(state, IDLE_WAIT) {
                    Ok((state, _)) => state,
                    Err(poisoned) => poisoned.into_inner().0,
                };
            }
            if state.stop {
                return;
            }
            state.taken = state.requested;
            let now = Instant::now();
            state.status.busy_since = Some(now);
            now
        };
        // Bounded by the scraper's timeout, body cap and series cap.
        let metrics = scraper.scrape();
        let mut state = shared.lock();
        state.status.busy_since = None;
        state.status.latest = Some(Finished {
            metrics,
            started,
            finished: Instant::now(),
        });
    }
}
