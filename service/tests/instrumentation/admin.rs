use serde_json::Value;

use crate::support::Harness;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn allocs_json_has_totals_and_routes() {
    let h = Harness::start().await;
    for i in 0..20 {
        h.client
            .get(h.app_url(&format!("/x{i}")))
            .send()
            .await
            .unwrap();
    }
    let body: Value = h
        .client
        .get(h.admin_url("/debug/allocs"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(body["counting"], true);
    assert_eq!(body["allocator"], linkr::alloc::INNER_NAME);
    assert!(body["total"]["allocations"].as_u64().unwrap() > 0);
    assert!(body["total"]["bytes"].as_u64().unwrap() > 0);
    let routes = body["routes"].as_array().unwrap();
    assert_eq!(routes.len(), 1, "{body}");
    let r = &routes[0];
    assert_eq!(r["route"], "/{code}");
    assert_eq!(r["requests"], 20);
    let (n, per) = (
        r["allocations"].as_u64().unwrap(),
        r["allocations_per_request"].as_f64().unwrap(),
    );
    assert!(n >= 20, "{r}");
    assert!((per - n as f64 / 20.0).abs() < 1e-9);
    assert!(r["bytes_per_request"].as_f64().unwrap() > 0.0);
}

#[tokio::test]
async fn log_level_changes_and_rejects_bad_filters() {
    let h = Harness::start().await;
    let url = |q: &str| h.admin_url(&format!("/debug/log-level{q}"));
    let res = h
        .client
        .put(url("?level=linkr=debug,info"))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    let body: Value = res.json().await.unwrap();
    assert_eq!(body["level"], "linkr=debug,info");
    let body: Value = h
        .client
        .get(url(""))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(body["level"], "linkr=debug,info");

    for q in ["?level=loud", "", "?level="] {
        let res = h.client.put(url(q)).send().await.unwrap();
        assert_eq!(res.status(), 400, "{q}");
        let body: Value = res.json().await.unwrap();
        assert_eq!(body["error"], "invalid_parameter", "{q}");
        assert!(
            body["message"].as_str().unwrap().contains("level")
                || body["message"].as_str().unwrap().contains("filter"),
            "{body}"
        );
    }
    let body: Value = h
        .client
        .get(url(""))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(
        body["level"], "linkr=debug,info",
        "a rejected filter changes nothing"
    );
}

#[tokio::test]
async fn a_word_that_is_no_level_or_target_is_refused_by_name() {
    let h = Harness::start().await;
    let url = |q: &str| h.admin_url(&format!("/debug/log-level{q}"));
    for (query, word) in [
        ("?level=deubg", "deubg"),
        ("?level=verbose", "verbose"),
        ("?level=warning", "warning"),
        ("?level=linkr=debug,deubg", "deubg"),
        ("?level=lnkr=debug", "lnkr"),
        ("?level=linkr=loud", "loud"),
    ] {
        let res = h.client.put(url(query)).send().await.unwrap();
        assert_eq!(res.status(), 400, "{query}");
        let body: Value = res.json().await.unwrap();
        assert_eq!(body["error"], "invalid_parameter", "{query}");
        let message = body["message"].as_str().unwrap();
        assert!(
            message.contains(&format!("\"{word}\"")),
            "{query}: {message}"
        );
        assert!(
            message.contains("trace, debug, info, warn, error, off"),
            "{query}: {message}"
        );
    }
    let body: Value = h
        .client
        .get(url(""))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(body["level"], "info", "a refused filter changes nothing");

    for good in ["debug", "linkr", "linkr::access=off,tower_http=debug,warn"] {
        let res = h
            .client
            .put(url(""))
            .query(&[("level", good)])
            .send()
            .await
            .unwrap();
        assert_eq!(res.status(), 200, "{good}");
    }
}

#[tokio::test]
async fn counting_switch_refuses_other_words_in_plain_text() {
    let h = Harness::start().await;
    let res = h
        .client
        .put(h.admin_url("/debug/allocs?counting=maybe"))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 400);
    let body: Value = res.json().await.unwrap();
    assert_eq!(body["error"], "invalid_parameter");
    assert_eq!(
        body["message"],
        r#"counting must be on or off (or true/false), got "maybe""#
    );
    let res = h
        .client
        .put(h.admin_url("/debug/allocs"))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 400);
    let body: Value = res.json().await.unwrap();
    let message = body["message"].as_str().unwrap();
    assert!(message.contains("counting"), "{message}");
    assert!(!message.contains("None"), "{message}");
}

#[tokio::test]
async fn wrong_methods_and_unknown_paths_are_json_errors() {
    let h = Harness::start().await;
    for (method, path, allow) in [
        (reqwest::Method::DELETE, "/metrics", "GET"),
        (reqwest::Method::POST, "/debug/log-level", "PUT"),
        (reqwest::Method::POST, "/debug/allocs", "PUT"),
        (reqwest::Method::PUT, "/debug/pprof/profile", "GET"),
    ] {
        let res = h
            .client
            .request(method.clone(), h.admin_url(path))
            .send()
            .await
            .unwrap();
        assert_eq!(res.status(), 405, "{method} {path}");
        let allowed = res.headers()["allow"].to_str().unwrap().to_string();
        assert!(allowed.contains(allow), "{method} {path}: Allow {allowed}");
        assert_json_error(res, "method_not_allowed").await;
    }
    for path in ["/", "/debug", "/debug/pprof/nothing"] {
        let res = h.client.get(h.admin_url(path)).send().await.unwrap();
        assert_eq!(res.status(), 404, "{path}");
        assert_json_error(res, "not_found").await;
    }
}

async fn assert_json_error(res: reqwest::Response, kind: &str) {
    let content_type = res.headers()["content-type"].to_str().unwrap().to_string();
    assert!(
        content_type.starts_with("application/json"),
        "{content_type}"
    );
    let body: Value = res.json().await.unwrap();
    assert_eq!(body["error"], kind, "{body}");
    assert!(
        body["message"].as_str().is_some_and(|m| !m.is_empty()),
        "{body}"
    );
}
