//! Serving the router over TCP with the limits an operator needs and `axum::serve` does not
//! set (review helper-37): a connection must send its request headers within
//! [`Limits::header_read_timeout`] (a client that sends half a request line held the
//! process past SIGTERM for good, and enough of them used up its file descriptors); at
//! most [`Limits::max_connections`] are open at once (the next wait in the kernel's
//! backlog, so the process keeps descriptors for its database and its health checks);
//! and once the shutdown signal came, connections still open after
//! [`Limits::shutdown_grace`] are dropped, so a deploy never waits forever. Requests in
//! flight end well within the grace: the router answers each within its own time limit.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use axum::extract::Request;
use axum::Router;
use hyper::body::Incoming;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::server::graceful::GracefulShutdown;
use hyper_util::service::TowerToHyperService;
use tokio::net::TcpListener;
use tokio::sync::Semaphore;
use tower::ServiceExt as _;

/// The connection limits of [`serve`].
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// Most connections open at once.
    pub max_connections: usize,
    /// How long a connection may take to send a request's headers, counted from its
    /// opening or its previous answer: hyper counts an idle keep-alive connection's wait
    /// for its next request too, so this is also how long such a connection lasts.
    pub header_read_timeout: Duration,
    /// How long open connections may finish after the shutdown signal.
    pub shutdown_grace: Duration,
}

impl Default for Limits {
    /// 4,096 connections, 10 s for headers, and a grace longer than the router's 30 s
    /// request limit, so that no request in flight is cut.
    fn default() -> Self {
        Limits {
            max_connections: 4096,
            header_read_timeout: Duration::from_secs(10),
            shutdown_grace: super::REQUEST_TIMEOUT + Duration::from_secs(5),
        }
    }
}

impl Limits {
    /// [`Limits::default`], with the connection cap kept below the process's open-file
    /// limit (review helper-38: under `ulimit -n 256` the cap of 4,096 never took effect,
    /// accepts failed and health checks timed out): the soft limit is first raised to the
    /// hard one, then `reserved` descriptors (the database pool, files, the health checks'
    /// own connections) are kept out of the cap.
    pub fn for_this_process(reserved: u64) -> Limits {
        use nix::sys::resource::{getrlimit, setrlimit, Resource};
        let mut limits = Limits::default();
        let Ok((soft, hard)) = getrlimit(Resource::RLIMIT_NOFILE) else {
            return limits;
        };
        let soft = if soft < hard && setrlimit(Resource::RLIMIT_NOFILE, hard, hard).is_ok() {
            hard
        } else {
            soft
        };
        let room = usize::try_from(soft.saturating_sub(reserved)).unwrap_or(usize::MAX);
        limits.max_connections = limits.max_connections.min(room.max(16));
        limits
    }
}

/// Serves `app` on `listener` until `signal` completes, then lets open connections finish
/// their requests for at most [`Limits::shutdown_grace`].
pub async fn serve(
    listener: TcpListener,
    app: Router,
    limits: Limits,
    signal: impl Future<Output = ()>,
) {
    let permits = Arc::new(Semaphore::new(limits.max_connections));
    let graceful = GracefulShutdown::new();
    let mut http = hyper::server::conn::http1::Builder::new();
    http.timer(TokioTimer::new())
        .header_read_timeout(limits.header_read_timeout);
    tokio::pin!(signal);
    loop {
        let permit = tokio::select! {
            permit = permits.clone().acquire_owned() => match permit {
                Ok(p) => p,
                Err(_) => break,
            },
            () = &mut signal => break,
        };
        let stream = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => stream,
                Err(e) => {
                    // Out of descriptors, or a connection reset before it was taken:
                    // wait a moment rather than spin.
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            },
            () = &mut signal => break,
        };
        let _ = stream.set_nodelay(true);
        let service = TowerToHyperService::new(
            app.clone()
                .map_request(|req: Request<Incoming>| req.map(Body::new)),
        );
        let connection = graceful.watch(http.serve_connection(TokioIo::new(stream), service));
        tokio::spawn(async move {
            if let Err(e) = connection.await {
                tracing::debug!(error = %e, "connection ended with an error");
            }
            drop(permit);
        });
    }
    drop(listener);
    tokio::select! {
        () = graceful.shutdown() => {}
        () = tokio::time::sleep(limits.shutdown_grace) => {
            tracing::warn!(
                grace_s = limits.shutdown_grace.as_secs(),
                "connections still open after the shutdown grace: dropped"
            );
        }
    }
}
