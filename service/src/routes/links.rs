//! `/v1/links`: create, read (with clicks) and delete short links.

use axum::extract::rejection::PathRejection;
use axum::extract::{Path, State};
use axum::http::HeaderValue;
use axum::http::StatusCode;
use axum::http::header::LOCATION;
use axum::response::Response;
use serde::{Deserialize, Serialize, Serializer};
use utoipa::ToSchema;

use crate::app::AppState;
use crate::auth::Caller;
use crate::domain::{ShortCode, TargetUrl};
use crate::encode::json::{EncodeError, JsonWriter, Timestamp, WriteJson};
use crate::encode::write_json_response;
use crate::error::{ApiError, ErrorBody, Result};
use crate::routes::JsonBody;
use crate::store::{Deleter, LinkInfo, NewLink};

/// Longest accepted `ttl_seconds` (100 years).
pub const MAX_TTL_SECONDS: u64 = 100 * 365 * 24 * 3600;

/// `POST /v1/links` body.
#[derive(Debug, Deserialize, ToSchema)]
pub struct CreateLink {
    /// Target: an absolute http(s) URL of at most 2048 bytes.
    #[schema(example = "https://example.com/a/long/path")]
    pub url: String,
    /// Custom alias, `[A-Za-z0-9_-]{1,64}`; a random base62 code when absent.
    #[schema(example = "my-alias")]
    pub code: Option<String>,
    /// Lifetime in seconds; the link never expires when absent.
    #[schema(minimum = 1, example = 86400)]
    #[serde(
        default,
        deserialize_with = "crate::domain::seconds::optional_whole_seconds"
    )]
    pub ttl_seconds: Option<u64>,
}

/// `201` body of `POST /v1/links`. Written by hand ([`WriteJson`]); the `Serialize` derive is
/// the reference it is tested against and what the OpenAPI document describes.
#[derive(Debug, Serialize, ToSchema)]
pub struct LinkCreated<'a> {
    pub code: &'a str,
    pub url: &'a str,
    /// The public short link.
    #[schema(value_type = String, example = "http://127.0.0.1:8080/my-alias")]
    pub short_url: ShortUrl<'a>,
    /// RFC 3339.
    #[schema(value_type = String, example = "2025-01-01T12:00:00Z")]
    pub created_at: Timestamp,
    /// RFC 3339, or null for a link that never expires.
    #[schema(value_type = Option<String>)]
    pub expires_at: Option<Timestamp>,
}

impl LinkCreated<'static> {
    /// A typical body (an 80-byte URL with an expiry), for tests and benchmarks.
    pub fn example() -> Self {
        Self {
            code: "q3Xz9bK",
            url: "https://www.example.com/articles/2024/06/how-we-measure-latency?ref=newsletter",
            short_url: ShortUrl {
                public_url: "http://127.0.0.1:8080",
                code: "q3Xz9bK",
            },
            created_at: Timestamp(1_718_000_000),
            expires_at: Some(Timestamp(1_718_086_400)),
        }
    }
}

/// `200` body of `GET /v1/links/{code}`.
#[derive(Debug, Serialize, ToSchema)]
pub struct LinkStats<'a> {
    pub code: &'a str,
    pub url: &'a str,
    /// Redirects served, including ones not yet flushed to disk.
    pub clicks: u64,
    /// RFC 3339.
    #[schema(value_type = String, example = "2025-01-01T12:00:00Z")]
    pub created_at: Timestamp,
    /// RFC 3339, or null for a link that never expires.
    #[schema(value_type = Option<String>)]
    pub expires_at: Option<Timestamp>,
}

/// `{public_url}/{code}`, written without building a `String`.
#[derive(Debug, Clone, Copy)]
pub struct ShortUrl<'a> {
    pub public_url: &'a str,
    pub code: &'a str,
}

impl Serialize for ShortUrl<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        s.collect_str(&format_args!("{}/{}", self.public_url, self.code))
    }
}

/// Room for the fixed parts of a link body: keys, quotes, two timestamps, a count.
const LINK_BODY_OVERHEAD: usize = 160;

impl WriteJson for LinkCreated<'_> {
    fn write_json(&self, out: &mut JsonWriter<'_>) -> std::result::Result<(), EncodeError> {
        out.reserve(
            LINK_BODY_OVERHEAD
                + 2 * self.code.len()
                + self.url.len()
                + self.short_url.public_url.len(),
        );
        out.raw(r#"{"code":"#);
        out.string(self.code);
        out.raw(r#","url":"#);
        out.string(self.url);
        out.raw(r#","short_url":"#);
        out.string_parts(&[self.short_url.public_url, "/", self.short_url.code]);
        write_times_and_close(out, self.created_at, self.expires_at)
    }
}

impl WriteJson for LinkStats<'_> {
    fn write_json(&self, out: &mut JsonWriter<'_>) -> std::result::Result<(), EncodeError> {
        out.reserve(LINK_BODY_OVERHEAD + self.code.len() + self.url.len());
        out.raw(r#"{"code":"#);
        out.string(self.code);
        out.raw(r#","url":"#);
        out.string(self.url);
        out.raw(r#","clicks":"#);
        out.u64(self.clicks);
        write_times_and_close(out, self.created_at, self.expires_at)
    }
}

/// The two fields both link bodies end with, and the closing brace.
#[inline]
fn write_times_and_close(
    out: &mut JsonWriter<'_>,
    created_at: Timestamp,
    expires_at: Option<Timestamp>,
) -> std::result::Result<(), EncodeError> {
    out.raw(r#","created_at":"#);
    out.timestamp(created_at.0)?;
    out.raw(r#","expires_at":"#);
    out.opt_timestamp(expires_at.map(|t| t.0))?;
    out.raw("}");
    Ok(())
}

/// Creates a link; answers only once it is durable.
#[utoipa::path(post, path = "/v1/links", tag = "links", request_body = CreateLink,
    security(("api_key" = [])),
    responses(
        (status = 201, description = "Created (durable)", body = LinkCreated,
            headers(("Location" = String, description = "The link's resource, /v1/links/{code}"))),
        (status = 400, description = "Malformed JSON", body = ErrorBody),
        (status = 401, description = "Missing or unknown API key", body = ErrorBody),
        (status = 409, description = "The custom code is taken", body = ErrorBody),
        (status = 413, description = "Body larger than 16 KiB", body = ErrorBody),
        (status = 415, description = "Content-Type is not application/json", body = ErrorBody),
        (status = 422, description = "Invalid URL, code or ttl_seconds", body = ErrorBody),
        (status = 429, description = "Rate limit exceeded", body = ErrorBody)))]
pub async fn create(
    State(state): State<AppState>,
    caller: Caller,
    JsonBody(body): JsonBody<CreateLink>,
) -> Result<Response> {
    let url = TargetUrl::parse(&body.url)?;
    let code = body.code.as_deref().map(ShortCode::parse).transpose()?;
    let ttl_seconds = match body.ttl_seconds {
        Some(0) => {
            return Err(ApiError::InvalidTtl(
                "ttl_seconds must be at least 1".into(),
            ));
        }
        Some(t) if t > MAX_TTL_SECONDS => {
            return Err(ApiError::InvalidTtl(format!(
                "ttl_seconds must be at most {MAX_TTL_SECONDS} (100 years)"
            )));
        }
        other => other,
    };
    let link = state
        .store
        .create(NewLink {
            url,
            code,
            owner: caller.name,
            ttl_seconds,
        })
        .await?;
    let code = link.code.as_str();
    let created = LinkCreated {
        code,
        url: &link.url,
        short_url: ShortUrl {
            public_url: &state.public_url,
            code,
        },
        created_at: Timestamp(link.created_at),
        expires_at: link.expires_at.map(Timestamp),
    };
    let mut response = write_json_response(StatusCode::CREATED, &created);
    if let Ok(location) = HeaderValue::try_from(format!("/v1/links/{code}")) {
        response.headers_mut().insert(LOCATION, location);
    }
    Ok(response)
}

/// A link and its click count: its owner or an admin key.
#[utoipa::path(get, path = "/v1/links/{code}", tag = "links",
    params(("code" = String, Path, description = "Short code")),
    security(("api_key" = [])),
    responses(
        (status = 200, description = "The link", body = LinkStats),
        (status = 401, description = "Missing or unknown API key", body = ErrorBody),
        (status = 403, description = "Not the owner and not an admin key", body = ErrorBody),
        (status = 404, description = "Unknown code", body = ErrorBody),
        (status = 429, description = "Rate limit exceeded", body = ErrorBody)))]
pub async fn stats(
    State(state): State<AppState>,
    caller: Caller,
    code: std::result::Result<Path<String>, PathRejection>,
) -> Result<Response> {
    let (_, link) = find(&state, code).await?;
    if !caller.admin && link.owner != caller.name {
        return Err(ApiError::Forbidden);
    }
    Ok(write_json_response(StatusCode::OK, &stats_body(&link)))
}

/// The link named by the path; a path that cannot hold a code is a 404 like an unknown code.
async fn find(
    state: &AppState,
    code: std::result::Result<Path<String>, PathRejection>,
) -> Result<(String, LinkInfo)> {
    let Path(code) = code.map_err(|_| ApiError::NotFound)?;
    let link = state
        .store
        .link_info(&code)
        .await?
        .ok_or(ApiError::NotFound)?;
    Ok((code, link))
}

fn stats_body(link: &LinkInfo) -> LinkStats<'_> {
    LinkStats {
        code: link.code.as_str(),
        url: &link.url,
        clicks: link.clicks,
        created_at: Timestamp(link.created_at),
        expires_at: link.expires_at.map(Timestamp),
    }
}

/// Deletes a link: its owner or an admin key (checked by the store in the same step as the
/// delete, so a link re-created under the same code meanwhile by another key stays).
#[utoipa::path(delete, path = "/v1/links/{code}", tag = "links",
    params(("code" = String, Path, description = "Short code")),
    security(("api_key" = [])),
    responses(
        (status = 204, description = "Deleted"),
        (status = 401, description = "Missing or unknown API key", body = ErrorBody),
        (status = 403, description = "Not the owner and not an admin key", body = ErrorBody),
        (status = 404, description = "Unknown code", body = ErrorBody),
        (status = 429, description = "Rate limit exceeded", body = ErrorBody)))]
pub async fn delete(
    State(state): State<AppState>,
    caller: Caller,
    code: std::result::Result<Path<String>, PathRejection>,
) -> Result<StatusCode> {
    let Path(code) = code.map_err(|_| ApiError::NotFound)?;
    let by = if caller.admin {
        Deleter::Admin
    } else {
        Deleter::Owner(caller.name)
    };
    state.store.delete_as(&code, by).await?;
    Ok(StatusCode::NO_CONTENT)
}

#[cfg(test)]
mod tests {
    use bytes::BytesMut;

    use super::*;

    fn hand_written<T: WriteJson>(value: &T) -> String {
        let mut buf = BytesMut::new();
        value.write_json(&mut JsonWriter::new(&mut buf)).unwrap();
        String::from_utf8(buf.to_vec()).unwrap()
    }

    const URLS: &[&str] = &[
        "https://www.example.com/articles/2024/06/how-we-measure-latency?ref=newsletter",
        "http://h/",
        r#"http://h/?q=a\b"c"#,
        "http://h/\u{1}\u{1f}\t\n",
        "http://bücher.example/ö?ü=✓",
    ];

    #[test]
    fn link_bodies_are_byte_for_byte_what_serde_json_writes() {
        for url in URLS {
            for expires_at in [None, Some(Timestamp(1_718_086_400))] {
                for (code, public_url) in [("q3Xz9bK", "http://127.0.0.1:8080"), ("a-b_c", "")] {
                    let created = LinkCreated {
                        code,
                        url,
                        short_url: ShortUrl { public_url, code },
                        created_at: Timestamp(1_718_000_000),
                        expires_at,
                    };
                    assert_eq!(
                        hand_written(&created),
                        serde_json::to_string(&created).unwrap()
                    );
                    let stats = LinkStats {
                        code,
                        url,
                        clicks: u64::MAX,
                        created_at: Timestamp(-1),
                        expires_at,
                    };
                    assert_eq!(hand_written(&stats), serde_json::to_string(&stats).unwrap());
                }
            }
        }
    }

    #[test]
    fn an_unrepresentable_timestamp_is_an_error_not_a_body() {
        let stats = LinkStats {
            code: "c",
            url: "http://h/",
            clicks: 0,
            created_at: Timestamp(0),
            expires_at: Some(Timestamp(i64::MAX)),
        };
        let mut buf = BytesMut::new();
        assert_eq!(
            stats.write_json(&mut JsonWriter::new(&mut buf)),
            Err(EncodeError::TimestampOutOfRange(i64::MAX))
        );
        let response = write_json_response(StatusCode::OK, &stats);
        assert_eq!(response.status(), StatusCode::INTERNAL_SERVER_ERROR);
    }
}
