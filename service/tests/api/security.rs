//! Authorization and abuse defects: who may read a link's stats, delete racing re-creation,
//! `HEAD` not counting clicks.

use std::time::Duration;

use linkr::config::Secret;
use reqwest::Method;
use serde_json::{Value, json};

use crate::helpers::{ALICE, BOB, ChildApp, ROOT, assert_error, client, spawn_app, spawn_app_with};

#[tokio::test]
async fn stats_are_for_the_owner_and_admin_keys_only() {
    let app = spawn_app().await;
    let created = app.create_url("https://example.com/private").await;
    assert_eq!(app.redirect(&created.code).await.status(), 302);

    let denied = assert_error(app.stats(BOB, &created.code).await, 403, "forbidden").await;
    assert!(
        !denied.to_string().contains("example.com/private"),
        "a 403 must not show the link: {denied}"
    );
    for key in [ALICE, ROOT] {
        let response = app.stats(key, &created.code).await;
        assert_eq!(response.status(), 200);
        let body: Value = response.json().await.unwrap();
        assert_eq!(body["url"], "https://example.com/private");
        assert_eq!(body["clicks"], 1);
    }
    assert_error(
        app.stats("no-such-key-at-all", &created.code).await,
        401,
        "unauthorized",
    )
    .await;
    assert_error(app.stats(BOB, "nosuch").await, 404, "not_found").await;
}

#[tokio::test]
async fn head_answers_like_get_but_counts_no_click() {
    let app = spawn_app().await;
    let created = app.create_url("https://example.com/previewed").await;
    for _ in 0..5 {
        let response = app
            .client
            .head(app.url(&format!("/{}", created.code)))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 302);
        assert_eq!(
            response.headers()["location"],
            "https://example.com/previewed"
        );
    }
    assert_eq!(app.redirect(&created.code).await.status(), 302);
    let stats: Value = app.stats(ALICE, &created.code).await.json().await.unwrap();
    assert_eq!(stats["clicks"], 1, "five HEADs and one GET");

    let missing = app.client.head(app.url("/nosuch")).send().await.unwrap();
    assert_eq!(missing.status(), 404);
}

/// Alice's link expires; bob re-creates its code while alice deletes it. Whatever the order,
/// bob's link must survive: alice either deletes her own expired link before bob's create, or
/// is refused (403) because the code is bob's by then. Checking the owner and deleting in two
/// steps loses bob's link whenever his create commits in between.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deleting_an_expired_code_never_removes_the_link_another_key_recreated() {
    let app = spawn_app().await;
    let mut refused = 0;
    for round in 0..40 {
        let code = format!("race{round}");
        let created = app
            .create(
                ALICE,
                json!({ "url": "https://a.example/", "code": code, "ttl_seconds": 1 }),
            )
            .await;
        assert_eq!(created.status(), 201);
        app.clock.advance(2);
        let (recreated, deleted) = tokio::join!(
            app.create(BOB, json!({ "url": "https://b.example/", "code": code })),
            app.delete(ALICE, &code),
        );
        assert_eq!(recreated.status(), 201, "round {round}");
        let deleted = deleted.status().as_u16();
        assert!(
            matches!(deleted, 204 | 403),
            "round {round}: delete answered {deleted}"
        );
        refused += usize::from(deleted == 403);
        let stats = app.stats(BOB, &code).await;
        assert_eq!(
            stats.status(),
            200,
            "round {round}: bob's link was deleted by alice"
        );
        let body: Value = stats.json().await.unwrap();
        assert_eq!(body["url"], "https://b.example/");
        assert_eq!(app.redirect(&code).await.status(), 302);
    }
    // Both orders are legal; the test is only meaningful if the race was run at all.
    println!("alice's delete refused in {refused} of 40 rounds");
}

/// A whole API session against the real binary, access log on and everything at debug level:
/// no key, right or wrong, appears in anything it writes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_api_key_is_ever_logged_in_a_whole_session_at_debug_level() {
    let wrong = "wrong-key-0123456789-must-not-be-logged";
    let dir = tempfile::tempdir().unwrap();
    let mut linkr = ChildApp::spawn_capturing_stderr(
        dir.path(),
        &[
            ("LINKR_LOG", "debug"),
            ("LINKR_ACCESS_LOG", "on"),
            ("LINKR_RATE_LIMIT", "1000"),
        ],
    );
    linkr.wait_started().await;
    let http = client();
    let url = |path: &str| linkr.url(path);
    let send = |request: reqwest::RequestBuilder| async move { request.send().await.unwrap() };

    let created: Value = send(
        http.post(url("/v1/links"))
            .bearer_auth(ALICE)
            .json(&json!({ "url": "https://example.com/session", "code": "session" })),
    )
    .await
    .json()
    .await
    .unwrap();
    assert_eq!(created["code"], "session");
    assert_eq!(send(http.get(url("/session"))).await.status(), 302);
    assert_eq!(send(http.head(url("/session"))).await.status(), 302);
    assert_eq!(
        send(http.get(url("/v1/links/session")).bearer_auth(ALICE))
            .await
            .status(),
        200
    );
    assert_eq!(
        send(http.get(url("/v1/links/session")).bearer_auth(ROOT))
            .await
            .status(),
        200
    );
    assert_eq!(
        send(http.get(url("/v1/links/session")).bearer_auth(BOB))
            .await
            .status(),
        403
    );
    assert_eq!(
        send(http.delete(url("/v1/links/session")).bearer_auth(BOB))
            .await
            .status(),
        403
    );
    assert_eq!(
        send(http.get(url("/v1/links/session")).bearer_auth(wrong))
            .await
            .status(),
        401
    );
    let raw_wrong = http
        .post(url("/v1/links"))
        .header("authorization", format!("Basic {wrong}"))
        .json(&json!({ "url": "https://example.com/" }));
    assert_eq!(send(raw_wrong).await.status(), 401);
    let malformed = http
        .post(url("/v1/links"))
        .bearer_auth(ALICE)
        .header("content-type", "application/json")
        .body("{not json");
    assert_eq!(send(malformed).await.status(), 400);
    let invalid = http
        .post(url("/v1/links"))
        .bearer_auth(BOB)
        .json(&json!({ "url": "ftp://example.com/", "code": "bad code" }));
    assert_eq!(send(invalid).await.status(), 422);
    let taken = http
        .post(url("/v1/links"))
        .bearer_auth(BOB)
        .json(&json!({ "url": "https://example.com/", "code": "session" }));
    assert_eq!(send(taken).await.status(), 409);
    assert_eq!(
        send(http.delete(url("/v1/links/session")).bearer_auth(ALICE))
            .await
            .status(),
        204
    );
    assert_eq!(
        send(http.delete(url("/v1/links/session")).bearer_auth(ROOT))
            .await
            .status(),
        404
    );
    assert_eq!(send(http.get(url("/session"))).await.status(), 404);

    let admin = linkr
        .stdout()
        .lines()
        .find_map(|l| {
            let event: Value = serde_json::from_str(l).ok()?;
            event["admin_addr"].as_str().map(str::to_string)
        })
        .expect("the listening line names the admin address");
    let level: Value = send(http.get(format!("http://{admin}/debug/log-level")))
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(level["level"], "debug", "the session ran at debug level");

    linkr.signal(libc::SIGTERM);
    assert!(linkr.wait_exit(Duration::from_secs(20)).success());
    linkr.finish_output();
    let stdout = linkr.stdout();
    let stderr = linkr.stderr();
    let access_lines = stdout
        .lines()
        .filter(|l| l.contains("linkr::access"))
        .count();
    assert!(
        access_lines >= 15,
        "the access log was on: {access_lines} lines\n{stdout}"
    );
    for key in [ALICE, BOB, ROOT, wrong] {
        // Any 8-byte piece of a key would do to recognise it.
        let piece = &key[key.len() - 12..];
        assert!(!stdout.contains(piece), "{key} in stdout:\n{stdout}");
        assert!(!stderr.contains(piece), "{key} in stderr:\n{stderr}");
    }
}

const ADMIN_TOKEN: &str = "admin-token-0123456789abcdef";

#[tokio::test]
async fn with_a_token_set_every_admin_endpoint_requires_it() {
    let app = spawn_app_with(|c| c.admin_token = Some(Secret::new(ADMIN_TOKEN.into()))).await;
    let admin = |path: &str| format!("http://{}{path}", app.admin_addr);
    for (method, path) in [
        (Method::GET, "/metrics"),
        (Method::GET, "/debug/allocs"),
        (Method::GET, "/debug/log-level"),
        (Method::PUT, "/debug/log-level?level=debug"),
        (Method::GET, "/debug/pprof/profile?seconds=1"),
        (Method::GET, "/no/such/path"),
    ] {
        for presented in [None, Some("wrong-token-0123456789abcdef"), Some("")] {
            let mut request = app.client.request(method.clone(), admin(path));
            if let Some(token) = presented {
                request = request.bearer_auth(token);
            }
            let response = request.send().await.unwrap();
            assert_eq!(
                response.headers()["www-authenticate"],
                r#"Bearer realm="linkr-admin""#,
                "{method} {path}"
            );
            assert_error(response, 401, "unauthorized").await;
        }
    }
    let metrics = app
        .client
        .get(admin("/metrics"))
        .bearer_auth(ADMIN_TOKEN)
        .send()
        .await
        .unwrap();
    assert_eq!(metrics.status(), 200);
    assert!(metrics.text().await.unwrap().contains("linkr_"));
    let level = app
        .client
        .put(admin("/debug/log-level?level=warn"))
        .bearer_auth(ADMIN_TOKEN)
        .send()
        .await
        .unwrap();
    assert_eq!(level.status(), 200);
    // The public listener is not affected.
    assert_eq!(app.get("/healthz").await.status(), 200);
}

#[tokio::test]
async fn without_a_token_the_admin_listener_stays_open() {
    let app = spawn_app().await;
    let response = app
        .client
        .get(format!("http://{}/metrics", app.admin_addr))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
}

#[test]
fn the_admin_token_is_read_from_a_file_checked_and_never_printed() {
    let linkr = || {
        let mut cmd = std::process::Command::new(env!("CARGO_BIN_EXE_linkr"));
        cmd.env_clear().stdin(std::process::Stdio::null());
        cmd
    };
    let file = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(file.path(), format!("{ADMIN_TOKEN}\n")).unwrap();
    let output = linkr()
        .env("LINKR_ADMIN_TOKEN_FILE", file.path())
        .arg("--print-config")
        .output()
        .unwrap();
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let config: Value = serde_json::from_slice(&output.stdout).unwrap();
    assert_eq!(config["admin_token"], "[redacted]");
    assert!(!String::from_utf8_lossy(&output.stdout).contains(ADMIN_TOKEN));

    let output = linkr()
        .env("LINKR_ADMIN_TOKEN", "short-secret")
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(2), "{stderr}");
    assert!(
        stderr.contains("- LINKR_ADMIN_TOKEN: the admin token must be at least 16"),
        "{stderr}"
    );
    assert!(!stderr.contains("short-secret"), "{stderr}");
}
