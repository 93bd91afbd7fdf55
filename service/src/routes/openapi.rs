//! `GET /openapi.json`: the OpenAPI 3 document, generated from the handlers and types.

use std::sync::LazyLock;

use axum::body::Body;
use axum::http::header::CONTENT_TYPE;
use axum::http::{HeaderValue, StatusCode};
use axum::response::Response;
use bytes::Bytes;
use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::openapi::{RefOr, Schema};
use utoipa::{Modify, Number, OpenApi};

use crate::domain::code::{MAX_CODE_LEN, schema_pattern};
use crate::domain::{MAX_URL_BYTES, URL_SCHEMA_PATTERN};
use crate::routes::links::MAX_TTL_SECONDS;

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
    modifiers(&BearerAuth, &CreateLimits, &ServerLimits),
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

/// The create body's limits, from the constants the handler checks them with: the URL's
/// length and a pattern every string of which the server accepts, the code's rule, the
/// largest `ttl_seconds`. Schema-valid bodies are then accepted (schemathesis checks it).
struct CreateLimits;

impl Modify for CreateLimits {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let schemas = &mut openapi
            .components
            .as_mut()
            .expect("the document has components")
            .schemas;
        let Some(RefOr::T(Schema::Object(create))) = schemas.get_mut("CreateLink") else {
            panic!("CreateLink is an object schema");
        };
        let url = field(create, "url");
        url.max_length = Some(MAX_URL_BYTES);
        url.pattern = Some(URL_SCHEMA_PATTERN.into());
        let code = field(create, "code");
        code.min_length = Some(1);
        code.max_length = Some(MAX_CODE_LEN);
        code.pattern = Some(schema_pattern());
        let ttl = field(create, "ttl_seconds");
        ttl.maximum = Some(Number::UInt(
            usize::try_from(MAX_TTL_SECONDS).expect("fits a usize on 64-bit targets"),
        ));
    }
}

/// Answers of the server's limits rather than of a handler, on every API and redirect
/// operation: 408 when a request or its body stalls past its timeout, 503 when the in-flight
/// limit sheds a request or a scale-out backend is unavailable (both with `Retry-After`).
struct ServerLimits;

impl Modify for ServerLimits {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        use utoipa::openapi::{ContentBuilder, Ref, ResponseBuilder};
        let error = |description: &str| {
            ResponseBuilder::new()
                .description(description)
                .content(
                    "application/json",
                    ContentBuilder::new()
                        .schema(Some(Ref::from_schema_name("ErrorBody")))
                        .build(),
                )
                .build()
        };
        for path in ["/v1/links", "/v1/links/{code}", "/{code}"] {
            let item = openapi
                .paths
                .paths
                .get_mut(path)
                .unwrap_or_else(|| panic!("{path} is in the document"));
            for operation in [&mut item.get, &mut item.post, &mut item.delete]
                .into_iter()
                .flatten()
            {
                let responses = &mut operation.responses.responses;
                responses.insert(
                    "408".into(),
                    RefOr::T(error("The request or its body stalled past its timeout")),
                );
                responses.insert(
                    "503".into(),
                    RefOr::T(error(
                        "Overloaded (the in-flight limit shed it) or a scale-out backend is \
                         unavailable; Retry-After says when to try again",
                    )),
                );
            }
        }
    }
}

fn field<'a>(
    object: &'a mut utoipa::openapi::schema::Object,
    name: &str,
) -> &'a mut utoipa::openapi::schema::Object {
    match object.properties.get_mut(name) {
        Some(RefOr::T(Schema::Object(field))) => field,
        _ => panic!("{name} is an inline object schema"),
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_create_body_schema_carries_the_handlers_limits() {
        let doc: serde_json::Value = serde_json::from_slice(&DOCUMENT).unwrap();
        let props = &doc["components"]["schemas"]["CreateLink"]["properties"];
        assert_eq!(props["url"]["maxLength"], 2048);
        assert_eq!(props["url"]["pattern"], URL_SCHEMA_PATTERN);
        assert_eq!(props["code"]["maxLength"], 64);
        assert!(
            props["code"]["pattern"]
                .as_str()
                .unwrap()
                .contains("[Hh][Ee][Aa][Ll][Tt][Hh][Zz]|")
        );
        assert_eq!(props["ttl_seconds"]["maximum"], MAX_TTL_SECONDS);
        assert_eq!(props["ttl_seconds"]["minimum"], 1);
    }

    #[test]
    fn the_server_limits_answers_are_documented_on_every_api_operation() {
        let doc: serde_json::Value = serde_json::from_slice(&DOCUMENT).unwrap();
        for (path, method) in [
            ("/v1/links", "post"),
            ("/v1/links/{code}", "get"),
            ("/v1/links/{code}", "delete"),
            ("/{code}", "get"),
        ] {
            let responses = &doc["paths"][path][method]["responses"];
            for status in ["408", "503"] {
                assert_eq!(
                    responses[status]["content"]["application/json"]["schema"]["$ref"],
                    "#/components/schemas/ErrorBody",
                    "{method} {path} {status}"
                );
            }
        }
    }
}
