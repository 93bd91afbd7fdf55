//! `GET /openapi.json`: the OpenAPI 3 document, generated from the handlers and types.

use std::sync::LazyLock;

use axum::body::Body;
use axum::http::header::CONTENT_TYPE;
use axum::http::{HeaderValue, StatusCode};
use axum::response::Response;
use bytes::Bytes;
use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::{Modify, OpenApi};

use super::{health, links, redirect};

#[derive(OpenApi)]
#[openapi(
    info(
        title = "linkr",
        description = "A URL shortener on an embedded durable store. Errors are \
                       `{\"error\": kind, \"message\": text}` on every 4xx/5xx."
    ),
    paths(
        links::create,
        links::stats,
        links::delete,
        redirect::redirect,
        health::healthz,
        health::readyz,
        health::startupz,
        serve,
    ),
    components(schemas(
        links::CreateLink,
        links::LinkCreated,
        links::LinkStats,
        crate::error::ErrorBody,
        health::Status,
        health::Readiness,
        health::Checks,
        health::Check,
    )),
    modifiers(&BearerAuth),
    tags(
        (name = "links", description = "Short links and redirects"),
        (name = "probes", description = "Liveness, readiness and start-up probes"),
        (name = "meta", description = "This document"),
    )
)]
pub struct ApiDoc;

struct BearerAuth;

impl Modify for BearerAuth {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "api_key",
            SecurityScheme::Http(
                HttpBuilder::new()
                    .scheme(HttpAuthScheme::Bearer)
                    .description(Some(
                        "An API key from LINKR_API_KEYS: `Authorization: Bearer <key>`",
                    ))
                    .build(),
            ),
        );
    }
}

static DOCUMENT: LazyLock<Bytes> = LazyLock::new(|| {
    Bytes::from(
        ApiDoc::openapi()
            .to_json()
            .expect("the OpenAPI document serialises"),
    )
});

/// The OpenAPI document of this API.
#[utoipa::path(get, path = "/openapi.json", tag = "meta",
    responses((status = 200, description = "OpenAPI 3 document", content_type = "application/json")))]
pub async fn serve() -> Response {
    let mut response = Response::new(Body::from(DOCUMENT.clone()));
    *response.status_mut() = StatusCode::OK;
    response
        .headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    response
}
