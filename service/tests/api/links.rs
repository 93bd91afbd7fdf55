//! `POST /v1/links`, `GET /v1/links/{code}`, `DELETE /v1/links/{code}`.

use serde_json::{Value, json};

use crate::helpers::{ALICE, BOB, ROOT, T0, assert_error, spawn_app};

#[tokio::test]
async fn create_returns_201_with_a_generated_code() {
    let app = spawn_app().await;
    let response = app
        .create(ALICE, json!({ "url": "https://example.com/some/page?x=1" }))
        .await;
    assert_eq!(response.status(), 201);
    let location = response.headers()["location"].to_str().unwrap().to_string();
    let body: Value = response.json().await.unwrap();
    let code = body["code"].as_str().unwrap();
    assert_eq!(code.len(), 7);
    assert!(code.bytes().all(|b| b.is_ascii_alphanumeric()), "{code}");
    assert_eq!(location, format!("/v1/links/{code}"));
    assert_eq!(body["url"], "https://example.com/some/page?x=1");
    assert_eq!(body["short_url"], format!("{}/{code}", app.base));
    let created = time::OffsetDateTime::parse(
        body["created_at"].as_str().unwrap(),
        &time::format_description::well_known::Rfc3339,
    )
    .unwrap();
    assert_eq!(created.unix_timestamp(), T0);
    assert_eq!(body["expires_at"], Value::Null);
}

#[tokio::test]
async fn generated_codes_differ() {
    let app = spawn_app().await;
    let mut codes = std::collections::HashSet::new();
    for _ in 0..20 {
        codes.insert(app.create_url("https://example.com/").await.code);
    }
    assert_eq!(codes.len(), 20);
}

#[tokio::test]
async fn create_with_custom_code_and_ttl() {
    let app = spawn_app().await;
    let created = app
        .create_ok(
            json!({ "url": "http://example.org/", "code": "my_Alias-1", "ttl_seconds": 3600 }),
        )
        .await;
    assert_eq!(created.code, "my_Alias-1");
    assert_eq!(created.short_url, format!("{}/my_Alias-1", app.base));
    assert_eq!(created.expires_at.as_deref(), Some("2025-06-15T16:06:40Z"));
    assert!(created.created_at.starts_with("2025-06-15T15:06:40"));
}

#[tokio::test]
async fn public_url_is_the_base_of_short_urls() {
    let app = crate::helpers::spawn_app_with(|c| {
        c.public_url = Some("https://sho.rt".into());
    })
    .await;
    let created = app
        .create_ok(json!({ "url": "https://example.com/", "code": "pub" }))
        .await;
    assert_eq!(created.short_url, "https://sho.rt/pub");
}

#[tokio::test]
async fn taken_code_is_409() {
    let app = spawn_app().await;
    app.create_ok(json!({ "url": "https://a.example/", "code": "taken" }))
        .await;
    let response = app
        .create(BOB, json!({ "url": "https://b.example/", "code": "taken" }))
        .await;
    assert_error(response, 409, "code_taken").await;
}

#[tokio::test]
async fn invalid_urls_are_422() {
    let app = spawn_app().await;
    let too_long = format!("https://example.com/{}", "a".repeat(2100));
    for url in [
        "ftp://example.com/file",
        "not a url",
        "https://",
        "/relative",
        too_long.as_str(),
    ] {
        let response = app.create(ALICE, json!({ "url": url })).await;
        assert_error(response, 422, "invalid_url").await;
    }
}

#[tokio::test]
async fn invalid_codes_are_422() {
    let app = spawn_app().await;
    let too_long = "a".repeat(65);
    for code in [
        "has space",
        "slash/y",
        "",
        "emoji✓",
        too_long.as_str(),
        "healthz",
        "v1",
    ] {
        let response = app
            .create(
                ALICE,
                json!({ "url": "https://example.com/", "code": code }),
            )
            .await;
        assert_error(response, 422, "invalid_code").await;
    }
}

#[tokio::test]
async fn invalid_ttl_is_422() {
    let app = spawn_app().await;
    let response = app
        .create(
            ALICE,
            json!({ "url": "https://example.com/", "ttl_seconds": 0 }),
        )
        .await;
    assert_error(response, 422, "invalid_ttl").await;
    let response = app
        .create(
            ALICE,
            json!({ "url": "https://example.com/", "ttl_seconds": -5 }),
        )
        .await;
    assert_error(response, 422, "invalid_request").await;
}

#[tokio::test]
async fn malformed_json_is_400() {
    let app = spawn_app().await;
    for body in ["{\"url\": ", "not json", "[1,2"] {
        let response = app
            .client
            .post(app.url("/v1/links"))
            .bearer_auth(ALICE)
            .header("content-type", "application/json")
            .body(body)
            .send()
            .await
            .unwrap();
        assert_error(response, 400, "invalid_json").await;
    }
}

#[tokio::test]
async fn wrong_shape_is_422_and_wrong_content_type_is_415() {
    let app = spawn_app().await;
    let response = app
        .create(ALICE, json!({ "link": "https://example.com/" }))
        .await;
    assert_error(response, 422, "invalid_request").await;
    let response = app
        .client
        .post(app.url("/v1/links"))
        .bearer_auth(ALICE)
        .header("content-type", "text/plain")
        .body(r#"{"url":"https://example.com/"}"#)
        .send()
        .await
        .unwrap();
    assert_error(response, 415, "unsupported_media_type").await;
}

#[tokio::test]
async fn body_over_16_kib_is_413() {
    let app = spawn_app().await;
    let url = format!("https://example.com/{}", "a".repeat(17 * 1024));
    let response = app.create(ALICE, json!({ "url": url })).await;
    assert_error(response, 413, "payload_too_large").await;
}

#[tokio::test]
async fn stats_show_the_link_and_its_clicks() {
    let app = spawn_app().await;
    let created = app.create_url("https://example.com/counted").await;
    for _ in 0..3 {
        assert_eq!(app.redirect(&created.code).await.status(), 302);
    }
    let response = app.stats(ALICE, &created.code).await;
    assert_eq!(response.status(), 200);
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["code"], created.code.as_str());
    assert_eq!(body["url"], "https://example.com/counted");
    assert_eq!(body["clicks"], 3);
    assert_eq!(body["created_at"], created.created_at.as_str());
    assert_eq!(body["expires_at"], Value::Null);
}

#[tokio::test]
async fn stats_of_an_unknown_code_is_404() {
    let app = spawn_app().await;
    assert_error(app.stats(ALICE, "nosuch").await, 404, "not_found").await;
}

#[tokio::test]
async fn owner_deletes_with_204_then_it_is_gone() {
    let app = spawn_app().await;
    let created = app.create_url("https://example.com/").await;
    assert_eq!(app.delete(ALICE, &created.code).await.status(), 204);
    assert_error(app.redirect(&created.code).await, 404, "not_found").await;
    assert_error(app.stats(ALICE, &created.code).await, 404, "not_found").await;
    assert_error(app.delete(ALICE, &created.code).await, 404, "not_found").await;
}

#[tokio::test]
async fn another_callers_delete_is_403_but_admin_may() {
    let app = spawn_app().await;
    let created = app.create_url("https://example.com/").await;
    assert_error(app.delete(BOB, &created.code).await, 403, "forbidden").await;
    assert_eq!(app.redirect(&created.code).await.status(), 302);
    assert_eq!(app.delete(ROOT, &created.code).await.status(), 204);
}

#[tokio::test]
async fn delete_of_an_unknown_code_is_404() {
    let app = spawn_app().await;
    assert_error(app.delete(ROOT, "nosuch").await, 404, "not_found").await;
}

#[tokio::test]
async fn missing_or_wrong_keys_are_401_with_www_authenticate() {
    let app = spawn_app().await;
    let created = app.create_url("https://example.com/").await;
    let requests = [
        app.client
            .post(app.url("/v1/links"))
            .json(&json!({ "url": "https://e.com/" })),
        app.client
            .post(app.url("/v1/links"))
            .bearer_auth("alice-key-012345678")
            .json(&json!({ "url": "https://e.com/" })),
        app.client
            .get(app.url(&format!("/v1/links/{}", created.code))),
        app.client
            .get(app.url(&format!("/v1/links/{}", created.code)))
            .basic_auth("alice", Some(ALICE)),
        app.client
            .delete(app.url(&format!("/v1/links/{}", created.code)))
            .bearer_auth(format!("{ALICE}x")),
    ];
    for request in requests {
        let response = request.send().await.unwrap();
        assert!(
            response.headers()["www-authenticate"]
                .to_str()
                .unwrap()
                .starts_with("Bearer")
        );
        assert_error(response, 401, "unauthorized").await;
    }
    assert_eq!(
        app.redirect(&created.code).await.status(),
        302,
        "not deleted"
    );
}
