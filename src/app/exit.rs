//! Exit codes, in one place (the README has the table). They follow coreutils
//! `timeout` where they overlap.

/// Success.
pub const OK: u8 = 0;
/// `run-workload --verify`: some run did not behave as expected.
pub const VERIFY_FAILED: u8 = 1;
/// Bad command-line usage (any [`crate::app::settings::UsageError`]); an invalid rules
/// file.
pub const USAGE: u8 = 2;
/// `run`: a finding or alert at or above `--fail-on` fired.
pub const RULE_GATE: u8 = 120;
/// `run`: the run was worse than `--baseline` beyond `--max-increase`.
pub const BASELINE_REGRESSION: u8 = 121;
/// `run`: a hang (no progress, a deadlock, a fork-inherited lock) was detected.
pub const HANG: u8 = 122;
/// `run`: the command ran past `--timeout`.
pub const TIMEOUT: u8 = 124;
/// tfwatch itself failed: also a pid to watch that does not exist (the command line is
/// right; the system is not as it expects).
pub const TFWATCH_FAILED: u8 = 125;
/// `run`: the command was found but could not be executed.
pub const CANNOT_EXECUTE: u8 = 126;
/// `run`: the command was not found.
pub const NOT_FOUND: u8 = 127;

/// A code that does not fit a byte is tfwatch's own failure.
pub fn from_i32(code: i32) -> u8 {
    u8::try_from(code).unwrap_or(TFWATCH_FAILED)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The table `--help` and the man page print names exactly these codes.
    #[test]
    fn the_help_table_matches_the_constants() {
        let constants = [
            OK,
            VERIFY_FAILED,
            USAGE,
            RULE_GATE,
            BASELINE_REGRESSION,
            HANG,
            TIMEOUT,
            TFWATCH_FAILED,
            CANNOT_EXECUTE,
            NOT_FOUND,
        ];
        let documented: Vec<u8> = crate::cli::manual::EXIT_CODES
            .iter()
            .map(|(code, _)| *code)
            .collect();
        assert_eq!(documented, constants);
    }
}
