//! The operator's HTTP endpoints: `/healthz` (the process serves), `/readyz` (leader state known
//! and, on the leader, the watch caches synced) and `/metrics` (Prometheus text format).

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, PoisonError};

use axum::Router;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::IntoResponse;
use axum::routing::get;
use kube::runtime::reflector::Store;
use prometheus_client::registry::Registry;

use crate::crd::SessionStore;
use crate::metrics::{Metrics, encode};

/// What the endpoints read; shared with the controller.
pub struct HttpState {
    registry: Arc<Registry>,
    metrics: Metrics,
    ready: AtomicBool,
    stores: Mutex<Vec<Store<SessionStore>>>,
}

impl HttpState {
    pub fn new(registry: Arc<Registry>, metrics: Metrics) -> Arc<Self> {
        Arc::new(HttpState {
            registry,
            metrics,
            ready: AtomicBool::new(false),
            stores: Mutex::new(Vec::new()),
        })
    }

    pub fn set_ready(&self, ready: bool) {
        self.ready.store(ready, Ordering::Release);
    }

    pub fn is_ready(&self) -> bool {
        self.ready.load(Ordering::Acquire)
    }

    /// The controllers' SessionStore caches, counted by phase at scrape time.
    pub fn add_store_reader(&self, store: Store<SessionStore>) {
        self.stores
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .push(store);
    }
}

pub fn router(state: Arc<HttpState>) -> Router {
    Router::new()
        .route("/healthz", get(|| async { "ok" }))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics))
        .with_state(state)
}

async fn readyz(State(state): State<Arc<HttpState>>) -> impl IntoResponse {
    if state.is_ready() {
        (StatusCode::OK, "ready")
    } else {
        (StatusCode::SERVICE_UNAVAILABLE, "not ready")
    }
}

async fn metrics(State(state): State<Arc<HttpState>>) -> impl IntoResponse {
    let phases: Vec<_> = state
        .stores
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
        .iter()
        .flat_map(|s| s.state())
        .map(|s| s.status.as_ref().and_then(|st| st.phase))
        .collect();
    state.metrics.set_store_phases(phases);
    match encode(&state.registry) {
        Ok(text) => (
            StatusCode::OK,
            [(
                header::CONTENT_TYPE,
                "application/openmetrics-text; version=1.0.0; charset=utf-8",
            )],
            text,
        ),
        Err(_) => (
            StatusCode::INTERNAL_SERVER_ERROR,
            [(header::CONTENT_TYPE, "text/plain")],
            "encoding metrics failed".to_string(),
        ),
    }
}

/// Serves until `shutdown` resolves.
pub async fn serve(
    listener: tokio::net::TcpListener,
    state: Arc<HttpState>,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    axum::serve(listener, router(state))
        .with_graceful_shutdown(shutdown)
        .await
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::metrics::Verb;
    use std::io::{Read, Write};

    /// A plain HTTP/1.1 GET on a blocking socket (tokio's io-util is not enabled).
    async fn fetch(addr: std::net::SocketAddr, path: &str) -> String {
        let request = format!("GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n");
        tokio::task::spawn_blocking(move || {
            let mut stream = std::net::TcpStream::connect(addr).expect("connects");
            stream
                .set_read_timeout(Some(std::time::Duration::from_secs(5)))
                .expect("timeout");
            stream.write_all(request.as_bytes()).expect("writes");
            let mut out = String::new();
            stream.read_to_string(&mut out).expect("reads");
            out
        })
        .await
        .expect("joins")
    }

    #[tokio::test]
    async fn endpoints_report_health_readiness_and_metrics() {
        let (registry, metrics) = crate::metrics::new_registry();
        metrics.api_request(Verb::Get);
        let state = HttpState::new(registry, metrics);
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("binds");
        let addr = listener.local_addr().expect("addr");
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let server = tokio::spawn(serve(listener, state.clone(), async {
            let _ = stopped.await;
        }));

        assert!(fetch(addr, "/healthz").await.starts_with("HTTP/1.1 200"));
        assert!(fetch(addr, "/readyz").await.starts_with("HTTP/1.1 503"));
        state.set_ready(true);
        assert!(fetch(addr, "/readyz").await.starts_with("HTTP/1.1 200"));
        let metrics = fetch(addr, "/metrics").await;
        assert!(
            metrics.contains("sessionstore_api_requests_total{verb=\"get\"} 1"),
            "{metrics}"
        );

        let _ = stop.send(());
        tokio::time::timeout(std::time::Duration::from_secs(5), server)
            .await
            .expect("server stops")
            .expect("joins")
            .expect("serves");
    }
}
