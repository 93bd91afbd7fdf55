//! Access log lines and redaction, from the real binary's stdout.

use std::time::Duration;

use serde_json::{Value, json};

use crate::helpers::{ALICE, ChildApp, client};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn access_log_lines_carry_the_route_pattern_and_never_the_api_key() {
    let dir = tempfile::tempdir().unwrap();
    let mut linkr = ChildApp::spawn(dir.path(), &[("LINKR_LOG", "debug")]);
    linkr.wait_started().await;
    let client = client();
    let created: Value = client
        .post(linkr.url("/v1/links"))
        .bearer_auth(ALICE)
        .header("x-request-id", "req-create-1")
        .json(&json!({ "url": "https://example.com/logged", "code": "logged" }))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(created["code"], "logged");
    let stats = client
        .get(linkr.url("/v1/links/logged"))
        .bearer_auth(ALICE)
        .header("x-request-id", "req-stats-1")
        .send()
        .await
        .unwrap();
    assert_eq!(stats.status(), 200);
    let wrong_key = "wrong-key-that-must-not-be-logged";
    let denied = client
        .get(linkr.url("/v1/links/logged"))
        .bearer_auth(wrong_key)
        .send()
        .await
        .unwrap();
    assert_eq!(denied.status(), 401);
    linkr.signal(libc::SIGTERM);
    assert!(linkr.wait_exit(Duration::from_secs(20)).success());

    let stdout = linkr.stdout();
    assert!(!stdout.contains(ALICE), "the API key was logged");
    assert!(!stdout.contains(wrong_key), "a presented key was logged");
    let events: Vec<Value> = stdout
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON ({e}): {l}")))
        .collect();
    let access: Vec<&Value> = events
        .iter()
        .filter(|e| e["target"] == "linkr::access")
        .collect();
    let stats_line = access
        .iter()
        .find(|e| e["request_id"] == "req-stats-1")
        .expect("an access line for the stats request");
    assert_eq!(stats_line["method"], "GET");
    assert_eq!(
        stats_line["route"], "/v1/links/{code}",
        "pattern, not the path"
    );
    assert_eq!(stats_line["status"], 200);
    assert!(stats_line["latency_us"].is_u64());
    assert!(stats_line["level"] == "INFO");
    let create_line = access
        .iter()
        .find(|e| e["request_id"] == "req-create-1")
        .unwrap();
    assert_eq!(create_line["status"], 201);
    assert!(
        !stdout.contains("/v1/links/logged\""),
        "a concrete path in a log line"
    );
    assert!(access.iter().any(|e| e["status"] == 401));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn access_log_can_be_switched_off() {
    let dir = tempfile::tempdir().unwrap();
    let mut linkr = ChildApp::spawn(dir.path(), &[("LINKR_ACCESS_LOG", "off")]);
    linkr.wait_started().await;
    let client = client();
    for _ in 0..3 {
        assert_eq!(
            client
                .get(linkr.url("/healthz"))
                .send()
                .await
                .unwrap()
                .status(),
            200
        );
    }
    linkr.signal(libc::SIGTERM);
    assert!(linkr.wait_exit(Duration::from_secs(20)).success());
    let stdout = linkr.stdout();
    assert!(stdout.contains("shutdown complete"), "{stdout}");
    assert!(!stdout.contains("linkr::access"), "{stdout}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_misspelt_log_level_is_refused_and_logging_goes_on() {
    let dir = tempfile::tempdir().unwrap();
    let mut linkr = ChildApp::spawn(dir.path(), &[]);
    linkr.wait_started().await;
    let admin = linkr
        .stdout()
        .lines()
        .find_map(|l| {
            let event: Value = serde_json::from_str(l).ok()?;
            event["admin_addr"].as_str().map(str::to_string)
        })
        .expect("the listening line names the admin address");
    let client = client();
    for word in ["deubg", "verbose", "warning"] {
        let response = client
            .put(format!("http://{admin}/debug/log-level?level={word}"))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 400, "{word}");
        let body: Value = response.json().await.unwrap();
        assert_eq!(body["error"], "invalid_parameter");
        let message = body["message"].as_str().unwrap();
        assert!(message.contains(word), "{message}");
        assert!(
            message.contains("trace, debug, info, warn, error, off"),
            "{message}"
        );
    }
    let level: Value = client
        .get(format!("http://{admin}/debug/log-level"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(level["level"], "info");
    let response = client
        .get(linkr.url("/healthz"))
        .header("x-request-id", "after-the-typo")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    linkr.signal(libc::SIGTERM);
    assert!(linkr.wait_exit(Duration::from_secs(20)).success());
    let stdout = linkr.stdout();
    assert!(
        stdout
            .lines()
            .any(|l| l.contains("linkr::access") && l.contains("after-the-typo")),
        "the access log stopped:\n{stdout}"
    );
}
