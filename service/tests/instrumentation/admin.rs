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
