//! The admin listener's router: metrics, CPU profiles, allocation counters, run-time log level.
//! Never served on the public listener.

use std::sync::Arc;

use axum::Json;
use axum::Router;
use axum::extract::rejection::QueryRejection;
use axum::extract::{Query, Request, State};
use axum::http::{HeaderName, HeaderValue, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use serde::Deserialize;

use crate::alloc;
use crate::auth::{bearer_token, ct_eq_fixed_work};
use crate::config::Secret;
use crate::error::{ApiError, error_response};
use crate::metrics::{Metrics, RouteAllocs, StoreSample};
use crate::middleware::RequestContextLayer;
use crate::profiling::{self, Format, ProfileError, ProfileRequest};

/// Run-time control of the log filter (implemented over tracing-subscriber's reload handle).
pub trait LogLevelControl: Send + Sync {
    /// Replaces the filter with `directives` (`EnvFilter` syntax); `Err` explains a bad filter.
    fn set(&self, directives: &str) -> Result<(), String>;
    /// The filter in effect.
    fn current(&self) -> String;
}

#[derive(Clone)]
pub struct AdminState {
    pub metrics: Arc<Metrics>,
    pub log_level: Arc<dyn LogLevelControl>,
    pub store: Option<crate::store::Store>,
}

/// `GET /metrics`, `GET /debug/pprof/profile`, `GET /debug/pprof/last` (the latest capture
/// again, in any format), `GET /debug/allocs` (`PUT /debug/allocs?counting=on|off` switches
/// counting for overhead measurements), `GET|PUT /debug/log-level`.
pub fn router(state: AdminState) -> Router {
    Router::new()
        .route("/metrics", get(metrics))
        .route("/debug/pprof/profile", get(cpu_profile))
        .route("/debug/pprof/last", get(last_profile))
        .route("/debug/allocs", get(allocs).put(set_counting))
        .route("/debug/log-level", get(log_level).put(set_log_level))
        .fallback(no_route)
        .method_not_allowed_fallback(method_not_allowed)
        // JSON bodies for errors no handler wrote (extractor rejections), request ids, and a
        // JSON 500 if a handler panics; no access log on this listener.
        .layer(RequestContextLayer::new(false))
        .with_state(state)
}

/// `router` requiring `Authorization: Bearer <token>` on every request when `token` is set
/// (compared in constant time); a 401 with `WWW-Authenticate` otherwise. Unset, `router` as is:
/// then keep the admin listener on loopback or behind a network policy.
pub fn protect(router: Router, token: Option<&Secret<String>>) -> Router {
    let Some(token) = token else {
        return router;
    };
    let token: Arc<[u8]> = Arc::from(token.expose().as_bytes());
    router.layer(axum::middleware::from_fn(
        move |req: Request, next: Next| {
            let token = token.clone();
            async move {
                let presented = req
                    .headers()
                    .get(header::AUTHORIZATION)
                    .and_then(bearer_token)
                    .unwrap_or_default();
                if bool::from(ct_eq_fixed_work(&token, presented)) {
                    next.run(req).await
                } else {
                    let mut response = error_response(
                        StatusCode::UNAUTHORIZED,
                        "unauthorized",
                        "the admin listener requires Authorization: Bearer <LINKR_ADMIN_TOKEN>",
                    );
                    response.headers_mut().insert(
                        header::WWW_AUTHENTICATE,
                        HeaderValue::from_static(r#"Bearer realm="linkr-admin""#),
                    );
                    response
                }
            }
        },
    ))
}

async fn no_route() -> ApiError {
    ApiError::NoRoute
}

async fn method_not_allowed() -> ApiError {
    ApiError::MethodNotAllowed
}

#[derive(Debug, thiserror::Error)]
pub enum AdminError {
    #[error("{0}")]
    InvalidParameter(String),
    #[error("no CPU profile has been captured yet")]
    NoProfile,
    #[error(transparent)]
    Profile(#[from] ProfileError),
}

impl IntoResponse for AdminError {
    fn into_response(self) -> Response {
        let (status, kind, message) = match self {
            Self::InvalidParameter(m) | Self::Profile(ProfileError::InvalidParameter(m)) => {
                (StatusCode::BAD_REQUEST, "invalid_parameter", m)
            }
            e @ Self::NoProfile => (StatusCode::NOT_FOUND, "not_found", e.to_string()),
            Self::Profile(e @ ProfileError::Busy) => {
                (StatusCode::CONFLICT, "profile_in_progress", e.to_string())
            }
            Self::Profile(e @ ProfileError::Unavailable(_)) => (
                StatusCode::SERVICE_UNAVAILABLE,
                "profiler_unavailable",
                e.to_string(),
            ),
            Self::Profile(ProfileError::Failed(detail)) => {
                tracing::error!(error = %detail, "CPU profile failed");
                (
                    StatusCode::INTERNAL_SERVER_ERROR,
                    "internal",
                    "the CPU profile could not be captured".to_string(),
                )
            }
        };
        (
            status,
            Json(serde_json::json!({ "error": kind, "message": message })),
        )
            .into_response()
    }
}

fn store_sample(s: &crate::store::StoreStats) -> StoreSample {
    StoreSample {
        links: s.links,
        creates: s.creates,
        deletes: s.deletes,
        commits: s.commits,
        clicks_flushed: s.clicks_flushed,
        click_flushes: s.click_flushes,
        flush_errors: s.flush_errors,
        purged: s.purged,
    }
}

async fn metrics(State(state): State<AdminState>) -> Response {
    if let Some(store) = &state.store {
        state.metrics.observe_store(&store_sample(&store.stats()));
    }
    (
        [(
            header::CONTENT_TYPE,
            HeaderValue::from_static("text/plain; version=0.0.4; charset=utf-8"),
        )],
        state.metrics.render(),
    )
        .into_response()
}

#[derive(Debug, Deserialize)]
struct ProfileQuery {
    seconds: Option<String>,
    frequency: Option<String>,
    format: Option<String>,
    /// Accepted (true or false) so old URLs keep working; ignored: no sampler drops libc now.
    include_libc: Option<String>,
    /// `auto` (default: perf events, else per-thread timers), `perf`, `perf-user`, `timer`,
    /// `itimer`.
    mode: Option<String>,
}

async fn cpu_profile(
    query: Result<Query<ProfileQuery>, QueryRejection>,
) -> Result<Response, AdminError> {
    let Query(q) = query.map_err(|e| AdminError::InvalidParameter(e.body_text()))?;
    let req = ProfileRequest::parse(
        q.seconds.as_deref(),
        q.frequency.as_deref(),
        q.format.as_deref(),
        q.include_libc.as_deref(),
        q.mode.as_deref(),
    )?;
    let profile = profiling::capture(&req).await?;
    tracing::info!(
        seconds = req.duration.as_secs(),
        frequency = req.frequency,
        mode = profile.mode().as_str(),
        samples = profile.samples(),
        sampled_cpu_s = profile.sampled_time().as_secs_f64(),
        process_cpu_s = profile.cpu_time().as_secs_f64(),
        host_steal_s = profile.host_steal().map(|s| s.as_secs_f64()),
        "CPU profile captured"
    );
    render(profile, req.format).await
}

#[derive(Debug, Deserialize)]
struct FormatQuery {
    format: Option<String>,
}

async fn last_profile(
    query: Result<Query<FormatQuery>, QueryRejection>,
) -> Result<Response, AdminError> {
    let Query(q) = query.map_err(|e| AdminError::InvalidParameter(e.body_text()))?;
    let format = match q.format.as_deref() {
        Some(f) => f.parse()?,
        None => Format::default(),
    };
    let profile = profiling::last().ok_or(AdminError::NoProfile)?;
    render(profile, format).await
}

async fn render(profile: Arc<profiling::Profile>, format: Format) -> Result<Response, AdminError> {
    let (samples, mode) = (profile.samples(), profile.mode());
    let (sampled, cpu) = (profile.sampled_time(), profile.cpu_time());
    let steal = profile.host_steal();
    let body = tokio::task::spawn_blocking(move || profile.render(format))
        .await
        .map_err(|e| ProfileError::Failed(e.to_string()))??;
    let disposition = match format {
        Format::Svg => "inline".to_string(),
        f => format!("attachment; filename=\"{}\"", f.file_name()),
    };
    let seconds = |d: std::time::Duration| {
        HeaderValue::from_str(&format!("{:.3}", d.as_secs_f64())).expect("a number")
    };
    let mut res = (
        [
            (
                header::CONTENT_TYPE,
                HeaderValue::from_static(format.content_type()),
            ),
            (
                header::CONTENT_DISPOSITION,
                HeaderValue::from_str(&disposition).expect("ASCII header value"),
            ),
            (
                HeaderName::from_static("x-profile-samples"),
                HeaderValue::from(samples),
            ),
            (
                HeaderName::from_static("x-profile-sampled-cpu-seconds"),
                seconds(sampled),
            ),
            (
                HeaderName::from_static("x-profile-process-cpu-seconds"),
                seconds(cpu),
            ),
            (
                HeaderName::from_static("x-profile-mode"),
                HeaderValue::from_static(mode.as_str()),
            ),
        ],
        body,
    )
        .into_response();
    if let Some(steal) = steal {
        res.headers_mut().insert(
            HeaderName::from_static("x-profile-host-steal-seconds"),
            seconds(steal),
        );
    }
    Ok(res)
}

#[derive(Debug, serde::Serialize)]
struct AllocsBody {
    allocator: &'static str,
    /// Allocations are being counted now (false in a dhat build or when switched off).
    counting: bool,
    total: TotalAllocs,
    in_flight: i64,
    routes: Vec<RouteAllocs>,
}

#[derive(Debug, serde::Serialize)]
struct TotalAllocs {
    allocations: u64,
    bytes: u64,
}

async fn allocs(State(state): State<AdminState>) -> Json<AllocsBody> {
    let total = alloc::total();
    Json(AllocsBody {
        allocator: alloc::INNER_NAME,
        counting: alloc::counting_enabled(),
        total: TotalAllocs {
            allocations: total.allocs,
            bytes: total.bytes,
        },
        in_flight: state.metrics.in_flight(),
        routes: state.metrics.routes(),
    })
}

#[derive(Debug, Deserialize)]
struct CountingQuery {
    counting: Option<String>,
}

async fn set_counting(
    state: State<AdminState>,
    query: Result<Query<CountingQuery>, QueryRejection>,
) -> Result<Json<AllocsBody>, AdminError> {
    let Query(q) = query.map_err(|e| AdminError::InvalidParameter(e.body_text()))?;
    let on = match q.counting.as_deref() {
        Some("on" | "true" | "1") => true,
        Some("off" | "false" | "0") => false,
        Some(other) => {
            return Err(AdminError::InvalidParameter(format!(
                "counting must be on or off (or true/false), got \"{}\"",
                other.escape_default()
            )));
        }
        None => {
            return Err(AdminError::InvalidParameter(
                "missing query parameter `counting` (on or off)".into(),
            ));
        }
    };
    if on && !alloc::COUNTING {
        return Err(AdminError::InvalidParameter(format!(
            "this build's allocator ({}) does not count",
            alloc::INNER_NAME
        )));
    }
    alloc::set_counting(on);
    tracing::info!(counting = on, "allocation counting switched");
    Ok(allocs(state).await)
}

#[derive(Debug, Deserialize)]
struct LevelQuery {
    level: Option<String>,
}

async fn log_level(State(state): State<AdminState>) -> Json<serde_json::Value> {
    Json(serde_json::json!({ "level": state.log_level.current() }))
}

async fn set_log_level(
    State(state): State<AdminState>,
    query: Result<Query<LevelQuery>, QueryRejection>,
) -> Result<Json<serde_json::Value>, AdminError> {
    let Query(q) = query.map_err(|e| AdminError::InvalidParameter(e.body_text()))?;
    let level = q.level.filter(|l| !l.trim().is_empty()).ok_or_else(|| {
        AdminError::InvalidParameter(
            "missing query parameter `level` (e.g. level=debug or level=linkr=debug,info)".into(),
        )
    })?;
    // Checked here too, whatever the control does: a bare word tracing would take for a target
    // (`deubg`) silences every log line, the access log included.
    crate::telemetry::parse_filter(&level)
        .map_err(|e| AdminError::InvalidParameter(format!("invalid log filter {level:?}: {e}")))?;
    state
        .log_level
        .set(&level)
        .map_err(AdminError::InvalidParameter)?;
    let current = state.log_level.current();
    tracing::info!(level = %current, "log filter changed");
    Ok(Json(serde_json::json!({ "level": current })))
}
