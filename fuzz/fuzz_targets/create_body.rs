//! The create body's extractor (`JsonBody<CreateLink>`) on any bytes, then the handler's
//! validation of what it yields: never panics; a refusal is 400 (not JSON) or 422 (JSON of the
//! wrong shape), exactly as serde_json tells them apart.
#![no_main]

use std::sync::OnceLock;

use axum::body::Body;
use axum::extract::FromRequest;
use axum::http::{Request, StatusCode, header};
use libfuzzer_sys::fuzz_target;
use linkr::domain::{ShortCode, TargetUrl};
use linkr::routes::JsonBody;
use linkr::routes::links::CreateLink;

fn runtime() -> &'static tokio::runtime::Runtime {
    static RT: OnceLock<tokio::runtime::Runtime> = OnceLock::new();
    RT.get_or_init(|| {
        tokio::runtime::Builder::new_current_thread()
            .build()
            .expect("runtime")
    })
}

fuzz_target!(|data: &[u8]| {
    let request = Request::post("/v1/links")
        .header(header::CONTENT_TYPE, "application/json")
        .body(Body::from(data.to_vec()))
        .expect("request");
    let parsed = runtime().block_on(JsonBody::<CreateLink>::from_request(request, &()));
    let well_formed = serde_json::from_slice::<serde::de::IgnoredAny>(data).is_ok();
    match parsed {
        Ok(JsonBody(body)) => {
            assert!(well_formed);
            let _ = TargetUrl::parse(&body.url);
            let _ = body.code.as_deref().map(ShortCode::parse);
        }
        Err(e) if well_formed => assert_eq!(e.status(), StatusCode::UNPROCESSABLE_ENTITY),
        Err(e) => assert_eq!(e.status(), StatusCode::BAD_REQUEST),
    }
});
