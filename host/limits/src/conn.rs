//! One connection: its TLS handshake, then HTTP/1.1 with the header and
//! idle timeouts.

use crate::ServerLimits;
use hyper::body::{Body, Frame, Incoming, SizeHint};
use hyper::service::Service;
use hyper::{Request, Response};
use hyper_util::rt::{TokioIo, TokioTimer};
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::sync::Notify;
use tokio::time::Instant;

/// A TLS handshake that failed or took too long.
#[derive(Debug, thiserror::Error)]
pub enum HandshakeError {
    /// Not finished within `handshake-timeout-ms`.
    #[error("TLS handshake not finished within {} ms (handshake-timeout-ms)", .0.as_millis())]
    TimedOut(Duration),
    /// The handshake failed.
    #[error("TLS handshake failed: {0}")]
    Failed(#[source] std::io::Error),
}

/// Runs `handshake` (a TLS accept) within `limits.handshake_timeout`.
pub async fn handshake<T>(
    limits: &ServerLimits,
    handshake: impl Future<Output = std::io::Result<T>>,
) -> Result<T, HandshakeError> {
    match tokio::time::timeout(limits.handshake_timeout, handshake).await {
        Ok(Ok(s)) => Ok(s),
        Ok(Err(e)) => Err(HandshakeError::Failed(e)),
        Err(_) => Err(HandshakeError::TimedOut(limits.handshake_timeout)),
    }
}

/// How a connection ended other than by the client closing it.
#[derive(Debug, thiserror::Error)]
pub enum ConnError {
    /// No request in progress and nothing received for `idle-timeout-ms`.
    #[error("closed after {} ms without a request (idle-timeout-ms)", .0.as_millis())]
    Idle(Duration),
    /// An HTTP error; the header timeout is one ([`Self::is_header_timeout`]).
    #[error(transparent)]
    Http(#[from] hyper::Error),
}

impl ConnError {
    /// Whether a request head did not arrive within `header-timeout-ms`.
    pub fn is_header_timeout(&self) -> bool {
        matches!(self, Self::Http(e) if e.is_timeout())
    }
}

/// What the idle watch knows about a connection.
#[derive(Debug)]
struct ConnState {
    /// Requests whose answer is not completely sent.
    in_flight: AtomicUsize,
    /// When the connection last received bytes or finished an answer.
    quiet_since: Mutex<Instant>,
    /// Told when a request starts or its answer ends.
    changed: Notify,
}

impl ConnState {
    fn touch(&self) {
        *self.quiet_since.lock().unwrap_or_else(|e| e.into_inner()) = Instant::now();
    }

    fn quiet_since(&self) -> Instant {
        *self.quiet_since.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn busy(&self) -> bool {
        self.in_flight.load(Ordering::SeqCst) > 0
    }
}

/// Serves HTTP/1.1 on `io` (an accepted TLS stream) with `service` until
/// the client closes the connection, a limit closes it, or `shutdown`
/// completes (then the answer in progress is finished, and the connection
/// closed).
///
/// - A request head must be complete within `header_timeout` of the server
///   starting to wait for it, however it trickles in: hyper's
///   `header_read_timeout`, reported as [`ConnError::Http`] with
///   [`ConnError::is_header_timeout`].
/// - With no request in progress (an answer being streamed counts as in
///   progress until its last byte is sent) and nothing received for
///   `idle_timeout`, the connection is closed: [`ConnError::Idle`].
pub async fn serve_http1<I, S, B>(
    io: I,
    service: S,
    limits: &ServerLimits,
    shutdown: impl Future<Output = ()>,
) -> Result<(), ConnError>
where
    I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    S: Service<Request<Incoming>, Response = Response<B>> + Send + 'static,
    S::Future: Send + 'static,
    S::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
    B: Body + Unpin + Send + 'static,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    let state = Arc::new(ConnState {
        in_flight: AtomicUsize::new(0),
        quiet_since: Mutex::new(Instant::now()),
        changed: Notify::new(),
    });
    let io = TokioIo::new(Watched {
        inner: io,
        state: state.clone(),
    });
    let svc = Tracked {
        inner: service,
        state: state.clone(),
    };
    let conn = hyper::server::conn::http1::Builder::new()
        .timer(TokioTimer::new())
        .header_read_timeout(limits.header_timeout)
        .serve_connection(io, svc);
    tokio::pin!(conn);
    tokio::pin!(shutdown);
    let mut shutting_down = false;
    loop {
        let idle_at = (!state.busy()).then(|| state.quiet_since() + limits.idle_timeout);
        tokio::select! {
            r = conn.as_mut() => return r.map_err(ConnError::from),
            () = state.changed.notified() => {}
            () = &mut shutdown, if !shutting_down => {
                shutting_down = true;
                conn.as_mut().graceful_shutdown();
            }
            () = sleep_until(idle_at) => {
                if !state.busy() && state.quiet_since() + limits.idle_timeout <= Instant::now() {
                    conn.as_mut().graceful_shutdown();
                    // Idle: nothing to finish; give the close a moment. Its
                    // outcome (closed, failed or late) changes nothing: the
                    // connection is reported idle and dropped either way.
                    let _ = tokio::time::timeout(Duration::from_secs(1), conn.as_mut()).await;
                    return Err(ConnError::Idle(limits.idle_timeout));
                }
            }
        }
    }
}

async fn sleep_until(at: Option<Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}

/// The connection's stream, noting when bytes arrive.
struct Watched<I> {
    inner: I,
    state: Arc<ConnState>,
}

impl<I: AsyncRead + Unpin> AsyncRead for Watched<I> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let before = buf.filled().len();
        let r = Pin::new(&mut self.inner).poll_read(cx, buf);
        if buf.filled().len() > before {
            self.state.touch();
        }
        r
    }
}

impl<I: AsyncWrite + Unpin> AsyncWrite for Watched<I> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }
}

/// The service, counting requests in progress until their answer is sent.
struct Tracked<S> {
    inner: S,
    state: Arc<ConnState>,
}

/// One request in progress; dropped when its answer is completely sent
/// (or abandoned).
struct InFlight(Arc<ConnState>);

impl InFlight {
    fn new(state: Arc<ConnState>) -> Self {
        state.in_flight.fetch_add(1, Ordering::SeqCst);
        state.changed.notify_one();
        InFlight(state)
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.touch();
        self.0.in_flight.fetch_sub(1, Ordering::SeqCst);
        self.0.changed.notify_one();
    }
}

type BoxFuture<T> = Pin<Box<dyn Future<Output = T> + Send>>;

impl<S, B> Service<Request<Incoming>> for Tracked<S>
where
    S: Service<Request<Incoming>, Response = Response<B>>,
    S::Future: Send + 'static,
    B: Body + Unpin,
{
    type Response = Response<Answer<B>>;
    type Error = S::Error;
    type Future = BoxFuture<Result<Self::Response, Self::Error>>;

    fn call(&self, req: Request<Incoming>) -> Self::Future {
        let guard = InFlight::new(self.state.clone());
        let fut = self.inner.call(req);
        Box::pin(async move {
            let resp = fut.await?;
            Ok(resp.map(|inner| Answer {
                inner,
                _guard: guard,
            }))
        })
    }
}

/// An answer's body, holding its request's [`InFlight`] until hyper drops
/// it (after the last frame is written).
struct Answer<B> {
    inner: B,
    _guard: InFlight,
}

impl<B: Body + Unpin> Body for Answer<B> {
    type Data = B::Data;
    type Error = B::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Self::Data>, Self::Error>>> {
        Pin::new(&mut self.inner).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}
