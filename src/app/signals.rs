//! SIGINT and SIGTERM (and, under `run`, SIGHUP and SIGQUIT) set a flag that the watch
//! loop checks, so every command ends cleanly (the terminal restored, reports written);
//! `run` passes the signal that arrived on to its command.

use std::sync::atomic::{AtomicBool, AtomicI32, Ordering};

static INTERRUPTED: AtomicBool = AtomicBool::new(false);
static SIGNAL: AtomicI32 = AtomicI32::new(0);

extern "C" fn on_signal(signal: libc::c_int) {
    SIGNAL.store(signal, Ordering::SeqCst);
    INTERRUPTED.store(true, Ordering::SeqCst);
}

fn catch(signals: &[nix::sys::signal::Signal]) {
    use nix::sys::signal::{SaFlags, SigAction, SigHandler, SigSet, sigaction};
    let action = SigAction::new(
        SigHandler::Handler(on_signal),
        SaFlags::empty(),
        SigSet::empty(),
    );
    for &signal in signals {
        // SAFETY: the handler only stores to atomics, which is async-signal-safe.
        let _ = unsafe { sigaction(signal, &action) };
    }
}

/// Makes SIGINT and SIGTERM set the flag [`interrupted`] reads.
pub fn catch_interrupts() {
    use nix::sys::signal::Signal;
    catch(&[Signal::SIGINT, Signal::SIGTERM]);
}

/// `run`: SIGINT, SIGTERM, SIGHUP and SIGQUIT set the flag; [`received`] says which
/// arrived, to be forwarded to the command as itself.
pub fn catch_forwarded() {
    use nix::sys::signal::Signal;
    catch(&[
        Signal::SIGINT,
        Signal::SIGTERM,
        Signal::SIGHUP,
        Signal::SIGQUIT,
    ]);
}

/// Whether a caught signal arrived.
pub fn interrupted() -> bool {
    INTERRUPTED.load(Ordering::SeqCst)
}

/// The last caught signal, if any.
pub fn received() -> Option<libc::c_int> {
    Some(SIGNAL.load(Ordering::SeqCst)).filter(|&s| s != 0)
}
