//! The live dashboard end to end: the real binary under tmux against the reference
//! deadlock workload — it opens, shows the hang, sorts, filters, and quits with the
//! terminal restored. Skips (saying why) where tmux is not installed, and fails there
//! where `TFWATCH_REQUIRE` names `tmux`.

use std::process::{Command, Output};
use std::time::Duration;

use crate::support::{ChildGuard, Lines, snapshot_json, tfwatch, tfwatch_bin, wait_for};

/// A tmux server of our own (its own socket), killed with everything in it on drop.
struct Tmux {
    socket: String,
}

impl Tmux {
    fn run(&self, args: &[&str]) -> Output {
        Command::new("tmux")
            .arg("-L")
            .arg(&self.socket)
            .args(args)
            .output()
            .expect("tmux runs")
    }

    /// Starts the session `main` of `width` × `height` running `command` (in `dir`
    /// where given); asserts that tmux started it.
    fn start(&self, width: u16, height: u16, dir: Option<&str>, command: &str) {
        let (width, height) = (width.to_string(), height.to_string());
        let mut args = vec![
            "new-session",
            "-d",
            "-s",
            "main",
            "-x",
            &width,
            "-y",
            &height,
        ];
        if let Some(dir) = dir {
            args.extend(["-c", dir]);
        }
        args.push(command);
        let started = self.run(&args);
        assert!(started.status.success(), "tmux starts: {started:?}");
    }

    fn capture(&self) -> String {
        String::from_utf8_lossy(&self.run(&["capture-pane", "-p", "-t", "main"]).stdout)
            .into_owned()
    }

    fn send(&self, keys: &[&str]) {
        let mut args = vec!["send-keys", "-t", "main"];
        args.extend_from_slice(keys);
        assert!(self.run(&args).status.success(), "send-keys {keys:?}");
    }

    fn alternate_on(&self) -> String {
        let out = self.run(&["display-message", "-p", "-t", "main", "#{alternate_on}"]);
        String::from_utf8_lossy(&out.stdout).trim().to_string()
    }

    /// Waits until the screen satisfies `check`; returns that screen.
    fn wait_screen(&self, what: &str, check: impl Fn(&str) -> bool) -> String {
        let mut last = String::new();
        let found = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            wait_for(what, Duration::from_secs(60), || {
                let screen = self.capture();
                let ok = check(&screen);
                last = screen.clone();
                ok.then_some(screen)
            })
        }));
        match found {
            Ok(screen) => screen,
            Err(_) => panic!("timed out waiting for {what}; the screen was:\n{last}"),
        }
    }
}

impl Drop for Tmux {
    fn drop(&mut self) {
        let _ = self.run(&["kill-server"]);
    }
}

/// Whether tmux runs here; says why the test is skipped when not.
fn tmux_installed() -> bool {
    let ok = Command::new("tmux")
        .arg("-V")
        .output()
        .is_ok_and(|o| o.status.success());
    if !ok {
        crate::support::skip("tmux", "tmux is not installed (apt-get install tmux)");
    }
    ok
}

/// A directory removed on drop.
struct TempDir(std::path::PathBuf);

impl TempDir {
    fn new(name: &str) -> TempDir {
        let path = std::env::temp_dir().join(name);
        let _ = std::fs::remove_dir_all(&path);
        std::fs::create_dir_all(&path).expect("a temporary directory");
        TempDir(path)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// (tid, name) of the thread table's rows on a captured screen, in order.
fn thread_rows(screen: &str) -> Vec<(i32, String)> {
    screen
        .lines()
        .skip_while(|l| !l.contains("threads of pid"))
        .skip(2)
        .take_while(|l| !l.starts_with('└'))
        .filter_map(|line| {
            let table = line.trim_start_matches('│').split('│').next()?;
            let mut fields = table.split_whitespace();
            let tid = fields.next()?.parse().ok()?;
            Some((tid, fields.next()?.to_string()))
        })
        .collect()
}

#[test]
fn dashboard_shows_the_hang_sorts_filters_and_restores_the_terminal() {
    if !tmux_installed() {
        return;
    }
    let workload = ChildGuard::spawn(tfwatch(&[
        "run-workload",
        "--scenario",
        "deadlock",
        "--duration",
        "60s",
    ]));
    let pid = workload.pid();
    let tmux = Tmux {
        socket: format!("tfwatch-test-{}", std::process::id()),
    };
    let command = format!(
        "{} attach {pid} --hang-after 3s; echo TFWATCH-EXIT=$?; sleep 120",
        tfwatch_bin().display()
    );
    // The pane starts in a directory of its own, where `w` writes its snapshot.
    let dir = TempDir::new(&format!("tfwatch-tui-test-{}", std::process::id()));
    let dir_arg = dir.0.display().to_string();
    tmux.start(160, 50, Some(&dir_arg), &command);

    // The hang: `no-progress` now, `deadlock` once mutex owners are read.
    let screen = tmux.wait_screen("the hang finding", |s| {
        s.contains("ERROR") && (s.contains("no-progress") || s.contains("deadlock"))
    });
    assert!(screen.contains(&format!("pid {pid}")), "{screen}");
    assert!(screen.contains("sort CPU%"), "{screen}");
    assert_eq!(
        tmux.alternate_on(),
        "1",
        "the dashboard uses the alternate screen"
    );

    // s cycles CPU% → wait% → invol/s → state → name.
    tmux.send(&["s"]);
    tmux.wait_screen("sort by wait%", |s| s.contains("sort wait%"));
    tmux.send(&["s", "s", "s"]);
    let by_name = tmux.wait_screen("sort by name", |s| {
        s.contains("sort name") && thread_rows(s).len() >= 3
    });
    let names: Vec<String> = thread_rows(&by_name).into_iter().map(|r| r.1).collect();
    let mut sorted = names.clone();
    sorted.sort();
    assert_eq!(names, sorted, "rows sorted by name:\n{by_name}");
    assert!(names.iter().any(|n| n == "worker-a"), "{by_name}");

    // `/worker` Enter: only the two workers of the lock cycle remain.
    tmux.send(&["/"]);
    tmux.send(&["-l", "worker"]);
    tmux.send(&["Enter"]);
    let filtered = tmux.wait_screen("the filter", |s| {
        s.contains("filter \"worker\"") && thread_rows(s).iter().all(|r| r.1.contains("worker"))
    });
    let rows = thread_rows(&filtered);
    assert_eq!(
        rows.iter().map(|r| r.1.as_str()).collect::<Vec<_>>(),
        ["worker-a", "worker-b"],
        "{filtered}"
    );

    // w writes the triage report here and says where.
    tmux.send(&["w"]);
    let written = tmux.wait_screen("the snapshot message", |s| {
        s.contains("snapshot written to") || s.contains("snapshot failed")
    });
    assert!(written.contains("snapshot written to"), "{written}");
    let reports: Vec<_> = std::fs::read_dir(&dir.0)
        .expect("the pane's directory lists")
        .filter_map(|e| e.ok())
        .map(|e| e.path())
        .filter(|p| {
            p.file_name().is_some_and(|n| {
                let n = n.to_string_lossy();
                n.starts_with(&format!("tfwatch-snapshot-{pid}-")) && n.ends_with(".txt")
            })
        })
        .collect();
    assert_eq!(reports.len(), 1, "one snapshot file: {reports:?}");
    let report = std::fs::read_to_string(&reports[0]).expect("the snapshot reads");
    assert!(report.contains("worker-a"), "{report}");

    tmux.send(&["q"]);
    let after = tmux.wait_screen("tfwatch to exit", |s| s.contains("TFWATCH-EXIT="));
    assert!(after.contains("TFWATCH-EXIT=0"), "{after}");
    assert!(
        after.contains(&format!("tfwatch attach {pid}: stopped watching")),
        "{after}"
    );
    assert!(
        !after.contains("threads of pid"),
        "the dashboard is gone:\n{after}"
    );
    assert_eq!(
        tmux.alternate_on(),
        "0",
        "the terminal left the alternate screen"
    );
    drop(workload);
}

#[test]
fn target_exit_keeps_the_last_reading_and_ctrl_c_restores_the_terminal() {
    if !tmux_installed() {
        return;
    }
    // Under a shell that reaps it, so it really goes (a child of this test would stay a
    // zombie until the guard reaps it); the guard ends the shell's whole group.
    let mut shell = Command::new("sh");
    shell.arg("-c").arg(format!(
        "{} run-workload --scenario healthy --duration 3s >/dev/null 2>&1 & echo $!; wait",
        tfwatch_bin().display()
    ));
    let mut workload = ChildGuard::spawn(shell);
    let mut line = String::new();
    std::io::BufRead::read_line(
        &mut std::io::BufReader::new(workload.child.stdout.take().expect("piped stdout")),
        &mut line,
    )
    .expect("the shell prints the workload's pid");
    let pid: i32 = line.trim().parse().expect("a pid");
    let tmux = Tmux {
        socket: format!("tfwatch-test-exit-{}", std::process::id()),
    };
    let command = format!(
        "{} attach {pid}; echo TFWATCH-EXIT=$?; sleep 120",
        tfwatch_bin().display()
    );
    tmux.start(120, 40, None, &command);
    let last = tmux.wait_screen("the exit message", |s| {
        s.contains(&format!("process {pid} exited; the last reading stays"))
    });
    assert!(last.contains(&format!("pid {pid}")), "{last}");
    assert!(
        last.contains("threads of pid"),
        "the last reading is shown:\n{last}"
    );
    assert_eq!(
        tmux.alternate_on(),
        "1",
        "still on the dashboard after the exit"
    );

    tmux.send(&["C-c"]);
    let after = tmux.wait_screen("tfwatch to exit", |s| s.contains("TFWATCH-EXIT="));
    assert!(after.contains("TFWATCH-EXIT=0"), "{after}");
    assert!(
        after.contains(&format!("tfwatch attach {pid}: process {pid} exited")),
        "{after}"
    );
    assert_eq!(
        tmux.alternate_on(),
        "0",
        "the terminal left the alternate screen"
    );
    drop(workload);
}

#[test]
fn dashboard_explains_a_python_lock_cycle_from_its_stacks() {
    if !tmux_installed() {
        return;
    }
    if Command::new("python3").arg("--version").output().is_err() {
        crate::support::skip("python3", "no python3 on this machine");
        return;
    }
    let script = std::path::PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("tui_abba.py");
    std::fs::write(&script, crate::explain::PYTHON_ABBA).expect("the script is written");
    let mut python = Command::new("python3");
    python.arg(&script).arg("rlock");
    let mut program = ChildGuard::spawn(python);
    let lines = Lines::new(program.child.stdout.take().expect("piped stdout"));
    lines.until("started", Duration::from_secs(10), |l| l == "started");
    let pid = program.pid();
    // Stacks need ptrace access and the unwinders built in: skip, saying why, without.
    let report = snapshot_json(pid, "100ms", &["--stacks", "--no-gpu"]);
    let missing = report["stacks"]["unavailable"].to_string();
    if let Some(lack) = crate::support::stacks_missing(&missing) {
        crate::support::skip(lack, missing);
        return;
    }
    let tmux = Tmux {
        socket: format!("tfwatch-test-explain-{}", std::process::id()),
    };
    let command = format!(
        "{} attach {pid} --hang-after 3s; echo TFWATCH-EXIT=$?; sleep 120",
        tfwatch_bin().display()
    );
    tmux.start(160, 50, None, &command);
    // The hang, explained live from the stacks attach takes on it.
    let screen = tmux.wait_screen("the explained hang", |s| {
        s.contains(&format!("from its stacks (pid {pid} paused "))
            && s.contains("waits on Python RLock `second`")
    });
    assert!(screen.contains("a proven Python lock-order"), "{screen}");
    // Each worker waits on its own `second` (the other's `first`): one line each.
    assert_eq!(
        screen.matches("waits on Python RLock `second`").count(),
        2,
        "both waits, one line each:\n{screen}"
    );
    tmux.send(&["q"]);
    let after = tmux.wait_screen("tfwatch to exit", |s| s.contains("TFWATCH-EXIT="));
    assert!(after.contains("stacks taken on the hang"), "{after}");
    drop(program);
}

/// `tfwatch node` on a real terminal: the node view lists the deadlocked job with its
/// finding; Enter opens that job's screen (the `attach` one), Esc goes back, q quits
/// with the terminal restored.
#[test]
fn node_view_lists_the_jobs_and_opens_one() {
    if !tmux_installed() {
        return;
    }
    // A duration no other test uses, so --match picks this workload only.
    let duration = format!("{}ms", 80_000 + std::process::id() % 997);
    let workload = ChildGuard::spawn(tfwatch(&[
        "run-workload",
        "--scenario",
        "deadlock",
        "--duration",
        &duration,
    ]));
    let pid = workload.pid();
    let tmux = Tmux {
        socket: format!("tfwatch-test-node-{}", std::process::id()),
    };
    let command = format!(
        "{} node --hang-after 3s --match 'run-workload --scenario deadlock --duration {duration}'; echo TFWATCH-EXIT=$?; sleep 120",
        tfwatch_bin().display()
    );
    tmux.start(160, 40, None, &command);
    let job = format!("tree/{pid}-");
    let jobs = tmux.wait_screen("the job with its hang", |s| {
        s.contains("tfwatch node · 1 jobs")
            && s.lines()
                .any(|l| l.contains(&job) && (l.contains("no-progress") || l.contains("deadlock")))
    });
    assert!(jobs.contains("Enter: open the job"), "{jobs}");
    assert_eq!(tmux.alternate_on(), "1", "the alternate screen");

    tmux.send(&["Enter"]);
    let opened = tmux.wait_screen("the job's screen", |s| {
        s.contains("Esc: back to the jobs") && s.contains(&format!("pid {pid}"))
    });
    assert!(opened.contains("worker-a"), "its threads: {opened}");

    tmux.send(&["Escape"]);
    tmux.wait_screen("the jobs again", |s| {
        s.contains("tfwatch node · 1 jobs") && !s.contains("Esc: back to the jobs")
    });

    tmux.send(&["q"]);
    let after = tmux.wait_screen("tfwatch to exit", |s| s.contains("TFWATCH-EXIT="));
    assert!(after.contains("TFWATCH-EXIT=0"), "{after}");
    assert!(after.contains("tfwatch node: stopped"), "{after}");
    assert_eq!(tmux.alternate_on(), "0", "the terminal is restored");
    drop(workload);
}
