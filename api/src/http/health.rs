//! Liveness, readiness (database reachable, migrations applied, feed lag) and metrics.

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde_json::json;

use super::AppState;
use crate::db::MIGRATOR;

/// `GET /healthz`: the process answers.
pub async fn healthz() -> Json<serde_json::Value> {
    Json(json!({"status": "ok"}))
}

/// `GET /readyz`: the database answers and every migration is applied.
pub async fn readyz(State(state): State<AppState>) -> Response {
    let applied: Result<Vec<i64>, sqlx::Error> =
        sqlx::query_scalar("SELECT version FROM _sqlx_migrations WHERE success")
            .fetch_all(&state.pool)
            .await;
    let applied = match applied {
        Ok(v) => v,
        // No migrations table: the database answers, it is just not migrated yet.
        Err(sqlx::Error::Database(e)) if e.code().as_deref() == Some("42P01") => Vec::new(),
        Err(e) => {
            tracing::warn!(error = %e, "readiness: database not reachable");
            return (
                StatusCode::SERVICE_UNAVAILABLE,
                Json(json!({"status": "unavailable", "database": "unreachable"})),
            )
                .into_response();
        }
    };
    let missing: Vec<i64> = MIGRATOR
        .iter()
        .map(|m| m.version)
        .filter(|v| !applied.contains(v))
        .collect();
    let watermark = ledger::store::watermark(&state.pool).await.ok();
    let lag = watermark.map(|w| {
        metrics::gauge!("feed_watermark_lag_events").set(i64_to_f64(w.held_back_events));
        metrics::gauge!("feed_watermark_lag_seconds").set(i64_to_f64(w.held_back_ms) / 1000.0);
        json!({
            "head_position": w.head_position,
            "visible_position": w.visible_position,
            "held_back_events": w.held_back_events,
            "held_back_ms": w.held_back_ms,
        })
    });
    let ready = missing.is_empty();
    let body = json!({
        "status": if ready { "ready" } else { "migrations_pending" },
        "database": "reachable",
        "missing_migrations": missing,
        "watermark": lag,
        "projections": super::queries::projection_detail(&state).await,
    });
    let status = if ready {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (status, Json(body)).into_response()
}

/// How long a scrape waits for its own query of the database: well within Prometheus'
/// default 10 s scrape timeout, so an outage is scraped as `database_up 0` rather than
/// as a failed scrape (review helper-38: it waited out the pool's limit).
const SCRAPE_QUERY_LIMIT: std::time::Duration = std::time::Duration::from_millis(1500);

/// `GET /metrics`: Prometheus text. `database_up` is 1 when the scrape's own query of the
/// database answered within [`SCRAPE_QUERY_LIMIT`], else 0: an alert on it fires during
/// an outage, when the lag gauges keep their last values.
pub async fn metrics(State(state): State<AppState>) -> Response {
    let watermark =
        tokio::time::timeout(SCRAPE_QUERY_LIMIT, ledger::store::watermark(&state.pool)).await;
    let up = matches!(watermark, Ok(Ok(_)));
    match watermark {
        Ok(Ok(w)) => {
            metrics::gauge!("database_up").set(1.0);
            metrics::gauge!("feed_watermark_lag_events").set(i64_to_f64(w.held_back_events));
            metrics::gauge!("feed_watermark_lag_seconds").set(i64_to_f64(w.held_back_ms) / 1000.0);
        }
        Ok(Err(e)) => {
            tracing::warn!(error = %e, "metrics: the database did not answer");
            metrics::gauge!("database_up").set(0.0);
        }
        Err(_) => {
            tracing::warn!("metrics: the database did not answer in time");
            metrics::gauge!("database_up").set(0.0);
        }
    }
    // The projectors' figures need the database too: without it they keep their last
    // values rather than hold the scrape past its timeout.
    if up {
        super::queries::projection_detail(&state).await;
    }
    (
        [(
            axum::http::header::CONTENT_TYPE,
            "text/plain; version=0.0.4",
        )],
        state.metrics.render(),
    )
        .into_response()
}

#[allow(clippy::cast_precision_loss)]
fn i64_to_f64(v: i64) -> f64 {
    v as f64
}
