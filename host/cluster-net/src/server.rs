//! The server side of the cluster transport: one listener per host,
//! HTTP/1.1 over TLS (hyper 1 and tokio-rustls), serving two TLS
//! configurations chosen by the SNI name of the client hello (see
//! [`crate::tls`]):
//! - `node-<id>.nasvisor.cluster` (peers): mutual TLS with the cluster CA;
//!   the client's node id must be admitted ([`Served::admission`]: a
//!   member of the raft membership, a host being added, or, on a host that
//!   is still joining, a member of the cluster it joins) with the key
//!   recorded for it. Admission is checked again on every request, so a
//!   long-lived connection of a host removed meanwhile gets `403`.
//! - `join.nasvisor.cluster` (joining hosts): no client certificate; only
//!   [`PATH_JOIN`] is served.
//!
//! Every request is a `POST`; its body is read within the limits and handed
//! to the store ([`Served`], the store's `Endpoint`), which answers (see
//! [`nasvisor_cluster::endpoint`] for the routes).

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::{header, Request, Response, StatusCode};
use http_body_util::Full;
use nasvisor_cluster::identity::JOIN_NAME;
use nasvisor_cluster::net::{BoxFuture, Reply, Served};
use nasvisor_cluster::trust::Admission;
use nasvisor_cluster::wire::PATH_JOIN;
use nasvisor_cluster::NodeId;
use nasvisor_limits::{ConnectionGate, ConnectionPermit, ReadError, ServerLimits};
use rustls::ServerConfig;
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinSet;
use tokio_rustls::LazyConfigAcceptor;

/// The store's side of the endpoint.
type Endpoint = Arc<dyn Served>;

/// The largest request body between members (snapshot chunks are 3 MiB of
/// JSON numbers at most, about 12 MiB).
const MAX_PEER_BODY: usize = 64 << 20;
/// The largest join request body.
const MAX_JOIN_BODY: usize = 64 << 10;

/// A running listener; stopping it closes every connection.
#[derive(Debug)]
pub(crate) struct Server {
    addr: SocketAddr,
    task: tokio::task::JoinHandle<()>,
}

impl nasvisor_cluster::net::ServerHandle for Server {
    fn addr(&self) -> SocketAddr {
        self.addr
    }

    fn stop(self: Box<Self>) -> BoxFuture<'static, ()> {
        Box::pin(async move {
            self.task.abort();
            match self.task.await {
                Ok(()) => {}
                Err(e) if e.is_cancelled() => {}
                Err(e) => tracing::warn!(error = %e, "the cluster endpoint's task failed"),
            }
        })
    }
}

/// Serve the cluster endpoint of `endpoint` on `listener` with the
/// host's TLS configurations, within `limits`; members' addresses are not
/// counted against the connection caps.
pub(crate) fn serve(
    listener: TcpListener,
    endpoint: Endpoint,
    peer_config: Arc<ServerConfig>,
    join_config: Arc<ServerConfig>,
    limits: ServerLimits,
) -> Result<Server, std::io::Error> {
    let members = endpoint.clone();
    let exempt: nasvisor_limits::Exempt = Arc::new(move |ip| members.is_member_ip(ip));
    let gate = ConnectionGate::with_exemption(
        "cluster",
        limits.max_connections,
        limits.max_connections_per_address,
        Some(exempt),
    );
    spawn_server(listener, endpoint, peer_config, join_config, limits, gate)
}

/// Serve the cluster endpoint on `listener` until the task is aborted,
/// within `limits` (see [`nasvisor_limits`]): connections beyond the caps
/// are closed at once, except those from `gate`'s exempt (member)
/// addresses.
fn spawn_server(
    listener: TcpListener,
    endpoint: Endpoint,
    peer_config: Arc<ServerConfig>,
    join_config: Arc<ServerConfig>,
    limits: ServerLimits,
    gate: Arc<ConnectionGate>,
) -> Result<Server, std::io::Error> {
    let addr = listener.local_addr()?;
    let limits = Arc::new(limits);
    let task = tokio::spawn(async move {
        let mut conns = JoinSet::new();
        loop {
            tokio::select! {
                accepted = listener.accept() => match accepted {
                    Ok((tcp, peer)) => {
                        let Ok(permit) = gate.admit(peer.ip()) else {
                            continue; // closed at once (logged by the gate)
                        };
                        crate::client::set_nodelay(&tcp);
                        conns.spawn(serve_conn(
                            tcp,
                            peer,
                            endpoint.clone(),
                            peer_config.clone(),
                            join_config.clone(),
                            limits.clone(),
                            permit,
                        ));
                    }
                    Err(e) => {
                        tracing::warn!(error = %e, "cluster endpoint: accept failed");
                        tokio::time::sleep(Duration::from_millis(50)).await;
                    }
                },
                Some(_) = conns.join_next(), if !conns.is_empty() => {}
            }
        }
    });
    Ok(Server { addr, task })
}

async fn serve_conn(
    tcp: TcpStream,
    remote: SocketAddr,
    endpoint: Endpoint,
    peer_config: Arc<ServerConfig>,
    join_config: Arc<ServerConfig>,
    limits: Arc<ServerLimits>,
    _permit: ConnectionPermit,
) {
    let tls = async {
        let start = LazyConfigAcceptor::new(rustls::server::Acceptor::default(), tcp).await?;
        let join = start.client_hello().server_name() == Some(JOIN_NAME);
        let config = if join { join_config } else { peer_config };
        let stream = start.into_stream(config).await?;
        Ok::<_, std::io::Error>((join, stream))
    };
    let (join, stream) = match nasvisor_limits::handshake(&limits, tls).await {
        Ok(s) => s,
        Err(e) => {
            tracing::info!(%remote, error = %e, "cluster endpoint: TLS handshake refused");
            return;
        }
    };
    let peer = crate::tls::peer_of(stream.get_ref().1);
    if !join && peer.is_none() {
        // Unreachable with the member verifier; refuse rather than serve.
        return;
    }
    let body_timeout = limits.body_timeout;
    let svc = hyper::service::service_fn(move |req| {
        // Each request runs as a task of its own, aborted when hyper drops
        // its future (the connection closed), as if it ran inline. Inline,
        // the store's trait object held across awaits inside hyper's
        // service future defeats rustc's proof that the connection is Send.
        let task = Aborting(tokio::spawn(handle(
            endpoint.clone(),
            peer.clone(),
            join,
            body_timeout,
            req,
        )));
        async move { Ok::<_, std::convert::Infallible>(task.answer().await) }
    });
    let served =
        nasvisor_limits::serve_http1(stream, svc, &limits, std::future::pending::<()>()).await;
    match served {
        Err(e) if e.is_header_timeout() => {
            tracing::info!(%remote, error = %e, "cluster endpoint: request head too slow; closed")
        }
        Err(e) => tracing::debug!(%remote, error = %e, "cluster endpoint: connection closed"),
        Ok(()) => {}
    }
}

/// A request's task, aborted when dropped.
struct Aborting(tokio::task::JoinHandle<Response<Full<Bytes>>>);

impl Aborting {
    async fn answer(mut self) -> Response<Full<Bytes>> {
        match (&mut self.0).await {
            Ok(r) => r,
            Err(e) => {
                tracing::warn!(error = %e, "cluster endpoint: a request's task failed");
                plain(StatusCode::INTERNAL_SERVER_ERROR, "the request failed")
            }
        }
    }
}

impl Drop for Aborting {
    fn drop(&mut self) {
        self.0.abort();
    }
}

fn plain(status: StatusCode, msg: impl Into<String>) -> Response<Full<Bytes>> {
    let mut r = Response::new(Full::new(Bytes::from(msg.into())));
    *r.status_mut() = status;
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        header::HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    r
}

fn json(body: Vec<u8>) -> Response<Full<Bytes>> {
    let mut r = Response::new(Full::new(Bytes::from(body)));
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        header::HeaderValue::from_static("application/json"),
    );
    r
}

async fn handle(
    endpoint: Endpoint,
    peer: Option<(NodeId, String)>,
    join: bool,
    body_timeout: Duration,
    req: Request<hyper::body::Incoming>,
) -> Response<Full<Bytes>> {
    if !endpoint.is_open() {
        return closing();
    }
    let path = req.uri().path().to_owned();
    if join {
        if path != PATH_JOIN {
            return plain(StatusCode::NOT_FOUND, "only the join route is served here");
        }
    } else {
        let (id, key) = peer.clone().unwrap_or_default();
        if let Admission::Refused(why) = endpoint.admission(id, &key) {
            tracing::warn!(peer = id, path, reason = %why, "refused a request of a cluster peer");
            return plain(StatusCode::FORBIDDEN, why.to_string());
        }
    }
    let peer = peer.map(|(id, _)| id);
    if req.method() != http::Method::POST {
        return plain(StatusCode::METHOD_NOT_ALLOWED, "only POST is served");
    }
    // A joining host is not authenticated yet: its body must arrive whole
    // within the timeout, not a byte at a time.
    let limit = if join { MAX_JOIN_BODY } else { MAX_PEER_BODY };
    let body = match nasvisor_limits::read_body(req.into_body(), limit, body_timeout, join).await {
        Ok(b) => b,
        Err(e) => {
            let status = match e {
                ReadError::TooLarge { .. } => StatusCode::PAYLOAD_TOO_LARGE,
                ReadError::Stalled(_) | ReadError::TooSlow { .. } => StatusCode::REQUEST_TIMEOUT,
                ReadError::Failed(_) => StatusCode::BAD_REQUEST,
            };
            tracing::info!(path, error = %e, "cluster endpoint: request body refused");
            return plain(status, format!("cannot read the body: {e}"));
        }
    };
    match endpoint.handle(peer, path, Vec::from(body)).await {
        Reply::Json(b) => json(b),
        Reply::BadBody(msg) => plain(StatusCode::BAD_REQUEST, msg),
        Reply::NotFound(msg) => plain(StatusCode::NOT_FOUND, msg),
        Reply::Closing => closing(),
        Reply::Failed(msg) => plain(StatusCode::INTERNAL_SERVER_ERROR, msg),
    }
}

fn closing() -> Response<Full<Bytes>> {
    plain(
        StatusCode::SERVICE_UNAVAILABLE,
        "the cluster store is closing",
    )
}
