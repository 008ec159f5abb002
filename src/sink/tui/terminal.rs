//! Entering and leaving the dashboard's terminal mode. The terminal is restored on every
//! way out: the guard's `Drop` (q, Ctrl-C, target exit, an error) and a panic hook that
//! restores it before the panic message prints.

use std::io::{self, Stdout};
use std::sync::Once;
use std::sync::atomic::{AtomicBool, Ordering};

use crossterm::cursor::{Hide, Show};
use crossterm::execute;
use crossterm::terminal::{
    EnterAlternateScreen, LeaveAlternateScreen, disable_raw_mode, enable_raw_mode,
};
use ratatui::Terminal;
use ratatui::backend::CrosstermBackend;

/// Whether the terminal is in dashboard mode (raw, alternate screen) now.
static ACTIVE: AtomicBool = AtomicBool::new(false);
static PANIC_HOOK: Once = Once::new();

/// Holds the terminal in dashboard mode; dropping it restores the terminal.
pub struct TerminalGuard {
    _entered: (),
}

impl TerminalGuard {
    /// Switches to raw mode and the alternate screen, hides the cursor; returns the guard
    /// and the terminal to draw on.
    pub fn enter() -> io::Result<(TerminalGuard, Terminal<CrosstermBackend<Stdout>>)> {
        install_panic_hook();
        enable_raw_mode()?;
        ACTIVE.store(true, Ordering::SeqCst);
        // From here on a failure leaves through `restore`.
        let setup = (|| {
            execute!(io::stdout(), EnterAlternateScreen, Hide)?;
            Terminal::new(CrosstermBackend::new(io::stdout()))
        })();
        match setup {
            Ok(terminal) => Ok((TerminalGuard { _entered: () }, terminal)),
            Err(e) => {
                restore();
                Err(e)
            }
        }
    }
}

impl Drop for TerminalGuard {
    fn drop(&mut self) {
        restore();
    }
}

/// Leaves raw mode and the alternate screen and shows the cursor, once; later calls do
/// nothing. Errors are ignored: there is no better terminal to report them on.
pub fn restore() {
    if ACTIVE.swap(false, Ordering::SeqCst) {
        let _ = disable_raw_mode();
        let _ = execute!(io::stdout(), LeaveAlternateScreen, Show);
    }
}

/// Makes a panic restore the terminal before the default hook prints the message, so the
/// message lands on the normal screen and the shell is usable.
pub fn install_panic_hook() {
    PANIC_HOOK.call_once(|| {
        let previous = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            restore();
            previous(info);
        }));
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_panic_restores_the_terminal_before_unwinding() {
        install_panic_hook();
        // As if the dashboard were open (no terminal here: restoring only writes escapes).
        ACTIVE.store(true, Ordering::SeqCst);
        let result = std::panic::catch_unwind(|| panic!("a bug in a widget"));
        assert!(result.is_err());
        assert!(
            !ACTIVE.load(Ordering::SeqCst),
            "the panic hook restored the terminal"
        );
        // Restoring again (the guard's drop after the hook) does nothing.
        restore();
        assert!(!ACTIVE.load(Ordering::SeqCst));
    }
}
