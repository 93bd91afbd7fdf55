//! Probes: `/healthz` (the process answers), `/readyz` (can serve traffic), `/startupz`
//! (start-up finished).
//!
//! Readiness and the scale-out backends: a failing Postgres or Redis check makes an instance
//! `degraded` (200), not unready (503), once it has reached Postgres since start. Every
//! replica shares those backends, so a blip fails the check on all of them at once; a 503
//! would take every replica out of the Service and turn a partial outage (links in the index
//! still redirect, misses and writes answer 503 fast) into a total one, with no healthy
//! replica to shift traffic to. The failed check is named in the body and logged. An instance
//! that has never reached Postgres has nothing to serve and is not ready; so is one that is
//! closing or draining.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::Response;
use serde::Serialize;
use utoipa::ToSchema;

use crate::app::AppState;
use crate::encode::json_response;

/// Lifecycle flags shared by the probes and the shutdown sequence.
#[derive(Debug, Default)]
pub struct Health {
    started: AtomicBool,
    shutting_down: AtomicBool,
}

impl Health {
    pub fn mark_started(&self) {
        self.started.store(true, Ordering::Release);
    }

    pub fn mark_shutting_down(&self) {
        self.shutting_down.store(true, Ordering::Release);
    }

    pub fn is_started(&self) -> bool {
        self.started.load(Ordering::Acquire)
    }

    pub fn is_shutting_down(&self) -> bool {
        self.shutting_down.load(Ordering::Acquire)
    }
}

#[derive(Debug, Serialize, ToSchema)]
pub struct Status {
    #[schema(example = "ok")]
    pub status: &'static str,
}

/// One readiness check.
#[derive(Debug, Serialize, ToSchema)]
pub struct Check {
    pub ok: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct Checks {
    /// The embedded store is open and answering.
    pub store: Check,
    /// Passes until a stop signal arrives.
    pub shutting_down: Check,
    /// Postgres answers (only with `LINKR_DATABASE_URL`). Failing after the instance reached
    /// it once: `degraded`, still 200.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub postgres: Option<Check>,
    /// Redis answers and the invalidation subscription is live: its own connection answered a
    /// ping within the last few seconds (only with `LINKR_REDIS_URL`). Failing: `degraded`,
    /// still 200 (misses go to Postgres; the index is revalidated every few seconds).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub redis: Option<Check>,
}

/// `/readyz` body. When not ready it also carries `error` and `message`, like every 5xx;
/// when degraded, `message` names the failing checks.
#[derive(Debug, Serialize, ToSchema)]
pub struct Readiness {
    /// `ready` (200), `degraded` (200: serving, a scale-out backend failing) or `not_ready` (503).
    #[schema(example = "ready")]
    pub status: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<&'static str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
    pub checks: Checks,
}

/// Liveness: the process is up and its runtime answers. Never looks at dependencies.
#[utoipa::path(get, path = "/healthz", tag = "probes",
    responses((status = 200, description = "The process is alive", body = Status)))]
pub async fn healthz() -> Response {
    json_response(StatusCode::OK, &Status { status: "ok" })
}

/// Readiness: the store answers and no stop signal has arrived.
#[utoipa::path(get, path = "/readyz", tag = "probes", responses(
    (status = 200, description = "Ready for traffic (`ready`, or `degraded` when a scale-out backend fails)", body = Readiness),
    (status = 503, description = "Not ready (starting, store failing or shutting down)", body = Readiness)))]
pub async fn readyz(State(state): State<AppState>) -> Response {
    let store = match state.store.check() {
        Ok(()) => Check {
            ok: true,
            message: None,
        },
        Err(e) => {
            tracing::warn!(error = %e, "readiness: store check failed");
            Check {
                ok: false,
                message: Some("the store is not available".into()),
            }
        }
    };
    let (mut postgres, mut redis) = (None, None);
    for (name, result) in state.store.check_backends().await {
        let check = match result {
            Ok(()) => Check {
                ok: true,
                message: None,
            },
            Err(e) => {
                tracing::warn!(error = %e, check = name, "readiness: dependency check failed");
                Check {
                    ok: false,
                    message: Some(e),
                }
            }
        };
        match name {
            "postgres" => postgres = Some(check),
            _ => redis = Some(check),
        }
    }
    let can_degrade = state.store.backends_reached();
    readiness(store, postgres, redis, can_degrade, &state.health)
}

/// `/readyz` while the store is still loading.
pub async fn readyz_starting(State(health): State<Arc<Health>>) -> Response {
    let store = Check {
        ok: false,
        message: Some("the store is loading".into()),
    };
    readiness(store, None, None, false, &health)
}

/// `can_degrade`: failing backend checks leave the instance serving (see the module doc).
fn readiness(
    store: Check,
    postgres: Option<Check>,
    redis: Option<Check>,
    can_degrade: bool,
    health: &Health,
) -> Response {
    let shutting_down = if health.is_shutting_down() {
        Check {
            ok: false,
            message: Some("a stop signal was received; draining".into()),
        }
    } else {
        Check {
            ok: true,
            message: None,
        }
    };
    let backends_ok = postgres.as_ref().is_none_or(|c| c.ok) && redis.as_ref().is_none_or(|c| c.ok);
    let serving = store.ok && shutting_down.ok && (backends_ok || can_degrade);
    let status = match (serving, backends_ok) {
        (true, true) => "ready",
        (true, false) => "degraded",
        (false, _) => "not_ready",
    };
    let failed = [
        Some(&store),
        Some(&shutting_down),
        postgres.as_ref(),
        redis.as_ref(),
    ]
    .into_iter()
    .flatten()
    .filter_map(|c| c.message.as_deref())
    .collect::<Vec<_>>()
    .join("; ");
    let body = Readiness {
        status,
        error: (!serving).then_some("not_ready"),
        message: (status != "ready").then_some(failed),
        checks: Checks {
            store,
            shutting_down,
            postgres,
            redis,
        },
    };
    let status = if serving {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    json_response(status, &body)
}

/// Start-up probe: 200 once the store is loaded and the API is served.
#[utoipa::path(get, path = "/startupz", tag = "probes", responses(
    (status = 200, description = "Start-up finished", body = Status),
    (status = 503, description = "Still starting", body = crate::error::ErrorBody)))]
pub async fn startupz(State(state): State<AppState>) -> Response {
    startup_status(&state.health)
}

/// `/startupz` while the store is still loading.
pub async fn startupz_starting(State(health): State<Arc<Health>>) -> Response {
    startup_status(&health)
}

fn startup_status(health: &Health) -> Response {
    if health.is_started() {
        json_response(StatusCode::OK, &Status { status: "started" })
    } else {
        crate::error::error_response(
            StatusCode::SERVICE_UNAVAILABLE,
            "starting",
            "the store is still loading",
        )
    }
}
