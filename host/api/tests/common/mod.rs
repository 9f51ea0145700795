//! Test support: a fake core (allowed only here, to test the layer above
//! it), a real TLS client trusting the generated certificate, and a running
//! server on 127.0.0.1:0.
#![allow(dead_code)]

pub mod schema;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper_util::rt::TokioIo;
use nasvisor_api::{Action, Core, CoreError, PowerOp, Server, ServerSettings};
use serde_json::{json, Value};
use std::net::SocketAddr;
use std::path::Path;
use std::sync::{Arc, Mutex};
use tokio_rustls::rustls;

/// Records every action and answers with canned objects that follow the
/// response schemas.
#[derive(Default)]
pub struct FakeCore {
    pub calls: Mutex<Vec<Action>>,
}

impl FakeCore {
    pub fn take(&self) -> Vec<Action> {
        std::mem::take(&mut *self.calls.lock().unwrap())
    }
}

pub fn vm(id: &str) -> Value {
    json!({"id": id, "name": id, "state": "stopped", "host": null, "vcpus": 2, "memory_mib": 2048,
           "description": null, "autostart": false, "ha": false,
           "disks": [{"pool": "p1", "volume": "v1", "size_mib": 10240}],
           "nics": [{"vswitch": "sw0", "mac": "52:54:00:12:34:56", "model": "virtio"}]})
}

pub fn job(id: &str, kind: &str) -> Value {
    json!({"id": id, "kind": kind, "state": "queued", "progress": 0.0, "error": null,
           "created_at": "2026-01-01T00:00:00Z"})
}

fn volume(pool: &str, name: &str, size: u64) -> Value {
    json!({"name": name, "pool": pool, "size_mib": size, "format": "qcow2", "used_by": null})
}

#[async_trait::async_trait]
impl Core for FakeCore {
    async fn handle(&self, action: Action) -> Result<Value, CoreError> {
        self.calls.lock().unwrap().push(action.clone());
        Ok(match action {
            Action::GetHost => json!({"id": "h1", "name": "nas1", "version": "0.1.0", "cpus": 4,
                                      "memory_mib": 16384, "cluster_role": "single"}),
            Action::ListVms => json!([vm("vm1")]),
            Action::GetVm { id } if id == "missing" => {
                return Err(CoreError::NotFound {
                    what: format!("vm {id}"),
                })
            }
            Action::GetVm { id } if id == "busy" => {
                return Err(CoreError::Conflict {
                    reason: "vm busy is migrating".into(),
                })
            }
            Action::GetVm { id } if id == "noquorum" => {
                return Err(CoreError::Unavailable {
                    reason: "no quorum".into(),
                })
            }
            Action::GetVm { id } if id == "bad" => {
                return Err(CoreError::Invalid {
                    field: "host".into(),
                    reason: "no such host".into(),
                })
            }
            Action::GetVm { id } | Action::UpdateVm { id, .. } => vm(&id),
            Action::CreateVm(c) => vm(&c.name),
            Action::DeleteVm { id, .. } => job(&format!("del-{id}"), "delete_vm"),
            Action::VmPower { op, .. } => job(
                "j1",
                match op {
                    PowerOp::Start { .. } => "start",
                    _ => "power",
                },
            ),
            Action::ListPools => {
                json!([{"name": "p1", "path": "/srv/p1", "capacity_mib": 100, "free_mib": 50}])
            }
            Action::CreatePool(p) => {
                json!({"name": p.name, "path": p.path, "capacity_mib": 100, "free_mib": 100})
            }
            Action::ListVolumes { pool } => json!([volume(&pool, "v1", 10)]),
            Action::CreateVolume { pool, volume: v } => volume(&pool, &v.name, v.size_mib),
            Action::ResizeVolume {
                pool,
                volume: v,
                size_mib,
            } => volume(&pool, &v, size_mib),
            Action::SnapshotVolume { pool, volume, name } => json!({"name": name, "pool": pool,
                "volume": volume, "created_at": "2026-01-01T00:00:00Z"}),
            Action::DeleteVolume { .. }
            | Action::DeleteImage { .. }
            | Action::DeleteVswitch { .. } => json!(null),
            Action::ListImages => json!([{"name": "debian-12", "size_mib": 400, "state": "ready"}]),
            Action::AddImage(_) => job("j2", "add_image"),
            Action::ListVswitches => json!([{"name": "sw0", "uplink": "eth0", "vlan": null}]),
            Action::CreateVswitch(s) => json!({"name": s.name, "uplink": s.uplink, "vlan": s.vlan}),
            Action::ListJobs => json!([job("j1", "start")]),
            Action::GetJob { id } | Action::CancelJob { id } => job(&id, "start"),
            Action::ListPlugins => {
                json!([{"name": "scheduler", "world": "scheduler", "version": "0.1.0",
                                           "vendor": "nasvisor", "state": "active"}])
            }
        })
    }
}

/// A running server.
pub struct Running {
    pub addr: SocketAddr,
    pub fingerprint: String,
    pub new_token: Option<String>,
    pub cert_pem: Vec<u8>,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    task: Option<tokio::task::JoinHandle<std::io::Result<()>>>,
}

impl Running {
    pub async fn start(data_dir: &Path, core: Arc<FakeCore>) -> Running {
        Self::start_with(
            ServerSettings::new("127.0.0.1:0".parse().unwrap(), data_dir),
            core,
        )
        .await
    }

    pub async fn start_with(settings: ServerSettings, core: Arc<FakeCore>) -> Running {
        let mut server = Server::bind(settings, core).await.expect("bind");
        let addr = server.local_addr().unwrap();
        let fingerprint = server.tls().fingerprint.clone();
        let cert_pem = std::fs::read(&server.tls().cert_path).unwrap();
        let new_token = server.take_new_token();
        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        let task = tokio::spawn(server.serve(async move {
            let _ = rx.await;
        }));
        Running {
            addr,
            fingerprint,
            new_token,
            cert_pem,
            stop: Some(tx),
            task: Some(task),
        }
    }

    pub async fn stop(mut self) {
        let _ = self.stop.take().unwrap().send(());
        self.task.take().unwrap().await.unwrap().unwrap();
    }

    pub fn client(&self) -> Client {
        Client::new(self.addr, &self.cert_pem)
    }
}

/// A real HTTPS client trusting exactly the server's certificate.
pub struct Client {
    addr: SocketAddr,
    name: String,
    connector: tokio_rustls::TlsConnector,
}

/// An answer.
#[derive(Debug)]
pub struct Reply {
    pub status: u16,
    pub headers: http::HeaderMap,
    pub body: Vec<u8>,
}

impl Reply {
    pub fn json(&self) -> Value {
        serde_json::from_slice(&self.body)
            .unwrap_or_else(|e| panic!("not JSON ({e}): {}", String::from_utf8_lossy(&self.body)))
    }
    pub fn field(&self) -> Option<String> {
        self.json()["error"]["field"].as_str().map(str::to_string)
    }
}

impl Client {
    pub fn new(addr: SocketAddr, cert_pem: &[u8]) -> Self {
        use rustls::pki_types::{pem::PemObject, CertificateDer};
        let mut roots = rustls::RootCertStore::empty();
        for c in CertificateDer::pem_slice_iter(cert_pem) {
            roots.add(c.unwrap()).unwrap();
        }
        let config = rustls::ClientConfig::builder_with_provider(Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
        Client {
            addr,
            name: "localhost".into(),
            connector: tokio_rustls::TlsConnector::from(Arc::new(config)),
        }
    }

    /// The same client, verifying the certificate for another name.
    pub fn with_name(mut self, name: &str) -> Self {
        self.name = name.to_string();
        self
    }

    pub async fn send(
        &self,
        method: &str,
        path: &str,
        token: Option<&str>,
        content_type: Option<&str>,
        body: &[u8],
    ) -> Reply {
        let tcp = tokio::net::TcpStream::connect(self.addr).await.unwrap();
        let name = rustls::pki_types::ServerName::try_from(self.name.clone()).unwrap();
        let tls = self
            .connector
            .connect(name, tcp)
            .await
            .expect("TLS handshake");
        let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tls))
            .await
            .unwrap();
        tokio::spawn(conn);
        let mut req = http::Request::builder()
            .method(method)
            .uri(path)
            .header("host", "localhost");
        if let Some(t) = token {
            req = req.header("authorization", format!("Bearer {t}"));
        }
        if let Some(ct) = content_type {
            req = req.header("content-type", ct);
        }
        let req = req.body(Full::new(Bytes::copy_from_slice(body))).unwrap();
        let resp = sender.send_request(req).await.unwrap();
        let status = resp.status().as_u16();
        let headers = resp.headers().clone();
        let body = resp
            .into_body()
            .collect()
            .await
            .unwrap()
            .to_bytes()
            .to_vec();
        Reply {
            status,
            headers,
            body,
        }
    }

    pub async fn get(&self, path: &str, token: Option<&str>) -> Reply {
        self.send("GET", path, token, None, b"").await
    }

    pub async fn json(&self, method: &str, path: &str, token: &str, body: &str) -> Reply {
        self.send(
            method,
            path,
            Some(token),
            Some("application/json"),
            body.as_bytes(),
        )
        .await
    }
}
