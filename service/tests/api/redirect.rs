//! `GET /{code}`.

use serde_json::json;

use crate::helpers::{assert_error, spawn_app};

#[tokio::test]
async fn redirects_with_302_and_location() {
    let app = spawn_app().await;
    let created = app.create_url("https://example.com/target?q=1#frag").await;
    let response = app.redirect(&created.code).await;
    assert_eq!(response.status(), 302);
    assert_eq!(
        response.headers()["location"],
        "https://example.com/target?q=1#frag"
    );
    assert_eq!(response.content_length(), Some(0));
}

#[tokio::test]
async fn head_redirects_too() {
    let app = spawn_app().await;
    let created = app.create_url("https://example.com/").await;
    let response = app
        .client
        .head(app.url(&format!("/{}", created.code)))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 302);
    assert_eq!(response.headers()["location"], "https://example.com/");
}

#[tokio::test]
async fn percent_encoded_codes_resolve() {
    let app = spawn_app().await;
    app.create_ok(json!({ "url": "https://example.com/", "code": "abc" }))
        .await;
    assert_eq!(app.redirect("ab%63").await.status(), 302);
}

#[tokio::test]
async fn unknown_code_is_404() {
    let app = spawn_app().await;
    assert_error(app.redirect("nosuchcode").await, 404, "not_found").await;
    let long = "x".repeat(100);
    assert_error(app.redirect(&long).await, 404, "not_found").await;
}

#[tokio::test]
async fn expired_link_is_410() {
    let app = spawn_app().await;
    let created = app
        .create_ok(json!({ "url": "https://example.com/", "ttl_seconds": 60 }))
        .await;
    assert_eq!(app.redirect(&created.code).await.status(), 302);
    app.clock.advance(59);
    assert_eq!(app.redirect(&created.code).await.status(), 302);
    app.clock.advance(1);
    assert_error(app.redirect(&created.code).await, 410, "gone").await;
}

#[tokio::test]
async fn admin_routes_are_not_on_the_public_listener() {
    let app = spawn_app().await;
    assert_error(app.get("/metrics").await, 404, "not_found").await;
    let admin = app
        .client
        .get(format!("http://{}/metrics", app.admin_addr))
        .send()
        .await
        .unwrap();
    assert_eq!(admin.status(), 200);
    let text = admin.text().await.unwrap();
    assert!(text.contains("linkr_http_requests_total"), "{text}");
    assert!(text.contains("route=\"/{code}\""), "route pattern label");
}
