//! The HTTP edge: the accept loop and what every request passes first.
//!
//! - Connections: at most `max_connections` open (more are closed as they arrive); a client has
//!   `header_timeout_ms` to send a request's headers, and a kept-alive connection is closed
//!   once it has been idle that long (hyper's header-read timer runs between requests too), so
//!   slow-header and idle connections cannot pile up.
//! - Requests ([`edge_guard`]): at most `max_concurrent_requests` in progress — more are answered
//!   `503` with `Retry-After` at once instead of queueing; each must be answered within
//!   `request_timeout_ms` (a stalled body included), else `408`; a `Content-Encoding` other than
//!   `identity` is refused (`415`) rather than read as if it were plain. All problem+json.
//! - Shutdown: graceful (idle connections close, requests in progress finish), bounded.

use crate::config::LimitSettings;
use crate::error::ApiError;
use crate::state::Shared;
use axum::extract::{Request, State};
use axum::http::{header, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::Router;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use hyper_util::service::TowerToHyperService;
use std::sync::Arc;
use std::time::Duration;
use tokio::net::TcpListener;
use tokio::sync::Semaphore;

/// How long shutdown waits for requests in progress.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(10);

/// Serves `app` on `listener` until `shutdown` resolves.
pub(crate) async fn run(
    listener: TcpListener,
    app: Router,
    limits: LimitSettings,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let mut builder = auto::Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(Duration::from_millis(limits.header_timeout_ms.max(1)))
        .max_buf_size(64 * 1024);
    builder
        .http2()
        .timer(TokioTimer::new())
        .keep_alive_interval(Duration::from_millis(limits.header_timeout_ms.max(1)))
        .max_concurrent_streams(64);
    let connections = Arc::new(Semaphore::new(limits.max_connections.max(1)));
    let graceful = hyper_util::server::graceful::GracefulShutdown::new();
    tokio::pin!(shutdown);
    loop {
        let (stream, peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(a) => a,
                Err(e) => {
                    // Out of file descriptors and the like: back off instead of spinning.
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            () = &mut shutdown => break,
        };
        let Ok(permit) = Arc::clone(&connections).try_acquire_owned() else {
            tracing::warn!(
                limit = limits.max_connections,
                "connection limit reached: closing a new connection"
            );
            drop(stream);
            continue;
        };
        let _ = stream.set_nodelay(true);
        // The client's address, for the access trail.
        let service = TowerToHyperService::new(tower::util::MapRequest::new(
            app.clone(),
            move |mut r: axum::http::Request<hyper::body::Incoming>| {
                r.extensions_mut().insert(axum::extract::ConnectInfo(peer));
                r
            },
        ));
        let conn = builder
            .serve_connection_with_upgrades(TokioIo::new(stream), service)
            .into_owned();
        let conn = graceful.watch(conn);
        tokio::spawn(async move {
            // A client that breaks the protocol, times out or goes away ends its connection.
            let _ = conn.await;
            drop(permit);
        });
    }
    drop(listener);
    if tokio::time::timeout(SHUTDOWN_GRACE, graceful.shutdown())
        .await
        .is_err()
    {
        tracing::warn!("shutdown: requests still in progress after {SHUTDOWN_GRACE:?}; closing");
    }
    Ok(())
}

/// What every request passes first: the encoding check, the concurrency limit and the time
/// limit (see the module documentation).
pub(crate) async fn edge_guard(State(s): State<Arc<Shared>>, req: Request, next: Next) -> Response {
    if let Some(enc) = req.headers().get(header::CONTENT_ENCODING) {
        let identity = enc
            .to_str()
            .is_ok_and(|e| e.trim().eq_ignore_ascii_case("identity"));
        if !identity {
            return ApiError::new(
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                "unsupported-content-encoding",
                "request bodies are read as sent: no Content-Encoding (or identity)",
            )
            .into_response();
        }
    }
    let Ok(_permit) = s.requests.try_acquire() else {
        s.metrics.count_shed();
        return ApiError {
            retry_after: Some(1),
            ..ApiError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "overloaded",
                "the service is at its limit of requests in progress; retry after a second",
            )
        }
        .into_response();
    };
    let limit = Duration::from_millis(s.limits.request_timeout_ms.max(1));
    match tokio::time::timeout(limit, next.run(req)).await {
        Ok(r) => r,
        Err(_) => ApiError::new(
            StatusCode::REQUEST_TIMEOUT,
            "request-timeout",
            format!(
                "the request was not complete within {} ms",
                limit.as_millis()
            ),
        )
        .into_response(),
    }
}
