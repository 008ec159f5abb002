//! The dashboard's state and its key handling: a pure function of the state and a key,
//! so every binding is tested without a terminal.

use crossterm::event::{KeyCode, KeyEvent, KeyEventKind, KeyModifiers};

/// The column the thread table is sorted by.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum SortKey {
    /// CPU %, busiest first.
    #[default]
    Cpu,
    /// Run-queue wait %, longest first.
    RunqueueWait,
    /// Involuntary context switches per second, most first.
    Switches,
    /// What the thread waits for (lock, io, input, …), then its name.
    State,
    /// Thread name.
    Name,
    /// Thread id, lowest first.
    Tid,
}

impl SortKey {
    /// The next key in the cycle `s` walks through.
    pub fn next(self) -> SortKey {
        match self {
            SortKey::Cpu => SortKey::RunqueueWait,
            SortKey::RunqueueWait => SortKey::Switches,
            SortKey::Switches => SortKey::State,
            SortKey::State => SortKey::Name,
            SortKey::Name => SortKey::Tid,
            SortKey::Tid => SortKey::Cpu,
        }
    }

    pub fn label(self) -> &'static str {
        match self {
            SortKey::Cpu => "CPU%",
            SortKey::RunqueueWait => "wait%",
            SortKey::Switches => "invol/s",
            SortKey::State => "state",
            SortKey::Name => "name",
            SortKey::Tid => "tid",
        }
    }
}

/// Everything the user can change; the data shown comes from the watch.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct AppState {
    /// Data frozen: samples are still judged, but the screen keeps the paused reading.
    pub paused: bool,
    pub sort: SortKey,
    /// Thread filter: a case-insensitive substring of name, tid, state or wait channel.
    pub filter: String,
    /// The filter is being typed (keys go to it).
    pub editing_filter: bool,
    /// Threads grouped by name.
    pub group_by_name: bool,
    /// Index of the process (in tree order) whose threads the table shows.
    pub selected_process: usize,
    /// Number of processes in the tree, for wrapping the selection.
    pub process_count: usize,
    pub show_help: bool,
    /// First thread row shown.
    pub scroll: usize,
}

/// What the loop does after a key.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    /// Nothing changed.
    None,
    /// The state changed: draw again.
    Redraw,
    /// Write the triage report to a file.
    Snapshot,
    Quit,
}

/// Rows a page key scrolls.
const PAGE: usize = 10;

/// Applies one key to the state.
pub fn handle_key(state: &mut AppState, key: KeyEvent) -> Action {
    if key.kind == KeyEventKind::Release {
        return Action::None;
    }
    if key.modifiers.contains(KeyModifiers::CONTROL) && key.code == KeyCode::Char('c') {
        return Action::Quit;
    }
    if state.editing_filter {
        return edit_filter(state, key);
    }
    if state.show_help {
        // Any key closes the overlay; q still quits.
        state.show_help = false;
        return match key.code {
            KeyCode::Char('q') => Action::Quit,
            _ => Action::Redraw,
        };
    }
    match key.code {
        KeyCode::Char('q') => Action::Quit,
        KeyCode::Char(' ') | KeyCode::Char('p') => {
            state.paused = !state.paused;
            Action::Redraw
        }
        KeyCode::Char('s') => {
            state.sort = state.sort.next();
            state.scroll = 0;
            Action::Redraw
        }
        KeyCode::Char('/') => {
            state.editing_filter = true;
            Action::Redraw
        }
        KeyCode::Esc if !state.filter.is_empty() => {
            state.filter.clear();
            state.scroll = 0;
            Action::Redraw
        }
        KeyCode::Char('g') => {
            state.group_by_name = !state.group_by_name;
            state.scroll = 0;
            Action::Redraw
        }
        KeyCode::Tab | KeyCode::Right => switch_process(state, 1),
        KeyCode::BackTab | KeyCode::Left => switch_process(state, -1),
        KeyCode::Down => scroll(state, 1),
        KeyCode::Up => scroll(state, -1),
        KeyCode::PageDown => scroll(state, PAGE as isize),
        KeyCode::PageUp => scroll(state, -(PAGE as isize)),
        KeyCode::Home => scroll(state, isize::MIN / 2),
        KeyCode::Char('w') => Action::Snapshot,
        KeyCode::Char('?') | KeyCode::F(1) => {
            state.show_help = true;
            Action::Redraw
        }
        _ => Action::None,
    }
}

fn edit_filter(state: &mut AppState, key: KeyEvent) -> Action {
    match key.code {
        KeyCode::Enter => state.editing_filter = false,
        KeyCode::Esc => {
            state.editing_filter = false;
            state.filter.clear();
        }
        KeyCode::Backspace => {
            state.filter.pop();
        }
        KeyCode::Char(c) => state.filter.push(c),
        _ => return Action::None,
    }
    state.scroll = 0;
    Action::Redraw
}

fn switch_process(state: &mut AppState, step: isize) -> Action {
    if state.process_count <= 1 {
        return Action::None;
    }
    let count = state.process_count as isize;
    let current = state.selected_process.min(state.process_count - 1) as isize;
    state.selected_process = (current + step).rem_euclid(count) as usize;
    state.scroll = 0;
    Action::Redraw
}

fn scroll(state: &mut AppState, step: isize) -> Action {
    let before = state.scroll;
    state.scroll = state.scroll.saturating_add_signed(step);
    if state.scroll == before {
        Action::None
    } else {
        Action::Redraw
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(code: KeyCode) -> KeyEvent {
        KeyEvent::new(code, KeyModifiers::NONE)
    }

    fn press(state: &mut AppState, keys: &str) -> Vec<Action> {
        keys.chars()
            .map(|c| handle_key(state, key(KeyCode::Char(c))))
            .collect()
    }

    #[test]
    fn quit_on_q_and_ctrl_c() {
        let mut state = AppState::default();
        assert_eq!(
            handle_key(&mut state, key(KeyCode::Char('q'))),
            Action::Quit
        );
        let ctrl_c = KeyEvent::new(KeyCode::Char('c'), KeyModifiers::CONTROL);
        assert_eq!(handle_key(&mut state, ctrl_c), Action::Quit);
        // Ctrl-C quits even while the filter is being typed.
        state.editing_filter = true;
        assert_eq!(handle_key(&mut state, ctrl_c), Action::Quit);
    }

    #[test]
    fn sort_cycles_through_every_key_and_back() {
        let mut state = AppState::default();
        let mut seen = vec![state.sort];
        for _ in 0..6 {
            assert_eq!(press(&mut state, "s"), [Action::Redraw]);
            seen.push(state.sort);
        }
        assert_eq!(
            seen,
            [
                SortKey::Cpu,
                SortKey::RunqueueWait,
                SortKey::Switches,
                SortKey::State,
                SortKey::Name,
                SortKey::Tid,
                SortKey::Cpu
            ]
        );
    }

    #[test]
    fn filter_is_typed_edited_confirmed_and_cleared() {
        let mut state = AppState::default();
        press(&mut state, "/");
        assert!(state.editing_filter);
        // While editing, letters are text, not commands: q does not quit, s does not sort.
        assert!(
            press(&mut state, "worqs")
                .iter()
                .all(|a| *a == Action::Redraw)
        );
        assert_eq!(state.filter, "worqs");
        assert_eq!(state.sort, SortKey::Cpu);
        handle_key(&mut state, key(KeyCode::Backspace));
        handle_key(&mut state, key(KeyCode::Backspace));
        handle_key(&mut state, key(KeyCode::Backspace));
        press(&mut state, "rk");
        assert_eq!(state.filter, "work");
        handle_key(&mut state, key(KeyCode::Enter));
        assert!(!state.editing_filter);
        assert_eq!(state.filter, "work", "Enter keeps the filter");
        // Esc outside editing clears it.
        assert_eq!(handle_key(&mut state, key(KeyCode::Esc)), Action::Redraw);
        assert_eq!(state.filter, "");
        // Esc while editing abandons it.
        press(&mut state, "/ab");
        handle_key(&mut state, key(KeyCode::Esc));
        assert!(!state.editing_filter);
        assert_eq!(state.filter, "");
    }

    #[test]
    fn group_toggles_and_resets_scroll() {
        let mut state = AppState {
            scroll: 7,
            ..AppState::default()
        };
        press(&mut state, "g");
        assert!(state.group_by_name);
        assert_eq!(state.scroll, 0);
        press(&mut state, "g");
        assert!(!state.group_by_name);
    }

    #[test]
    fn process_switch_wraps_both_ways() {
        let mut state = AppState {
            process_count: 3,
            ..AppState::default()
        };
        handle_key(&mut state, key(KeyCode::Tab));
        assert_eq!(state.selected_process, 1);
        handle_key(&mut state, key(KeyCode::Right));
        handle_key(&mut state, key(KeyCode::Right));
        assert_eq!(state.selected_process, 0, "wraps past the last");
        handle_key(&mut state, key(KeyCode::BackTab));
        assert_eq!(state.selected_process, 2, "wraps before the first");
        handle_key(&mut state, key(KeyCode::Left));
        assert_eq!(state.selected_process, 1);
        // One process: nothing to switch to.
        let mut single = AppState {
            process_count: 1,
            ..AppState::default()
        };
        assert_eq!(handle_key(&mut single, key(KeyCode::Tab)), Action::None);
        assert_eq!(single.selected_process, 0);
    }

    #[test]
    fn pause_toggles_on_space_and_p() {
        let mut state = AppState::default();
        press(&mut state, " ");
        assert!(state.paused);
        press(&mut state, "p");
        assert!(!state.paused);
    }

    #[test]
    fn help_opens_and_any_key_closes_it() {
        let mut state = AppState::default();
        press(&mut state, "?");
        assert!(state.show_help);
        assert_eq!(press(&mut state, "s"), [Action::Redraw]);
        assert!(!state.show_help);
        assert_eq!(
            state.sort,
            SortKey::Cpu,
            "the closing key does nothing else"
        );
    }

    #[test]
    fn scroll_stops_at_the_top_and_snapshot_is_an_action() {
        let mut state = AppState::default();
        assert_eq!(handle_key(&mut state, key(KeyCode::Up)), Action::None);
        handle_key(&mut state, key(KeyCode::PageDown));
        assert_eq!(state.scroll, PAGE);
        handle_key(&mut state, key(KeyCode::Home));
        assert_eq!(state.scroll, 0);
        assert_eq!(press(&mut state, "w"), [Action::Snapshot]);
    }
}
