//! Configuration fail-fast and `--print-config` (the real binary).

use std::process::{Command, Stdio};

use serde_json::Value;

use crate::helpers::API_KEYS;

fn linkr() -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_linkr"));
    cmd.env_clear().stdin(Stdio::null());
    cmd
}

#[test]
fn every_config_problem_is_reported_at_once_before_binding() {
    // Hold the port linkr is told to use: had it tried to bind, it would fail differently.
    let held = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = held.local_addr().unwrap().to_string();
    let secret_file = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(secret_file.path(), "mysql://linkr:hunter2@db:5432/linkr\n").unwrap();
    let output = linkr()
        .env("LINKR_ADDR", &addr)
        .env("LINKR_ADMIN_ADDR", "not-an-address")
        .env("LINKR_RATE_LIMIT", "lots")
        .env("LINKR_LOG_FORMAT", "yaml")
        .env("LINKR_SHUTDOWN_TIMEOUT", "-5s")
        .env("LINKR_API_KEYS", "alice")
        .env("LINKR_ACCESS_LOG", "maybe")
        .env("LINKR_DATABASE_URL_FILE", secret_file.path())
        .env("LINKR_REDIS_URL", "http://cache:6379")
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(2), "{stderr}");
    for var in [
        "LINKR_ADMIN_ADDR",
        "LINKR_RATE_LIMIT",
        "LINKR_LOG_FORMAT",
        "LINKR_SHUTDOWN_TIMEOUT",
        "LINKR_API_KEYS",
        "LINKR_ACCESS_LOG",
        "LINKR_DATABASE_URL",
        "LINKR_REDIS_URL",
    ] {
        assert!(stderr.contains(var), "{var} not reported:\n{stderr}");
    }
    assert!(stderr.contains("8 problems"), "{stderr}");
    assert!(stderr.contains("expects a postgres URL"), "{stderr}");
    assert!(
        !stderr.contains("hunter2"),
        "a secret was echoed:\n{stderr}"
    );
    assert!(!stderr.contains("cannot listen"), "{stderr}");
    assert!(output.stdout.is_empty(), "nothing logged, nothing served");
    drop(held);
}

#[test]
fn a_log_filter_word_that_is_no_level_is_a_config_error() {
    for (word, how) in [("deubg", "env"), ("verbose", "flag"), ("warning", "env")] {
        let mut cmd = linkr();
        cmd.env("LINKR_RATE_LIMIT", "lots");
        if how == "env" {
            cmd.env("LINKR_LOG", word);
        } else {
            cmd.args(["--log", word]);
        }
        let output = cmd.output().unwrap();
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert_eq!(output.status.code(), Some(2), "{word}: {stderr}");
        assert!(stderr.contains("2 problems"), "{stderr}");
        let named = if how == "env" {
            "- LINKR_LOG:"
        } else {
            "- --log:"
        };
        let line = stderr
            .lines()
            .find(|l| l.contains(named))
            .unwrap_or_else(|| panic!("{named} not reported:\n{stderr}"));
        assert!(line.contains(word), "{line}");
        assert!(
            line.contains("trace, debug, info, warn, error, off"),
            "{line}"
        );
        assert!(output.stdout.is_empty(), "nothing logged, nothing served");
    }
}

#[test]
fn flags_override_the_environment() {
    let output = linkr()
        .env("LINKR_ADDR", "not-an-address")
        .args(["--addr", "127.0.0.1:7001", "--print-config"])
        .output()
        .unwrap();
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let config: Value = serde_json::from_slice(&output.stdout).unwrap();
    assert_eq!(config["addr"], "127.0.0.1:7001");
    assert_eq!(config["public_url"], "http://127.0.0.1:7001");
}

#[test]
fn print_config_redacts_secrets() {
    let keys_file = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(
        keys_file.path(),
        "# team keys\nalice:file-secret-alice\n\nroot:file-secret-root:admin\n",
    )
    .unwrap();
    let output = linkr()
        .env("LINKR_API_KEYS_FILE", keys_file.path())
        .env("LINKR_SHUTDOWN_TIMEOUT", "30")
        .env("LINKR_HEADER_TIMEOUT", "750ms")
        .arg("--print-config")
        .output()
        .unwrap();
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let stdout = String::from_utf8(output.stdout).unwrap();
    assert!(!stdout.contains("file-secret"), "{stdout}");
    let config: Value = serde_json::from_str(&stdout).unwrap();
    let keys = config["api_keys"].as_array().unwrap();
    assert_eq!(keys.len(), 2);
    assert_eq!(keys[0]["name"], "alice");
    assert_eq!(keys[0]["key"], "[redacted]");
    assert_eq!(keys[1]["admin"], true);
    assert_eq!(config["shutdown_timeout"], "30s");
    assert_eq!(config["header_timeout"], "750ms");

    let output = linkr()
        .env("LINKR_API_KEYS", API_KEYS)
        .arg("--print-config")
        .output()
        .unwrap();
    let stdout = String::from_utf8(output.stdout).unwrap();
    assert!(!stdout.contains("key-0123456789"), "{stdout}");
}

#[test]
fn a_problem_names_the_flag_when_given_as_a_flag_and_the_variable_when_from_the_environment() {
    let output = linkr()
        .env("LINKR_RATE_LIMIT", "lots")
        .env("LINKR_ADMIN_ADDR", "127.0.0.1:7002")
        .args(["--addr", "nonsense", "--api-keys", "alice"])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(2), "{stderr}");
    assert!(stderr.contains("3 problems"), "{stderr}");
    let line = |start: &str| {
        stderr
            .lines()
            .find(|l| l.trim_start().starts_with(&format!("- {start}: ")))
            .unwrap_or_else(|| panic!("no problem for {start}:\n{stderr}"))
    };
    assert!(line("--addr").contains("expected IP:PORT"), "{stderr}");
    assert!(line("--api-keys").contains("name:key"), "{stderr}");
    assert!(line("LINKR_RATE_LIMIT").contains("lots"), "{stderr}");
    for var in ["LINKR_ADDR", "LINKR_API_KEYS"] {
        assert!(
            !stderr.contains(var),
            "{var} was not what the user typed:\n{stderr}"
        );
    }

    // The same value from the environment is named by its variable.
    let output = linkr().env("LINKR_ADDR", "nonsense").output().unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(2), "{stderr}");
    assert!(
        stderr.contains("- LINKR_ADDR: expected IP:PORT"),
        "{stderr}"
    );
    assert!(!stderr.contains("--addr"), "{stderr}");

    // A cross-reference names each setting as it was given.
    let output = linkr()
        .env("LINKR_ADDR", "127.0.0.1:7003")
        .args(["--admin-addr", "127.0.0.1:7003"])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(2), "{stderr}");
    assert!(
        stderr.contains("- --admin-addr: must differ from LINKR_ADDR"),
        "{stderr}"
    );
}
