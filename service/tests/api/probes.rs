//! `/healthz`, `/readyz`, `/startupz`, `/openapi.json`.

use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use axum::http::Request;
use linkr::metrics::Metrics;
use linkr::routes::{Health, startup_router};
use serde_json::Value;
use tower::ServiceExt;

use crate::helpers::{assert_error, spawn_app, spawn_app_with};

#[tokio::test]
async fn healthz_readyz_startupz_answer_200_when_running() {
    let app = spawn_app().await;
    let health = app.get("/healthz").await;
    assert_eq!(health.status(), 200);
    assert_eq!(health.json::<Value>().await.unwrap()["status"], "ok");

    let ready = app.get("/readyz").await;
    assert_eq!(ready.status(), 200);
    let body: Value = ready.json().await.unwrap();
    assert_eq!(body["status"], "ready");
    assert_eq!(body["checks"]["store"]["ok"], true);
    assert_eq!(body["checks"]["shutting_down"]["ok"], true);

    let started = app.get("/startupz").await;
    assert_eq!(started.status(), 200);
}

#[tokio::test]
async fn readyz_is_503_with_checks_once_shutdown_begins() {
    let mut app = spawn_app_with(|c| c.shutdown_delay = Duration::from_secs(2)).await;
    app.signal_stop();
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    let body = loop {
        let r = app.get("/readyz").await;
        if r.status() == 503 {
            break assert_error(r, 503, "not_ready").await;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "readyz never turned 503"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    };
    assert_eq!(body["status"], "not_ready");
    assert_eq!(body["checks"]["store"]["ok"], true);
    assert_eq!(body["checks"]["shutting_down"]["ok"], false);
    assert_eq!(
        app.get("/healthz").await.status(),
        200,
        "liveness unaffected"
    );
    let (_, result) = app.stop().await;
    result.unwrap();
}

async fn oneshot(router: &axum::Router, path: &str) -> (u16, Value) {
    let response = router
        .clone()
        .oneshot(Request::get(path).body(Body::empty()).unwrap())
        .await
        .unwrap();
    let status = response.status().as_u16();
    let bytes = axum::body::to_bytes(response.into_body(), 1 << 20)
        .await
        .unwrap();
    (status, serde_json::from_slice(&bytes).unwrap())
}

#[tokio::test]
async fn while_the_store_loads_probes_say_starting_and_the_api_is_503() {
    let health = Arc::new(Health::default());
    let router = startup_router(health.clone(), Metrics::new(), false);
    assert_eq!(oneshot(&router, "/healthz").await.0, 200);
    let (status, body) = oneshot(&router, "/startupz").await;
    assert_eq!((status, body["error"].as_str()), (503, Some("starting")));
    let (status, body) = oneshot(&router, "/readyz").await;
    assert_eq!(status, 503);
    assert_eq!(body["checks"]["store"]["ok"], false);
    for path in ["/v1/links/abc", "/abc"] {
        let (status, body) = oneshot(&router, path).await;
        assert_eq!(
            (status, body["error"].as_str()),
            (503, Some("unavailable")),
            "{path}"
        );
    }
}

#[tokio::test]
async fn openapi_document_describes_the_api() {
    let app = spawn_app().await;
    let response = app.get("/openapi.json").await;
    assert_eq!(response.status(), 200);
    assert_eq!(response.headers()["content-type"], "application/json");
    let doc: Value = response.json().await.unwrap();
    assert!(doc["openapi"].as_str().unwrap().starts_with("3."));
    let paths = doc["paths"].as_object().unwrap();
    for path in [
        "/v1/links",
        "/v1/links/{code}",
        "/{code}",
        "/healthz",
        "/readyz",
        "/startupz",
    ] {
        assert!(paths.contains_key(path), "{path} missing");
    }
    let create = &doc["paths"]["/v1/links"]["post"];
    for status in ["201", "400", "401", "409", "413", "422", "429"] {
        assert!(
            create["responses"].get(status).is_some(),
            "POST /v1/links {status}"
        );
    }
    let schemas = doc["components"]["schemas"].as_object().unwrap();
    for schema in ["CreateLink", "LinkCreated", "LinkStats", "ErrorBody"] {
        assert!(schemas.contains_key(schema), "{schema} missing");
    }
    // The bodies are written by hand; the document must still describe what is sent.
    let created = &schemas["LinkCreated"]["properties"];
    for field in ["code", "url", "short_url", "created_at"] {
        assert_eq!(created[field]["type"], "string", "LinkCreated.{field}");
    }
    assert_eq!(
        schemas["LinkStats"]["properties"]["clicks"]["type"],
        "integer"
    );
    assert_eq!(
        schemas["LinkStats"]["properties"]["expires_at"]["type"],
        serde_json::json!(["string", "null"])
    );
    assert_eq!(
        doc["components"]["securitySchemes"]["api_key"]["scheme"],
        "bearer"
    );
}
