//! The HTTP endpoint of a consumer: `/metrics`, `/health/live` and `/health/ready`.

use std::net::{SocketAddr, TcpListener};

use axum::extract::State;
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use tracing::{info, warn};

use super::StatusWatch;
use crate::metrics::Metrics;
use crate::Error;

const OPENMETRICS: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";
const PROMETHEUS_TEXT: &str = "text/plain; version=0.0.4; charset=utf-8";

#[derive(Clone)]
struct Endpoint {
    metrics: Metrics,
    status: StatusWatch,
}

/// Binds `addr` now, so that a taken port fails the caller, and returns the listener.
pub(crate) fn bind(addr: SocketAddr) -> Result<TcpListener, Error> {
    let listener = TcpListener::bind(addr).and_then(|l| {
        l.set_nonblocking(true)?;
        Ok(l)
    });
    listener.map_err(|e| Error::Config {
        key: "http_endpoint".into(),
        value: addr.to_string(),
        reason: format!("cannot listen there: {e}"),
    })
}

/// Serves the endpoint on `listener` until the consumer behind `status` stops.
pub(crate) async fn serve(listener: TcpListener, metrics: Metrics, status: StatusWatch) {
    let addr = listener.local_addr().ok();
    let listener = match tokio::net::TcpListener::from_std(listener) {
        Ok(l) => l,
        Err(e) => return warn!(error = %e, "cannot serve the HTTP endpoint"),
    };
    let mut stopped = status.clone();
    let app = Router::new()
        .route("/metrics", get(scrape))
        .route("/health/live", get(live))
        .route("/health/ready", get(ready))
        .with_state(Endpoint { metrics, status });
    info!(?addr, "serving /metrics, /health/live and /health/ready");
    let server = axum::serve(listener, app).with_graceful_shutdown(async move {
        let _ = stopped.wait_for(|s| s.stopped).await;
    });
    if let Err(e) = server.await {
        warn!(error = %e, "the HTTP endpoint stopped");
    }
}

/// OpenMetrics for scrapers that ask for it (Prometheus does), else the Prometheus text
/// format, which every tool reads.
async fn scrape(State(e): State<Endpoint>, headers: HeaderMap) -> Response {
    let openmetrics = headers
        .get_all(header::ACCEPT)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .any(|v| v.contains("application/openmetrics-text"));
    if openmetrics {
        ([(header::CONTENT_TYPE, OPENMETRICS)], e.metrics.encode()).into_response()
    } else {
        (
            [(header::CONTENT_TYPE, PROMETHEUS_TEXT)],
            e.metrics.encode_prometheus(),
        )
            .into_response()
    }
}

async fn live(State(e): State<Endpoint>) -> Response {
    let health = e.status.health();
    let body = serde_json::json!({
        "live": health.live,
        "checks": health.checks.iter().filter(|c| c.name == "poll_loop").collect::<Vec<_>>(),
    });
    json(health.live, &body)
}

async fn ready(State(e): State<Endpoint>) -> Response {
    let health = e.status.health();
    json(health.ready, &health)
}

/// 200 with `body` when `ok`, else 503.
fn json(ok: bool, body: &impl serde::Serialize) -> Response {
    let code = if ok {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    let text = serde_json::to_string(body).unwrap_or_default();
    (code, [(header::CONTENT_TYPE, "application/json")], text).into_response()
}
