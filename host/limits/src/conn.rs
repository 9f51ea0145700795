//! One connection: its TLS handshake, then HTTP/1.1 with the header and
//! idle timeouts.

use crate::ServerLimits;
use hyper::body::{Body, Frame, Incoming, SizeHint};
use hyper::service::Service;
use hyper::{Request, Response};
use hyper_util::rt::{TokioIo, TokioTimer};
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
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

/// How long, at most, what a client still sends after the server shut
/// its side of the connection is read and discarded ("lingering close"),
/// how long a pause in it ends that sooner, and how many bytes end it.
/// Closing a socket with unread bytes makes the kernel reset the
/// connection, which can throw the answer away before the client reads
/// it: an early refusal (401, 403, 405, 413) of a request whose body is
/// still arriving was lost that way (benches/fuzz-api.sh found it).
const LINGER_TIME: Duration = Duration::from_secs(2);
const LINGER_PAUSE: Duration = Duration::from_millis(200);
const LINGER_BYTES: usize = 1 << 20;

/// What the idle watch knows about a connection.
#[derive(Debug)]
struct ConnState {
    /// Requests whose answer is not completely sent.
    in_flight: AtomicUsize,
    /// A request with a body came on it: the server may not have read all
    /// of it, so its close lingers.
    had_body: AtomicBool,
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
        had_body: AtomicBool::new(false),
        quiet_since: Mutex::new(Instant::now()),
        changed: Notify::new(),
    });
    let io = TokioIo::new(Watched {
        inner: io,
        state: state.clone(),
        shut: Shut::Open,
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

/// The connection's stream, noting when bytes arrive; its shutdown
/// lingers after a request with a body (see [`LINGER_TIME`]).
struct Watched<I> {
    inner: I,
    state: Arc<ConnState>,
    shut: Shut,
}

/// Where the shutdown of a [`Watched`] stream is.
enum Shut {
    /// Not begun, or the server's side is being shut down.
    Open,
    /// The server's side is shut; reading and discarding until the client
    /// closes, pauses for [`LINGER_PAUSE`], or the bounds are reached.
    Lingering {
        until: Instant,
        pause: Pin<Box<tokio::time::Sleep>>,
        seen: usize,
    },
    Done,
}

impl<I: AsyncRead + AsyncWrite + Unpin> Watched<I> {
    /// Reads and discards until the linger ends (Ready) or nothing has
    /// come yet (Pending, woken by the stream or the pause).
    fn poll_linger(&mut self, cx: &mut Context<'_>) -> Poll<()> {
        let Shut::Lingering { until, pause, seen } = &mut self.shut else {
            return Poll::Ready(());
        };
        let mut buf = [0u8; 8192];
        loop {
            if *seen > LINGER_BYTES || Instant::now() >= *until {
                return Poll::Ready(());
            }
            let mut rb = ReadBuf::new(&mut buf);
            match Pin::new(&mut self.inner).poll_read(cx, &mut rb) {
                Poll::Ready(Ok(())) if !rb.filled().is_empty() => {
                    *seen += rb.filled().len();
                    pause
                        .as_mut()
                        .reset((Instant::now() + LINGER_PAUSE).min(*until));
                }
                // The client closed, or the stream failed: nothing to wait for.
                Poll::Ready(_) => return Poll::Ready(()),
                Poll::Pending => return pause.as_mut().poll(cx),
            }
        }
    }
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

impl<I: AsyncRead + AsyncWrite + Unpin> AsyncWrite for Watched<I> {
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

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        let this = self.get_mut();
        if let Shut::Open = this.shut {
            std::task::ready!(Pin::new(&mut this.inner).poll_shutdown(cx))?;
            if !this.state.had_body.load(Ordering::SeqCst) {
                this.shut = Shut::Done;
                return Poll::Ready(Ok(()));
            }
            let now = Instant::now();
            this.shut = Shut::Lingering {
                until: now + LINGER_TIME,
                pause: Box::pin(tokio::time::sleep_until(now + LINGER_PAUSE)),
                seen: 0,
            };
        }
        std::task::ready!(this.poll_linger(cx));
        this.shut = Shut::Done;
        Poll::Ready(Ok(()))
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
        let has_body = !req.body().is_end_stream();
        if has_body {
            self.state.had_body.store(true, Ordering::SeqCst);
        }
        let guard = InFlight::new(self.state.clone());
        let fut = self.inner.call(req);
        Box::pin(async move {
            let mut resp = fut.await?;
            // An error answer may leave the request's body unread, and hyper
            // then closes the connection after the answer without saying so:
            // a client would send its next request on it and lose it. Say it.
            let status = resp.status();
            if has_body && (status.is_client_error() || status.is_server_error()) {
                resp.headers_mut().insert(
                    hyper::header::CONNECTION,
                    hyper::header::HeaderValue::from_static("close"),
                );
            }
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
