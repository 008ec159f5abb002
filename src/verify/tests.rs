use super::*;

fn outcome(result: ScenarioResult, stalled: Option<f64>) -> RunOutcome {
    RunOutcome {
        exit_code: Some(0),
        result: Some(result),
        hang: stalled.map(|s| HangObservation {
            pids: vec![1],
            threads: 2,
            stalled_seconds: s,
        }),
        wall_seconds: 2.0,
        error: None,
    }
}

fn info(variant: Variant) -> RunInfo {
    RunInfo {
        scenario: Scenario::Deadlock,
        variant,
        pid: 1,
        children: vec![],
        started: Instant::now(),
        duration: Duration::from_secs(1),
        onset: None,
        metrics_url: None,
    }
}

#[test]
fn hang_scenarios_pass_when_broken_hangs_and_fixed_completes() {
    let broken = outcome(
        ScenarioResult::new("deadlock", "broken", false, 3.0),
        Some(2.5),
    );
    let fixed = outcome(ScenarioResult::new("deadlock", "fixed", true, 1.0), None);
    let rows = evaluate(
        Scenario::Deadlock,
        &[
            (Variant::Broken, info(Variant::Broken), broken.clone(), None),
            (Variant::Fixed, info(Variant::Fixed), fixed, None),
        ],
    );
    assert!(rows.iter().all(|r| r.pass), "{rows:?}");
    assert_eq!(rows[1].ratio.as_deref(), Some("hung → completed"));
    // A broken run that kept making progress is not a hang.
    let busy = outcome(
        ScenarioResult::new("deadlock", "broken", false, 3.0),
        Some(0.1),
    );
    let rows = evaluate(
        Scenario::Deadlock,
        &[(Variant::Broken, info(Variant::Broken), busy, None)],
    );
    assert!(!rows[0].pass);
}

/// The fixed row of an oversubscribe pair judged from its broken and fixed results.
fn judge_oversubscribe(broken: ScenarioResult, fixed: ScenarioResult) -> VerifyRow {
    evaluate(
        Scenario::Oversubscribe,
        &[
            (
                Variant::Broken,
                info(Variant::Broken),
                outcome(broken, None),
                None,
            ),
            (
                Variant::Fixed,
                info(Variant::Fixed),
                outcome(fixed, None),
                None,
            ),
        ],
    )
    .remove(1)
}

#[test]
fn throughput_ratio_decides_oversubscribe() {
    let mut b = ScenarioResult::new("oversubscribe", "broken", true, 5.0);
    b.throughput = Some(100.0);
    let mut f = ScenarioResult::new("oversubscribe", "fixed", true, 1.0);
    f.throughput = Some(500.0);
    let row = judge_oversubscribe(b.clone(), f.clone());
    assert!(row.pass);
    assert_eq!(row.ratio.as_deref(), Some("5.0× faster"));
    f.throughput = Some(110.0);
    assert!(!judge_oversubscribe(b, f).pass);
}

/// With the workers' CPU time, the work per CPU-second decides: on a loaded machine the
/// fixed run may be only a little faster by the clock while it wastes far less CPU.
#[test]
fn work_per_cpu_second_decides_oversubscribe_when_measured() {
    let judge = |b_units: u64, b_cpu: f64, f_units: u64, f_cpu: f64| {
        let result = |variant: &str, units: u64, cpu: f64| {
            let mut r = ScenarioResult::new("oversubscribe", variant, false, 10.0);
            r.throughput = Some(units as f64 / 10.0);
            r.work_units = Some(units);
            r.cpu_seconds = Some(cpu);
            r
        };
        let row = judge_oversubscribe(
            result("broken", b_units, b_cpu),
            result("fixed", f_units, f_cpu),
        );
        (row.pass, row.ratio)
    };
    // 1.2× by the clock, 4× per CPU-second: the fix is proven.
    assert_eq!(
        judge(1000, 4.0, 1200, 1.2),
        (true, Some("1.2× faster, 4.0× work/CPU-s".into()))
    );
    // Less work per CPU-second than 1.5×: not proven, however fast by the clock.
    assert!(!judge(1000, 4.0, 3000, 10.0).0);
    // Slower by the clock: not a fix, whatever the CPU time says.
    assert!(!judge(1000, 4.0, 900, 0.5).0);
}

#[test]
fn table_shows_detection_columns_only_when_filled() {
    let mut row = VerifyRow {
        scenario: "deadlock".into(),
        variant: "broken".into(),
        measured: "completion".into(),
        value: "hung".into(),
        ratio: None,
        pass: true,
        note: "x".into(),
        detected: None,
        detection_latency_seconds: None,
    };
    let table = render_table(std::slice::from_ref(&row));
    assert!(table.starts_with("scenario"));
    assert!(!table.contains("detected"));
    row.detected = Some("deadlock".into());
    row.detection_latency_seconds = Some(1.25);
    let table = render_table(&[row]);
    assert!(
        table.contains("detected") && table.contains("1.2s"),
        "{table}"
    );
}

#[test]
fn plans_cover_every_scenario() {
    let names: Vec<&str> = plans(None).iter().map(|p| p.scenario.name()).collect();
    assert_eq!(names, crate::workload::scenario_names());
    assert_eq!(plans(Some(Scenario::Healthy)).len(), 1);
}

#[test]
fn thread_progress_keeps_the_longest_still_stretch() {
    let t0 = Instant::now();
    let at = |ms: u64| t0 + Duration::from_millis(ms);
    let mut progress = ThreadProgress::default();
    // No thread read yet: nothing is known.
    progress.observe(at(0), &[]);
    assert_eq!(progress.longest, Duration::ZERO);
    // Two workers appear and run, then stop for 1.5 s.
    progress.observe(at(100), &[((5, 6), 10), ((5, 7), 10)]);
    progress.observe(at(200), &[((5, 6), 20), ((5, 7), 10)]);
    for ms in (300..=1700).step_by(100) {
        progress.observe(at(ms), &[((5, 6), 20), ((5, 7), 10)]);
    }
    assert_eq!(progress.longest, Duration::from_millis(1500));
    assert_eq!(progress.threads(), 2);
    // One of them runs a little (killed at the end, say): the stretch seen stays.
    progress.observe(at(1800), &[((5, 6), 25), ((5, 7), 10)]);
    progress.observe(at(1900), &[((5, 6), 25)]);
    assert_eq!(progress.longest, Duration::from_millis(1500));
    // A thread that keeps running never builds a stretch.
    let mut busy = ThreadProgress::default();
    for (i, ms) in (0..3000).step_by(100).enumerate() {
        busy.observe(at(ms), &[((5, 6), i as u64)]);
    }
    assert_eq!(busy.longest, Duration::ZERO);
}

#[test]
fn no_watched_thread_is_no_hang() {
    let mut broken = outcome(
        ScenarioResult::new("deadlock", "broken", false, 3.0),
        Some(2.5),
    );
    if let Some(hang) = broken.hang.as_mut() {
        hang.threads = 0;
    }
    assert_eq!(hung(&broken), None);
}
