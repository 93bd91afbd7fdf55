//! `loadgen run --spawn` against the real linkr binary beside `loadgen` (target/debug/linkr, built
//! by `cargo build -p linkr`): starts it pinned, seeds it, drives the mixed scenario, stops it.

use std::path::PathBuf;
use std::process::Command;
use std::time::Duration;

fn linkr_beside_loadgen() -> Option<PathBuf> {
    let p = PathBuf::from(env!("CARGO_BIN_EXE_loadgen")).with_file_name("linkr");
    p.is_file().then_some(p)
}

#[test]
fn spawn_seeds_drives_and_stops_linkr() {
    let linkr = linkr_beside_loadgen()
        .expect("no linkr beside loadgen: run the workspace tests (scripts/test.sh) or `cargo build -p linkr` first");
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
    // linkr's own CPU over the step, from /proc: busy some, and no more than its one CPU.
    let service_cpu = v["service_cpu"].as_f64().expect("service_cpu with --spawn");
    assert!(service_cpu > 0.0 && service_cpu <= 1.05, "{service_cpu}");
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

#[test]
fn ctrl_c_stops_the_run_and_linkr() {
    linkr_beside_loadgen()
        .expect("no linkr beside loadgen: run the workspace tests (scripts/test.sh) or `cargo build -p linkr` first");
    let mut child = Command::new(env!("CARGO_BIN_EXE_loadgen"))
        .args([
            "run",
            "--spawn",
            "--rate",
            "100",
            "--duration",
            "60s",
            "--seed-links",
            "50",
        ])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    // Wait for the step to start (its first progress line), then interrupt.
    let mut stderr = std::io::BufReader::new(child.stderr.take().unwrap());
    let mut seen = String::new();
    let started = std::time::Instant::now();
    loop {
        let mut line = String::new();
        use std::io::BufRead;
        if stderr.read_line(&mut line).unwrap() == 0 || started.elapsed() > Duration::from_secs(30)
        {
            panic!("no progress line: {seen}");
        }
        seen.push_str(&line);
        if line.contains("[mixed @ 100/s]") {
            break;
        }
    }
    // SAFETY: kill(2) on our own child.
    unsafe { libc::kill(child.id() as libc::pid_t, libc::SIGINT) };
    let begun = std::time::Instant::now();
    let status = child.wait().unwrap();
    let mut rest = String::new();
    let _ = std::io::Read::read_to_string(&mut stderr, &mut rest);
    seen.push_str(&rest);
    assert_eq!(status.code(), Some(130), "{seen}");
    assert!(
        begun.elapsed() < Duration::from_secs(15),
        "took {:?} to stop",
        begun.elapsed()
    );
    let pid: u32 = seen
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
        "linkr {pid} still running: {seen}"
    );
}
