//! Processes that are stuck, stopped, frozen, half-exited or hostile: what the reports
//! say about them, and that tfwatch itself never hangs on them.

use std::process::Command;
use std::time::Duration;

use crate::support::{ChildGuard, tfwatch_output, wait_for};

fn comm(pid: i32) -> String {
    std::fs::read_to_string(format!("/proc/{pid}/comm")).unwrap_or_default()
}

#[test]
fn escape_sequences_in_names_and_argv_are_escaped_in_text() {
    let hostile = "\x1b]0;pwn\x07\x1b[2J\r\u{9b}2J";
    let script = r#"
import ctypes, sys, threading
libc = ctypes.CDLL(None)
def named():
    libc.prctl(15, b"\x1b]0;thr\x07", 0, 0, 0)
    sys.stdin.read()
threading.Thread(target=named, daemon=True).start()
open("/proc/self/comm", "w").write("\x1b]0;pwn\x07")
print("ready", flush=True)
sys.stdin.read()
"#;
    let mut command = Command::new("python3");
    command
        .args(["-c", script, hostile])
        .stdin(std::process::Stdio::piped());
    let guard = ChildGuard::spawn(command);
    let pid = guard.pid();
    wait_for("the hostile name", Duration::from_secs(20), || {
        comm(pid).starts_with('\x1b').then_some(())
    });
    let out = tfwatch_output(&["snapshot", &pid.to_string(), "--window", "100ms"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8_lossy(&out.stdout);
    for raw in ['\x1b', '\x07', '\r', '\u{9b}'] {
        assert!(
            !text.contains(raw),
            "raw {raw:?} in the snapshot text:\n{text:?}"
        );
    }
    assert!(text.contains("\\x1b]0;pwn\\x07"), "{text}");
}
