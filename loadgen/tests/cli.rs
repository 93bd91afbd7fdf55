//! The `loadgen` binary: exit codes, usage errors with clap's whole message, `run --json`/`--hgrm` files.

mod driver_support;

use std::process::{Command, Output};

fn loadgen(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_loadgen"))
        .args(args)
        .env_remove("LINKR_API_KEY")
        .output()
        .expect("run loadgen")
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// Exit 2 with a message on stderr that mentions `mentions`.
fn assert_usage_error(o: &Output, mentions: &str) {
    assert_eq!(o.status.code(), Some(2), "stderr: {}", stderr(o));
    let err = stderr(o);
    assert!(
        err.contains(mentions),
        "{err:?} does not mention {mentions:?}"
    );
}

/// A clap usage error: clap's whole message (what is wrong, where to get help; the usage line when
/// an argument is missing or misplaced).
fn assert_clap_error(o: &Output, mentions: &[&str]) {
    for m in mentions {
        assert_usage_error(o, m);
    }
    let err = stderr(o);
    assert!(err.starts_with("error: "), "{err}");
    assert!(err.contains("--help"), "{err}");
}

#[test]
fn a_missing_argument_is_named_in_clap_s_whole_message() {
    let o = loadgen(&["run", "--rate", "10"]);
    assert_clap_error(
        &o,
        &[
            "the following required arguments were not provided:",
            "--duration <D>",
            "<--target <URL>|--spawn>",
            "Usage: loadgen run --rate <R> --duration <D> <--target <URL>|--spawn>",
        ],
    );
    assert_clap_error(
        &loadgen(&["knee", "--slo-p99", "5ms"]),
        &["<--target <URL>|--spawn>"],
    );
    assert_clap_error(
        &loadgen(&["compare", "only-one.json"]),
        &[
            "<NEW.json>",
            "Usage: loadgen compare <BASE.json> <NEW.json>",
        ],
    );
}

#[test]
fn bare_loadgen_lists_the_subcommands_and_exits_2() {
    let o = loadgen(&[]);
    assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
    let err = stderr(&o);
    assert!(
        err.contains("Usage: loadgen ") && err.contains("<COMMAND>"),
        "{err}"
    );
    for cmd in ["run ", "knee ", "compare "] {
        assert!(
            err.contains(&format!("\n  {cmd}")),
            "{cmd} not listed: {err}"
        );
    }
}

#[test]
fn usage_errors_exit_2() {
    // --spawn knows its service's process: naming another is a misuse.
    assert_clap_error(
        &loadgen(&["knee", "--spawn", "--service-pid", "1"]),
        &["the argument '--spawn' cannot be used with '--service-pid <PID>'"],
    );
    assert_clap_error(
        &loadgen(&[
            "run",
            "--target",
            "http://127.0.0.1:1",
            "--spawn",
            "--rate",
            "1",
            "--duration",
            "1s",
        ]),
        &["cannot be used with"],
    );
    assert_clap_error(
        &loadgen(&[
            "run",
            "--target",
            "http://127.0.0.1:1",
            "--rate",
            "1",
            "--duration",
            "ten",
        ]),
        &["invalid duration"],
    );
    assert_clap_error(
        &loadgen(&[
            "run",
            "--target",
            "http://127.0.0.1:1",
            "--rate",
            "0",
            "--duration",
            "1s",
        ]),
        &["rate"],
    );
    assert_clap_error(&loadgen(&["frobnicate"]), &["frobnicate"]);
    assert_clap_error(
        &loadgen(&[
            "run",
            "--target",
            "http://127.0.0.1:1",
            "--rate",
            "1",
            "--duration",
            "1s",
            "--scenario",
            "nope",
        ]),
        &["nope"],
    );
}

/// Exit 2 with one line on stderr: a set-up error found after parsing.
fn assert_setup_error(o: &Output, mentions: &str) {
    assert_usage_error(o, mentions);
    let err = stderr(o);
    assert_eq!(err.trim_end().lines().count(), 1, "not one line: {err:?}");
}

#[test]
fn help_and_version_exit_0() {
    let o = loadgen(&["--help"]);
    assert_eq!(o.status.code(), Some(0));
    let out = String::from_utf8_lossy(&o.stdout);
    for cmd in ["run", "knee", "compare"] {
        assert!(out.contains(cmd), "{out}");
    }
    let o = loadgen(&["run", "--help"]);
    assert_eq!(o.status.code(), Some(0));
    assert!(String::from_utf8_lossy(&o.stdout).contains("--max-p99"));
    assert_eq!(loadgen(&["--version"]).status.code(), Some(0));
}

#[test]
fn a_linkr_scenario_without_api_key_is_a_setup_error() {
    let o = loadgen(&[
        "run",
        "--target",
        "http://127.0.0.1:9",
        "--rate",
        "10",
        "--duration",
        "1s",
        "--scenario",
        "redirect",
    ]);
    assert_setup_error(&o, "--api-key");
}

#[test]
fn a_missing_linkr_binary_is_a_setup_error() {
    let o = loadgen(&[
        "run",
        "--spawn",
        "--linkr",
        "/nonexistent/linkr",
        "--rate",
        "10",
        "--duration",
        "1s",
    ]);
    assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
    assert!(stderr(&o).contains("/nonexistent/linkr"), "{}", stderr(&o));
}

/// goose prints "N users launched." on every step; the lab's output leaves it out unless
/// `LOADGEN_VERBOSE=1` asks for goose's own lines (which shows the check can see them).
#[test]
fn goose_s_users_launched_line_is_left_out_unless_verbose() {
    let server = driver_support::start_in_background();
    let target = format!("{}/hello", server.base);
    let run = |verbose: &str| {
        Command::new(env!("CARGO_BIN_EXE_loadgen"))
            .args(["run", "--target", &target, "--scenario", "get"])
            .args(["--rate", "100", "--duration", "1s"])
            .env("LOADGEN_VERBOSE", verbose)
            .output()
            .expect("run loadgen")
    };
    let both = |o: &Output| format!("{}{}", String::from_utf8_lossy(&o.stdout), stderr(o));
    let quiet = run("0");
    assert_eq!(quiet.status.code(), Some(0), "{}", both(&quiet));
    assert!(!both(&quiet).contains("users launched"), "{}", both(&quiet));
    let verbose = run("1");
    assert_eq!(verbose.status.code(), Some(0), "{}", both(&verbose));
    assert!(
        stderr(&verbose).contains("users launched"),
        "{}",
        both(&verbose)
    );
}

#[test]
fn run_writes_json_and_hgrm_and_applies_thresholds() {
    let server = driver_support::start_in_background();
    let dir = tempfile::tempdir().unwrap();
    let json = dir.path().join("run.json");
    let hgrm = dir.path().join("run.hgrm");
    let target = format!("{}/hello", server.base);
    // The server runs in this test's process: its CPU is this process's.
    let pid = std::process::id().to_string();
    let o = loadgen(&[
        "run",
        "--target",
        &target,
        "--service-pid",
        &pid,
        "--scenario",
        "get",
        "--rate",
        "300",
        "--duration",
        "1s",
        "--json",
        json.to_str().unwrap(),
        "--hgrm",
        hgrm.to_str().unwrap(),
        "--max-error-rate",
        "0",
        "--max-p99",
        "10s",
    ]);
    assert_eq!(
        o.status.code(),
        Some(0),
        "stderr: {}\nstdout: {}",
        stderr(&o),
        String::from_utf8_lossy(&o.stdout)
    );
    let v: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&json).unwrap()).unwrap();
    assert_eq!(v["scenario"], "get");
    assert_eq!(v["target"], target.as_str());
    assert_eq!(v["rate_target"], 300.0);
    assert_eq!(v["duration_s"], 1.0);
    assert_eq!(v["errors"], 0);
    assert_eq!(v["requests"], v["status"]["200"]);
    for key in [
        "rate_achieved",
        "latency_us",
        "latency_uncorrected_us",
        "generator_saturated",
    ] {
        assert!(v.get(key).is_some(), "missing {key}");
    }
    let service_cpu = v["service_cpu"]
        .as_f64()
        .expect("service_cpu with --service-pid");
    assert!(service_cpu > 0.0 && service_cpu <= 1.05, "{service_cpu}");
    // The host's steal over the step is measured (this machine's /proc/stat has it).
    let steal = v["host_steal"]
        .as_f64()
        .expect("host_steal for the lean client");
    assert!((0.0..=1.0).contains(&steal), "{steal}");
    let h = std::fs::read_to_string(&hgrm).unwrap();
    assert!(h.contains("Percentile") && h.contains("#[Max"), "{h}");
    let out = String::from_utf8_lossy(&o.stdout);
    assert!(
        out.contains("p99") && out.contains("service    cpu"),
        "{out}"
    );

    // A p99 of 1 µs cannot be met: exit 1 (the generator is not saturated at 300/s).
    let o = loadgen(&[
        "run",
        "--target",
        &target,
        "--scenario",
        "get",
        "--rate",
        "300",
        "--duration",
        "1s",
        "--max-p99",
        "1us",
    ]);
    assert_eq!(o.status.code(), Some(1), "stderr: {}", stderr(&o));
    assert!(stderr(&o).contains("FAIL: corrected p99"), "{}", stderr(&o));
}

#[test]
fn an_unreachable_target_fails_the_error_threshold() {
    // Nothing listens on port 9: every request is a connect error.
    let o = loadgen(&[
        "run",
        "--target",
        "http://127.0.0.1:9/",
        "--scenario",
        "get",
        "--rate",
        "50",
        "--duration",
        "500ms",
        "--max-error-rate",
        "1",
    ]);
    assert_eq!(o.status.code(), Some(1), "stderr: {}", stderr(&o));
    assert!(stderr(&o).contains("error rate"), "{}", stderr(&o));
}

/// A pool smaller than the rate needs that runs dry is the generator's limit, never a verdict on
/// the service: 200 req/s against a server that answers each request in 20 ms keeps 4 requests
/// in flight; with the pool fixed at 2 connections (`LOADGEN_CONNECTIONS`) the step says it was
/// saturated by too few connections. With the pool sized from the rate it is not.
#[test]
fn a_pool_too_small_for_the_rate_is_the_generator_s_limit() {
    let server =
        driver_support::start_conn_server_in_background(1, std::time::Duration::from_millis(20));
    let dir = tempfile::tempdir().unwrap();
    let json = dir.path().join("run.json");
    let target = format!("{}/x", server.base);
    let run = |connections: Option<&str>| {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_loadgen"));
        cmd.args([
            "run",
            "--target",
            &target,
            "--scenario",
            "get",
            "--rate",
            "200",
            "--duration",
            "1s",
            "--json",
            json.to_str().unwrap(),
        ]);
        cmd.env_remove("LOADGEN_CONNECTIONS");
        if let Some(n) = connections {
            cmd.env("LOADGEN_CONNECTIONS", n);
        }
        let o = cmd.output().expect("run loadgen");
        assert_eq!(o.status.code(), Some(0), "stderr: {}", stderr(&o));
        serde_json::from_str::<serde_json::Value>(&std::fs::read_to_string(&json).unwrap()).unwrap()
    };
    let short = run(Some("2"));
    assert_eq!(short["users"], 2, "{short}");
    assert_eq!(short["pool_exhausted"], true, "{short}");
    assert_eq!(short["generator_saturated"], true, "{short}");
    assert!(
        short["saturation"]
            .as_str()
            .unwrap()
            .contains("too few connections"),
        "{short}"
    );
    let sized = run(None);
    assert_eq!(sized["pool_exhausted"], false, "{sized}");
    // (A busy machine may still delay the generator's thread: then the reason is not the pool.)
    assert!(
        !sized["saturation"]
            .as_str()
            .unwrap_or_default()
            .contains("connections"),
        "{sized}"
    );
}

/// A generator that reads its responses late (the engine blocked 3 ms after each send, by the
/// test hook `LOADGEN_READ_PAUSE_US`) on one connection, with slots every 2.5 ms: each response
/// ends when it arrived, not when it was read, and the wait is the generator's own (its read
/// delay, and the own lag of the slot that waited for the connection), not the service's.
#[test]
fn a_late_read_is_the_generator_s_delay_not_the_service_s_latency() {
    let server = driver_support::start_conn_server_in_background(0, std::time::Duration::ZERO);
    let dir = tempfile::tempdir().unwrap();
    let json = dir.path().join("run.json");
    let target = format!("{}/x", server.base);
    let o = Command::new(env!("CARGO_BIN_EXE_loadgen"))
        .args(["run", "--target", &target, "--scenario", "get"])
        .args(["--rate", "400", "--duration", "1s"])
        .args(["--json", json.to_str().unwrap()])
        .env("LOADGEN_READ_PAUSE_US", "3000")
        .env("LOADGEN_CONNECTIONS", "1")
        .env_remove("LOADGEN_DISPATCH")
        .env_remove("LOADGEN_H1")
        .output()
        .expect("run loadgen");
    assert_eq!(o.status.code(), Some(0), "stderr: {}", stderr(&o));
    let v: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&json).unwrap()).unwrap();
    assert!(v["requests"].as_u64().unwrap() >= 100, "{v}");
    assert_eq!(v["errors"], 0, "{v}");
    let us = |p: &str| v.pointer(p).and_then(serde_json::Value::as_u64).unwrap();
    // The server answers in well under a millisecond; the reads came 3 ms after the sends.
    assert!(us("/latency_uncorrected_us/p50") < 1_500, "{v}");
    assert!(us("/read_delay_us/p50") >= 2_500, "{v}");
    // Every slot after the first waited for the one connection, which was free from its
    // answer's arrival on: the wait from there to the send is the generator's.
    assert!(us("/generator_lag_us/p50") >= 2_000, "{v}");
}

/// `loadgen run` of 500 requests at 500 req/s against a fast server, with `env` set; its JSON
/// result, after checking that every request was sent and answered.
fn run_500_with(env: &[(&str, &str)]) -> serde_json::Value {
    let server = driver_support::start_conn_server_in_background(0, std::time::Duration::ZERO);
    let dir = tempfile::tempdir().unwrap();
    let json = dir.path().join("run.json");
    let target = format!("{}/x", server.base);
    let o = Command::new(env!("CARGO_BIN_EXE_loadgen"))
        .args([
            "run",
            "--target",
            &target,
            "--scenario",
            "get",
            "--rate",
            "500",
        ])
        .args(["--duration", "1s", "--json", json.to_str().unwrap()])
        .envs(env.iter().copied())
        .env_remove("LOADGEN_CONNECTIONS")
        .output()
        .expect("run loadgen");
    assert_eq!(o.status.code(), Some(0), "stderr: {}", stderr(&o));
    let v: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&json).unwrap()).unwrap();
    assert_eq!(v["requests"], 500, "{v}");
    assert_eq!(v["errors"], 0, "{v}");
    v
}

/// By default the lean client sends on its own connection, the most recently freed first; the
/// result says so.
#[test]
fn the_default_engine_is_named() {
    let v = run_500_with(&[("LOADGEN_DISPATCH", ""), ("LOADGEN_H1", "")]);
    let engine = v["engine"].as_str().unwrap();
    assert!(
        engine.starts_with("lean-raw-h1/") && engine.ends_with("stack dispatch"),
        "{v}"
    );
}

/// `LOADGEN_DISPATCH=stride` selects wrk2's fixed slots instead of the stack of free connections
/// (the default), for comparison: every slot is sent and the result names the dispatch.
#[test]
fn the_stride_dispatch_stays_selectable() {
    let v = run_500_with(&[("LOADGEN_DISPATCH", "stride")]);
    assert!(
        v["engine"].as_str().unwrap().contains("stride dispatch"),
        "{v}"
    );
}

/// `LOADGEN_H1=hyper` sends over hyper's client connection instead of the lean client's own, for
/// comparison (`scripts/gen-ceiling.sh` measures both): every slot is sent and the result says so.
#[test]
fn hyper_s_connection_stays_selectable() {
    let v = run_500_with(&[("LOADGEN_H1", "hyper")]);
    assert!(
        v["engine"].as_str().unwrap().starts_with("lean-hyper-h1/"),
        "{v}"
    );
}
