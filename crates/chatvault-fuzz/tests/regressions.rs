//! Replays every input a fuzz run ever failed on (`regressions/<target>/`)
//! and runs each target for a fixed, seeded number of executions, so CI
//! proves the parsers still answer hostile bytes with errors even where
//! `cargo xtask fuzz` is not run.

use chatvault_fuzz::{all_targets, fuzz, Budget, Verdict};

const EXECUTIONS: u64 = 300;

#[test]
fn every_saved_regression_input_passes() {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("regressions");
    let mut replayed = 0;
    for mut target in all_targets() {
        let Ok(entries) = std::fs::read_dir(dir.join(target.name())) else {
            continue;
        };
        for entry in entries {
            let path = entry.expect("readable regressions folder").path();
            let input = std::fs::read(&path).expect("readable regression input");
            let verdict = target.check(&input);
            assert!(
                !matches!(verdict, Verdict::Fail(_)),
                "{}: {verdict:?}",
                path.display()
            );
            replayed += 1;
        }
    }
    println!("{replayed} regression inputs replayed");
}

#[test]
fn every_target_survives_a_short_seeded_run() {
    for mut target in all_targets() {
        let report = fuzz(target.as_mut(), 20261203, Budget::Executions(EXECUTIONS));
        if let Some(failure) = &report.failure {
            panic!(
                "{}: {} (input, {} bytes: {:?})",
                report.target,
                failure.message,
                failure.input.len(),
                String::from_utf8_lossy(&failure.input)
            );
        }
        assert!(
            report.accepted > 0,
            "{}: no seed was accepted",
            report.target
        );
        println!(
            "{}: {} executions, {} accepted, {} skipped",
            report.target, report.executions, report.accepted, report.skipped
        );
    }
}
