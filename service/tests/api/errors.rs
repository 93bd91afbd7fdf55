//! Every 4xx/5xx is `{"error","message"}` JSON, axum's own rejections included; request ids.

use crate::helpers::{ALICE, assert_error, spawn_app};

#[tokio::test]
async fn unknown_routes_are_json_404() {
    let app = spawn_app().await;
    for path in ["/", "/v1/nothing/here", "/a/b/c"] {
        assert_error(app.get(path).await, 404, "not_found").await;
    }
}

#[tokio::test]
async fn wrong_methods_are_json_405_with_allow() {
    let app = spawn_app().await;
    let response = app.client.put(app.url("/healthz")).send().await.unwrap();
    assert!(
        response.headers()["allow"]
            .to_str()
            .unwrap()
            .contains("GET")
    );
    assert_error(response, 405, "method_not_allowed").await;

    let response = app
        .client
        .get(app.url("/v1/links"))
        .bearer_auth(ALICE)
        .send()
        .await
        .unwrap();
    assert!(
        response.headers()["allow"]
            .to_str()
            .unwrap()
            .contains("POST")
    );
    assert_error(response, 405, "method_not_allowed").await;

    let response = app.client.post(app.url("/somecode")).send().await.unwrap();
    assert_error(response, 405, "method_not_allowed").await;
}

#[tokio::test]
async fn request_ids_are_echoed_or_minted() {
    let app = spawn_app().await;
    let response = app
        .client
        .get(app.url("/healthz"))
        .header("x-request-id", "client-chosen.id:42")
        .send()
        .await
        .unwrap();
    assert_eq!(response.headers()["x-request-id"], "client-chosen.id:42");

    for bad in ["has space".to_string(), "x".repeat(129), "quote\"".into()] {
        let response = app
            .client
            .get(app.url("/nosuch"))
            .header("x-request-id", bad.as_str())
            .send()
            .await
            .unwrap();
        let id = response.headers()["x-request-id"].to_str().unwrap();
        assert_ne!(id, bad);
        assert_eq!(uuid::Uuid::parse_str(id).unwrap().get_version_num(), 4);
    }

    let a = app.get("/healthz").await;
    let b = app.get("/healthz").await;
    assert_ne!(a.headers()["x-request-id"], b.headers()["x-request-id"]);
}
