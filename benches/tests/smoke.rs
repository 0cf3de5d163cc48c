//! Runs `compare --smoke --no-servers --json --strict`, the CI smoke mode, and checks the JSON shape
//! and that every system and tokendb measurement produced its row (no timing is asserted).

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic
)]

use std::process::Command;

#[test]
fn smoke_run_prints_valid_json() {
    let out = Command::new(env!("CARGO_BIN_EXE_compare"))
        .args(["--smoke", "--no-servers", "--json", "--strict"])
        .output()
        .expect("run compare");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "compare failed: {stderr}");
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).expect("one JSON object");
    assert_eq!(report["tokens"], 2000);
    assert!(
        report["machine"]
            .as_str()
            .unwrap()
            .contains("shared machine")
    );
    assert!(report["bytes_per_token"].as_f64().unwrap() > 0.0);
    assert!(report["open_ms"].as_f64().unwrap() > 0.0);
    let rows = report["results"].as_array().unwrap();
    for (system, op) in [
        ("tokendb", "validate"),
        ("tokendb", "introspect"),
        ("tokendb", "sweep"),
        ("tokendb", "validate_during_sweep"),
        ("tokendb", "load"),
        ("redb", "get"),
        ("redb", "issue"),
        ("redb", "load"),
        ("sqlite", "get"),
        ("sqlite", "rotate"),
    ] {
        assert!(
            rows.iter().any(|r| r["system"] == system && r["op"] == op),
            "no {system}/{op} row in {report}"
        );
    }
    for op in ["issue", "rotate"] {
        for mode in ["group", "per_op"] {
            assert!(
                rows.iter()
                    .any(|r| r["system"] == "tokendb" && r["op"] == op && r["mode"] == mode),
                "no tokendb/{op}/{mode} row in {report}"
            );
        }
    }
    for threads in [1, 2] {
        assert!(
            rows.iter().any(|r| r["system"] == "tokendb"
                && r["op"] == "validate"
                && r["mode"] == "default config"
                && r["threads"] == threads),
            "no validate row with tokendb's default config at {threads} threads in {report}"
        );
    }
    let notes = report["notes"].as_array().unwrap();
    for goal in [
        "goal: validate x1 with tokendb's default config",
        "goal: load: tokendb",
        "goal: validate x2 / redb get x2",
    ] {
        assert!(
            notes.iter().any(|n| n.as_str().unwrap().starts_with(goal)),
            "no {goal:?} note in {report}"
        );
    }
    assert!(
        notes
            .iter()
            .any(|n| n.as_str().unwrap().contains("round by round")),
        "the notes do not say the rows were interleaved: {report}"
    );
    assert!(
        notes
            .iter()
            .any(|n| n.as_str().unwrap().contains("after a SIGKILL")),
        "no open-after-kill note in {report}"
    );
    for row in rows {
        assert!(row["ops_per_sec"].as_f64().unwrap() > 0.0, "{row}");
        assert!(row["threads"].as_u64().unwrap() >= 1, "{row}");
        assert!(
            row["p99_us"].as_f64().unwrap() >= row["p50_us"].as_f64().unwrap(),
            "{row}"
        );
    }
}

#[test]
fn help_and_bad_options() {
    let help = Command::new(env!("CARGO_BIN_EXE_compare"))
        .arg("--help")
        .output()
        .unwrap();
    assert!(help.status.success());
    assert!(String::from_utf8_lossy(&help.stdout).contains("--no-servers"));
    let bad = Command::new(env!("CARGO_BIN_EXE_compare"))
        .args(["--only", "mysql"])
        .output()
        .unwrap();
    assert_eq!(bad.status.code(), Some(2));
}

/// Runs `soak` for a few seconds (the CI smoke of the long soak run): the traffic makes no
/// error, and the final `verify` finds the database clean.
#[test]
fn soak_smoke_runs_clean() {
    let dir = tempfile::tempdir().unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_soak"))
        .args([
            "--seconds",
            "3",
            "--tokens",
            "20000",
            "--callers",
            "4",
            "--lifetime-minutes",
            "0.05",
            "--report-seconds",
            "1",
            "--dir",
        ])
        .arg(dir.path())
        .output()
        .expect("run soak");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "soak failed: {stdout}\n{stderr}");
    assert!(stdout.contains("p99val_us"), "no progress header: {stdout}");
    assert!(stdout.contains("verify: clean"), "{stdout}");
    assert!(stderr.contains(" 0 errors"), "{stderr}");
}
