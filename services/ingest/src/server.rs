//! The HTTP/1.1 server in front of the router, with the limits a public
//! listener needs and `axum::serve` does not set:
//!
//! - **Headers** must arrive within `http_header_timeout_ms` of the
//!   connection's opening or of the previous response, or the connection
//!   is closed (hyper's header read timeout). An idle kept-alive
//!   connection is closed after as long.
//! - **A body** must arrive within `http_body_timeout_ms` of its headers:
//!   reading it fails with [`BodyTimeout`], answered 408, and the
//!   connection is closed.
//! - **At most `http_max_connections`** connections are served at once.
//!   A connection is accepted only when a permit is free, so the ones over
//!   the cap wait in the kernel's listen backlog, unanswered, until one
//!   closes.
//!
//! With `tls_cert` and `tls_key` the listener speaks HTTPS
//! ([`crate::tls`]); the TLS handshake must end within
//! `http_header_timeout_ms` too. HTTP/2 is not served (our clients do
//! not need it); a proxy in front may speak it.
//!
//! On shutdown the listener closes, idle connections close, and requests
//! in flight finish; the timeouts bound how long that takes.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use axum::Router;
use axum::body::{Body, Bytes};
use axum::extract::Request;
use http_body::{Frame, SizeHint};
use hyper::body::Incoming;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::service::TowerToHyperService;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpListener;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio::time::{Instant, Sleep};
use tokio_rustls::TlsAcceptor;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tower::ServiceExt as _;

/// The server's limits, from the configuration.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    pub header_timeout: Duration,
    pub body_timeout: Duration,
    pub max_connections: usize,
}

impl Limits {
    pub fn from_config(config: &dispatch_infra::Config) -> Self {
        Self {
            header_timeout: Duration::from_millis(config.http_header_timeout_ms),
            body_timeout: Duration::from_millis(config.http_body_timeout_ms),
            max_connections: config.http_max_connections,
        }
    }
}

/// Serves `app` on `listener` until `shutdown`, then waits for the open
/// connections to finish.
pub async fn serve(
    listener: TcpListener,
    app: Router,
    limits: Limits,
    tls: Option<TlsAcceptor>,
    shutdown: CancellationToken,
) -> std::io::Result<()> {
    let permits = Arc::new(Semaphore::new(limits.max_connections));
    let connections = TaskTracker::new();
    loop {
        let permit = tokio::select! {
            () = shutdown.cancelled() => break,
            permit = permits.clone().acquire_owned() => match permit {
                Ok(permit) => permit,
                Err(_) => break, // never closed
            },
        };
        let (stream, peer) = tokio::select! {
            () = shutdown.cancelled() => break,
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(e) => {
                    accept_failed(e).await;
                    continue;
                }
            },
        };
        let (app, shutdown) = (app.clone(), shutdown.clone());
        match tls.clone() {
            None => connections.spawn(connection(stream, peer, app, limits, shutdown, permit)),
            Some(tls) => connections.spawn(async move {
                let handshake = tokio::time::timeout(limits.header_timeout, tls.accept(stream));
                match handshake.await {
                    Ok(Ok(stream)) => connection(stream, peer, app, limits, shutdown, permit).await,
                    Ok(Err(e)) => tracing::debug!(error = %e, "TLS handshake failed"),
                    Err(_) => tracing::debug!("TLS handshake timed out"),
                }
            }),
        };
    }
    drop(listener);
    connections.close();
    connections.wait().await;
    Ok(())
}

/// A failed accept is about one connection (gone before we took it), or
/// about us (out of file descriptors): then wait a little, as retrying at
/// once would only spin.
async fn accept_failed(e: std::io::Error) {
    use std::io::ErrorKind;
    if matches!(
        e.kind(),
        ErrorKind::ConnectionAborted | ErrorKind::ConnectionReset | ErrorKind::ConnectionRefused
    ) {
        return;
    }
    tracing::warn!(error = %e, "cannot accept connections");
    tokio::time::sleep(Duration::from_millis(100)).await;
}

async fn connection(
    stream: impl AsyncRead + AsyncWrite + Unpin + Send + 'static,
    peer: std::net::SocketAddr,
    app: Router,
    limits: Limits,
    shutdown: CancellationToken,
    _permit: OwnedSemaphorePermit,
) {
    let body_timeout = limits.body_timeout;
    // The client's address, for handlers that ask (`ConnectInfo`).
    let service = app.map_request(move |mut request: Request<Incoming>| {
        request
            .extensions_mut()
            .insert(axum::extract::ConnectInfo(peer));
        request.map(|body| Body::new(Deadline::new(body, body_timeout)))
    });
    let mut builder = hyper::server::conn::http1::Builder::new();
    builder
        .timer(TokioTimer::new())
        .header_read_timeout(limits.header_timeout);
    let conn = builder.serve_connection(TokioIo::new(stream), TowerToHyperService::new(service));
    let mut conn = std::pin::pin!(conn);
    let served = tokio::select! {
        served = conn.as_mut() => served,
        () = shutdown.cancelled() => {
            conn.as_mut().graceful_shutdown();
            conn.await
        }
    };
    if let Err(e) = served {
        // Clients that go away or send garbage; nothing to act on.
        tracing::debug!(error = %e, "connection ended with an error");
    }
}

/// Reading a request body took longer than `http_body_timeout_ms`.
#[derive(Debug, thiserror::Error)]
#[error("the request body did not arrive in time")]
pub struct BodyTimeout;

/// A request body that fails with [`BodyTimeout`] once its deadline has
/// passed. The timer is only set when the body is not all there at once,
/// so the usual small body that arrives with its headers costs none.
struct Deadline {
    inner: Incoming,
    deadline: Instant,
    timer: Option<Pin<Box<Sleep>>>,
}

impl Deadline {
    fn new(inner: Incoming, timeout: Duration) -> Self {
        Self {
            inner,
            deadline: Instant::now() + timeout,
            timer: None,
        }
    }
}

impl http_body::Body for Deadline {
    type Data = Bytes;
    type Error = axum::BoxError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, axum::BoxError>>> {
        let this = self.get_mut();
        if let Poll::Ready(frame) = Pin::new(&mut this.inner).poll_frame(cx) {
            return Poll::Ready(frame.map(|f| f.map_err(Into::into)));
        }
        let deadline = this.deadline;
        let timer = this
            .timer
            .get_or_insert_with(|| Box::pin(tokio::time::sleep_until(deadline)));
        match timer.as_mut().poll(cx) {
            Poll::Ready(()) => Poll::Ready(Some(Err(BodyTimeout.into()))),
            Poll::Pending => Poll::Pending,
        }
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}
