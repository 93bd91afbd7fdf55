//! `loadgen run --spawn` against the real linkr binary beside `loadgen` (target/debug/linkr, built
//! by `cargo build -p linkr`): starts it pinned, seeds it, drives the mixed scenario, stops it.

use std::path::PathBuf;
use std::process::Command;

fn linkr_beside_loadgen() -> Option<PathBuf> {
    let p = PathBuf::from(env!("CARGO_BIN_EXE_loadgen")).with_file_name("linkr");
    p.is_file().then_some(p)
}

#[test]
fn spawn_seeds_drives_and_stops_linkr() {
    let Some(linkr) = linkr_beside_loadgen() else {
        eprintln!("SKIPPED: no linkr beside loadgen (run `cargo build -p linkr` first)");
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let json = dir.path().join("run.json");
    let o = Command::new(env!("CARGO_BIN_EXE_loadgen"))
        .args([
            "run",
            "--spawn",
            "--rate",
            "200",
            "--duration",
            "2s",
            "--seed-links",
            "300",
            "--json",
        ])
        .arg(&json)
        .args(["--max-error-rate", "0"])
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&o.stderr);
    assert_eq!(
        o.status.code(),
        Some(0),
        "{linkr:?}\nstderr: {err}\nstdout: {}",
        String::from_utf8_lossy(&o.stdout)
    );
    assert!(err.contains("spawned linkr (pid "), "{err}");
    assert!(err.contains("seeded 300 links"), "{err}");
    let v: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&json).unwrap()).unwrap();
    assert_eq!(v["scenario"], "mixed");
    assert_eq!(v["errors"], 0, "{v}");
    for code in ["302", "201", "200"] {
        assert!(
            v["status"][code].as_u64().unwrap_or(0) > 0,
            "no {code} in {}",
            v["status"]
        );
    }
    // linkr is gone: stopped gracefully (exit 0 is checked by loadgen, which would exit 2).
    let pid: u32 = err
        .split("spawned linkr (pid ")
        .nth(1)
        .unwrap()
        .split(')')
        .next()
        .unwrap()
        .parse()
        .unwrap();
    assert!(
        !PathBuf::from(format!("/proc/{pid}")).exists(),
        "linkr {pid} still running"
    );
}
