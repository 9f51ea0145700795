//! The client side of the cluster transport: HTTP/1.1 over mutual TLS to
//! the other hosts (hyper 1 and tokio-rustls), JSON bodies. Idle
//! connections to each peer are kept and reused.
//!
//! [`PeerTransport`] is the store's [`PeerClient`]; [`join_call`] is the
//! one call of a host that has no certificate yet.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use http::{header, Request, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper::client::conn::http1::SendRequest;
use hyper_util::rt::TokioIo;
use nasvisor_cluster::identity::{node_name, JOIN_NAME};
use nasvisor_cluster::net::{BoxFuture, CallError, PeerClient};
use nasvisor_cluster::wire::{JoinRequest, JoinResponse, PATH_JOIN};
use nasvisor_cluster::{JoinRefused, NodeId};
use rustls::pki_types::ServerName;
use rustls::ClientConfig;
use serde::de::DeserializeOwned;
use serde::Serialize;
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;

/// Idle connections kept per peer.
const MAX_IDLE_PER_PEER: usize = 4;

/// An error and its causes, `a: b: c`.
pub(crate) fn chain(e: &(dyn std::error::Error + 'static)) -> String {
    let mut s = e.to_string();
    let mut cur = e.source();
    while let Some(c) = cur {
        let c_s = c.to_string();
        if !s.ends_with(&c_s) {
            s.push_str(": ");
            s.push_str(&c_s);
        }
        cur = c.source();
    }
    s
}

type Sender = SendRequest<Full<Bytes>>;

/// The client side of the transport: this host's TLS client identity and
/// its idle connections.
pub struct PeerTransport {
    self_id: NodeId,
    config: Arc<ClientConfig>,
    idle: Mutex<HashMap<NodeId, Vec<(String, Sender)>>>,
}

impl std::fmt::Debug for PeerTransport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PeerTransport")
            .field("self_id", &self.self_id)
            .finish_non_exhaustive()
    }
}

impl PeerTransport {
    /// A transport for node `self_id` with this client configuration
    /// ([`crate::tls::peer_client_config`]).
    pub fn new(self_id: NodeId, config: Arc<ClientConfig>) -> Self {
        Self {
            self_id,
            config,
            idle: Mutex::new(HashMap::new()),
        }
    }

    /// This host's node id.
    pub fn self_id(&self) -> NodeId {
        self.self_id
    }

    /// `POST` `req` as JSON to `path` on node `target` at `addr` and decode
    /// the JSON answer, within `timeout`.
    pub async fn call<Req: Serialize, Resp: DeserializeOwned>(
        &self,
        target: NodeId,
        addr: &str,
        path: &str,
        req: &Req,
        timeout: Duration,
    ) -> Result<Resp, CallError> {
        nasvisor_cluster::net::call(self, target, addr, path, req, timeout).await
    }

    fn checkout(&self, target: NodeId, addr: &str) -> Option<Sender> {
        let mut idle = self.idle.lock().unwrap_or_else(|e| e.into_inner());
        let list = idle.get_mut(&target)?;
        while let Some((a, s)) = list.pop() {
            if a == addr && !s.is_closed() {
                return Some(s);
            }
        }
        None
    }

    fn checkin(&self, target: NodeId, addr: &str, sender: Sender) {
        let mut idle = self.idle.lock().unwrap_or_else(|e| e.into_inner());
        let list = idle.entry(target).or_default();
        if list.len() < MAX_IDLE_PER_PEER {
            list.push((addr.to_owned(), sender));
        }
    }

    async fn connect(&self, target: NodeId, addr: &str) -> Result<Sender, CallError> {
        let err = |reason: String| CallError::Connect {
            target,
            addr: addr.to_owned(),
            reason,
        };
        let tcp = TcpStream::connect(addr)
            .await
            .map_err(|e| err(e.to_string()))?;
        set_nodelay(&tcp);
        let name = ServerName::try_from(node_name(target)).map_err(|e| err(e.to_string()))?;
        let tls = TlsConnector::from(self.config.clone())
            .connect(name, tcp)
            .await
            .map_err(|e| err(format!("TLS: {}", chain(&e))))?;
        let (sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tls))
            .await
            .map_err(|e| err(chain(&e)))?;
        tokio::spawn(async move {
            if let Err(e) = conn.await {
                tracing::debug!(target, error = %e, "cluster connection closed");
            }
        });
        Ok(sender)
    }

    async fn post_bytes(
        &self,
        target: NodeId,
        addr: &str,
        path: &str,
        body: Bytes,
    ) -> Result<Bytes, CallError> {
        loop {
            let (mut sender, reused) = match self.checkout(target, addr) {
                Some(s) => (s, true),
                None => (self.connect(target, addr).await?, false),
            };
            let req = Request::post(path)
                .header(header::HOST, node_name(target))
                .header(header::CONTENT_TYPE, "application/json")
                .body(Full::new(body.clone()))
                .map_err(|e| CallError::BadAnswer {
                    target,
                    addr: addr.to_owned(),
                    reason: e.to_string(),
                })?;
            let resp = match sender.try_send_request(req).await {
                Ok(r) => r,
                Err(mut e) => {
                    let unsent = e.take_message().is_some();
                    if unsent && reused {
                        continue; // a stale idle connection: try another
                    }
                    let reason = chain(&e.into_error());
                    return Err(if unsent {
                        CallError::Connect {
                            target,
                            addr: addr.to_owned(),
                            reason,
                        }
                    } else {
                        CallError::Io {
                            target,
                            addr: addr.to_owned(),
                            reason,
                        }
                    });
                }
            };
            let status = resp.status();
            let bytes = resp
                .into_body()
                .collect()
                .await
                .map_err(|e| CallError::Io {
                    target,
                    addr: addr.to_owned(),
                    reason: chain(&e),
                })?
                .to_bytes();
            self.checkin(target, addr, sender);
            if status == StatusCode::FORBIDDEN {
                return Err(CallError::Refused {
                    target,
                    addr: addr.to_owned(),
                    reason: String::from_utf8_lossy(&bytes).into_owned(),
                });
            }
            if !status.is_success() {
                return Err(CallError::BadAnswer {
                    target,
                    addr: addr.to_owned(),
                    reason: format!("HTTP {status}: {}", String::from_utf8_lossy(&bytes)),
                });
            }
            return Ok(bytes);
        }
    }
}

/// One join call from a host that has no certificate yet: connect to
/// `addr` with `config` ([`crate::tls::join_client_config`]), send `req`.
pub async fn join_call(
    config: Arc<ClientConfig>,
    addr: &str,
    req: &JoinRequest,
    timeout: Duration,
) -> Result<Result<JoinResponse, JoinRefused>, CallError> {
    let err = |reason: String| CallError::Connect {
        target: 0,
        addr: addr.to_owned(),
        reason,
    };
    let fut = async {
        let tcp = TcpStream::connect(addr)
            .await
            .map_err(|e| err(e.to_string()))?;
        set_nodelay(&tcp);
        let name = crate::tls::join_server_name();
        let tls = TlsConnector::from(config)
            .connect(name, tcp)
            .await
            .map_err(|e| err(format!("TLS: {e}")))?;
        let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tls))
            .await
            .map_err(|e| err(e.to_string()))?;
        tokio::spawn(async move {
            if let Err(e) = conn.await {
                tracing::debug!(error = %e, "join connection closed");
            }
        });
        let body = serde_json::to_vec(req).map_err(|e| err(e.to_string()))?;
        let req = Request::post(PATH_JOIN)
            .header(header::HOST, JOIN_NAME)
            .header(header::CONTENT_TYPE, "application/json")
            .body(Full::new(Bytes::from(body)))
            .map_err(|e| err(e.to_string()))?;
        let io = |e: hyper::Error| CallError::Io {
            target: 0,
            addr: addr.to_owned(),
            reason: chain(&e),
        };
        let resp = sender.send_request(req).await.map_err(io)?;
        let status = resp.status();
        let bytes = resp.into_body().collect().await.map_err(io)?.to_bytes();
        if !status.is_success() {
            return Err(CallError::BadAnswer {
                target: 0,
                addr: addr.to_owned(),
                reason: format!("HTTP {status}: {}", String::from_utf8_lossy(&bytes)),
            });
        }
        serde_json::from_slice(&bytes).map_err(|e| CallError::BadAnswer {
            target: 0,
            addr: addr.to_owned(),
            reason: format!("cannot decode the answer: {e}"),
        })
    };
    tokio::time::timeout(timeout, fut)
        .await
        .map_err(|_| CallError::Timeout {
            target: 0,
            addr: addr.to_owned(),
            timeout,
        })?
}

impl PeerClient for PeerTransport {
    fn self_id(&self) -> NodeId {
        self.self_id
    }

    fn post<'a>(
        &'a self,
        target: NodeId,
        addr: &'a str,
        path: &'a str,
        body: Vec<u8>,
    ) -> BoxFuture<'a, Result<Vec<u8>, CallError>> {
        Box::pin(async move {
            self.post_bytes(target, addr, path, body.into())
                .await
                .map(|b| b.to_vec())
        })
    }
}

/// Small requests and answers go out at once. A socket that refuses the
/// option still works, only slower: logged.
pub(crate) fn set_nodelay(tcp: &TcpStream) {
    if let Err(e) = tcp.set_nodelay(true) {
        tracing::debug!(error = %e, "cannot set TCP_NODELAY on a cluster connection");
    }
}
