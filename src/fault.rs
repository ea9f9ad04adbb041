//! Crash injection for the end-to-end suite: with `SESSIONSTORE_FAULT_ABORT_AFTER_WRITES=k` the
//! operator aborts the instant the API server has answered its k-th write, so a test can prove that a
//! crash between any two writes of a reconcile loses nothing (no Secret regenerated, the store
//! converges after a restart). Unset, as in every real deployment, the API client is untouched.
//!
//! Counted writes: POST, PUT, PATCH and DELETE answered with a 2xx status, except to Leases (leader
//! election renews its Lease on a timer, which would make the count depend on timing).

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::task::{Context, Poll};

use http::{Method, Request, Response};

use crate::error::{Error, Result};

/// The environment variable read once at start-up by `run`.
pub const ABORT_AFTER_WRITES_ENV: &str = "SESSIONSTORE_FAULT_ABORT_AFTER_WRITES";

/// The k of `SESSIONSTORE_FAULT_ABORT_AFTER_WRITES`, if set.
pub fn abort_after_writes_from_env() -> Result<Option<u64>> {
    match std::env::var(ABORT_AFTER_WRITES_ENV) {
        Err(_) => Ok(None),
        Ok(value) => match value.trim().parse::<u64>() {
            Ok(k) if k > 0 => Ok(Some(k)),
            _ => Err(Error::Startup(format!(
                "{ABORT_AFTER_WRITES_ENV} must be a positive number of API writes, got {value:?}"
            ))),
        },
    }
}

/// A tower layer that aborts the process right after the `limit`-th counted write succeeded.
#[derive(Clone, Debug)]
pub struct AbortAfterWrites {
    limit: u64,
    done: Arc<AtomicU64>,
}

impl AbortAfterWrites {
    pub fn new(limit: u64) -> Self {
        AbortAfterWrites {
            limit,
            done: Arc::new(AtomicU64::new(0)),
        }
    }
}

impl<S> tower::Layer<S> for AbortAfterWrites {
    type Service = AbortAfterWritesService<S>;

    fn layer(&self, inner: S) -> Self::Service {
        AbortAfterWritesService {
            inner,
            limit: self.limit,
            done: self.done.clone(),
        }
    }
}

/// The service [`AbortAfterWrites`] wraps around the API client's stack.
#[derive(Clone, Debug)]
pub struct AbortAfterWritesService<S> {
    inner: S,
    limit: u64,
    done: Arc<AtomicU64>,
}

/// Whether a request is a write this module counts.
pub fn is_counted_write(method: &Method, path: &str) -> bool {
    let write = matches!(
        *method,
        Method::POST | Method::PUT | Method::PATCH | Method::DELETE
    );
    write && !path.contains("/leases")
}

impl<S, B, RB> tower::Service<Request<B>> for AbortAfterWritesService<S>
where
    S: tower::Service<Request<B>, Response = Response<RB>>,
    S::Future: Send + 'static,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = Pin<Box<dyn Future<Output = std::result::Result<S::Response, S::Error>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<std::result::Result<(), S::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: Request<B>) -> Self::Future {
        let counted = is_counted_write(request.method(), request.uri().path());
        let what = format!("{} {}", request.method(), request.uri().path());
        let (limit, done) = (self.limit, self.done.clone());
        let response = self.inner.call(request);
        Box::pin(async move {
            let response = response.await?;
            if counted && response.status().is_success() {
                let n = done.fetch_add(1, Ordering::SeqCst) + 1;
                if n >= limit {
                    // Straight to stderr: the logger's buffers may never be flushed.
                    eprintln!("{ABORT_AFTER_WRITES_ENV}: aborting after write {n} ({what})");
                    std::process::abort();
                }
            }
            Ok(response)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn writes_are_counted_except_leases_and_reads() {
        assert!(is_counted_write(
            &Method::POST,
            "/api/v1/namespaces/a/secrets"
        ));
        assert!(is_counted_write(
            &Method::PATCH,
            "/apis/apps/v1/namespaces/a/statefulsets/s"
        ));
        assert!(is_counted_write(
            &Method::DELETE,
            "/api/v1/namespaces/a/pods/p"
        ));
        assert!(!is_counted_write(
            &Method::GET,
            "/api/v1/namespaces/a/secrets/s"
        ));
        assert!(!is_counted_write(
            &Method::PATCH,
            "/apis/coordination.k8s.io/v1/namespaces/a/leases/l"
        ));
    }

    #[tokio::test]
    async fn reads_and_failed_writes_pass_through_without_counting() {
        use tower::{Layer, Service, ServiceExt};
        let layer = AbortAfterWrites::new(1);
        let mut service = layer.layer(tower::service_fn(|request: Request<()>| async move {
            let status = if request.uri().path().ends_with("conflict") {
                409
            } else {
                200
            };
            Ok::<_, std::convert::Infallible>(Response::builder().status(status).body(()).unwrap())
        }));
        for (method, path) in [
            (Method::GET, "/api/v1/namespaces/a/secrets/s"),
            (Method::POST, "/api/v1/namespaces/a/secrets/conflict"),
            (
                Method::PATCH,
                "/apis/coordination.k8s.io/v1/namespaces/a/leases/l",
            ),
        ] {
            let request = Request::builder()
                .method(method)
                .uri(path)
                .body(())
                .unwrap();
            let response = service.ready().await.unwrap().call(request).await.unwrap();
            assert!(response.status().as_u16() == 200 || response.status().as_u16() == 409);
        }
        assert_eq!(layer.done.load(Ordering::SeqCst), 0);
    }
}
