//! TLS of the streams between hosts (memory, NBD disks, image copies):
//! QEMU's and qemu-nbd's `tls-creds-x509` made from this host's cluster
//! certificate, and the names each side checks. Each side checks the other's
//! certificate against the cluster CA; a stream server admits only the
//! member it serves.

use crate::errors;
use crate::Inner;
use nasvisor_api_types::CoreError;
use std::path::{Path, PathBuf};

/// The directories of QEMU TLS credentials made from this host's cluster
/// certificate (`endpoint` `server` or `client`, GnuTLS file names).
pub(crate) fn qemu_tls_dir(inner: &Inner, endpoint: &str) -> Result<PathBuf, CoreError> {
    let (ca, cert, key) = inner.db.store().node_tls_pem().ok_or_else(|| {
        errors::conflict("this host belongs to no cluster: no certificate for the stream")
    })?;
    let dir = inner.cfg.run_dir().join("qemu-tls").join(endpoint);
    write_qemu_tls_dir(dir, endpoint, ca, cert, key)
}

/// Writes a CA, a certificate and its key into `dir` under GnuTLS's file
/// names for `endpoint`; unchanged files are left alone.
fn write_qemu_tls_dir(
    dir: PathBuf,
    endpoint: &str,
    ca: String,
    cert: String,
    key: String,
) -> Result<PathBuf, CoreError> {
    let io = |e: std::io::Error| errors::internal(format!("{}: {e}", dir.display()));
    std::fs::create_dir_all(&dir).map_err(io)?;
    let files = [
        ("ca-cert.pem".to_string(), ca, 0o644),
        (format!("{endpoint}-cert.pem"), cert, 0o644),
        (format!("{endpoint}-key.pem"), key, 0o600),
    ];
    for (name, content, mode) in files {
        let path = dir.join(&name);
        if std::fs::read_to_string(&path).is_ok_and(|c| c == content) {
            continue;
        }
        // Whole files only: a QEMU may be reading them.
        use std::io::Write as _;
        use std::os::unix::fs::OpenOptionsExt as _;
        let tmp = dir.join(format!(".{name}.tmp"));
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(mode)
            .open(&tmp)
            .map_err(io)?;
        f.write_all(content.as_bytes()).map_err(io)?;
        std::fs::rename(&tmp, &path).map_err(io)?;
    }
    Ok(dir)
}

/// `--object` of `qemu-nbd` / `qemu-img` for those credentials.
pub(crate) fn tls_object(id: &str, dir: &Path, endpoint: &str) -> String {
    format!(
        "tls-creds-x509,id={id},dir={},endpoint={endpoint},verify-peer=on",
        dir.display()
    )
}

/// The name in host `node_id`'s certificate, checked by TLS clients.
pub(crate) fn tls_name(node_id: u64) -> String {
    nasvisor_cluster::node_name(node_id)
}

/// The distinguished name of host `node_id`'s certificate as GnuTLS prints
/// it (in the certificate's order, CN then O, as `ca.rs` issues it): what a
/// QEMU TLS server's `authz-simple` compares with its client's certificate.
/// A stream server admits only the member that asked for it, so a removed
/// host (or any other) is refused even with a certificate of the cluster's
/// CA.
pub(crate) fn tls_identity(node_id: u64) -> String {
    format!("CN={},O=nasvisor", tls_name(node_id))
}

/// The TLS arguments of a `qemu-nbd` that serves only host `client`, with
/// the server credentials in `dir`.
fn nbd_server_tls_args(dir: &Path, client: u64) -> Vec<String> {
    vec![
        "--object".into(),
        tls_object("nvtls", dir, "server"),
        "--object".into(),
        // Commas in an option value are doubled.
        format!(
            "authz-simple,id=nvauthz,identity={}",
            tls_identity(client).replace(',', ",,")
        ),
        "--tls-creds".into(),
        "nvtls".into(),
        "--tls-authz".into(),
        "nvauthz".into(),
    ]
}

/// What a TLS client of a stream adds: `--object` arguments and NBD
/// options (empty when `migration-tls` is off).
pub(crate) struct TlsClient {
    pub args: Vec<String>,
    pub opts: String,
}

impl Inner {
    /// The client side of a stream to host `peer`; `prefix` goes before the
    /// NBD options (`file.` when NBD is the protocol under a format).
    pub(crate) fn tls_client(&self, prefix: &str, peer: u64) -> Result<TlsClient, CoreError> {
        if !self.cfg.migration_tls {
            return Ok(TlsClient {
                args: Vec::new(),
                opts: String::new(),
            });
        }
        let dir = qemu_tls_dir(self, "client")?;
        Ok(TlsClient {
            args: vec!["--object".into(), tls_object("nvtls", &dir, "client")],
            opts: format!(
                ",{prefix}tls-creds=nvtls,{prefix}tls-hostname={}",
                tls_name(peer)
            ),
        })
    }

    /// The arguments of a `qemu-nbd` serving host `client` over TLS, and
    /// only that host (none when off).
    pub(crate) fn tls_server_args(&self, client: u64) -> Result<Vec<String>, CoreError> {
        if !self.cfg.migration_tls {
            return Ok(Vec::new());
        }
        let dir = qemu_tls_dir(self, "server")?;
        Ok(nbd_server_tls_args(&dir, client))
    }
}

impl Inner {
    /// TLS of a QEMU's outgoing streams (memory, NBD mirrors) to host
    /// `peer`: the client credentials added to `qmp`; `None` when
    /// `migration-tls` is off.
    pub(crate) async fn qemu_stream_client(
        &self,
        qmp: &nasvisor_vm::QmpClient,
        peer: u64,
    ) -> Result<Option<nasvisor_vm::qmp::TlsClient>, CoreError> {
        if !self.cfg.migration_tls {
            return Ok(None);
        }
        let dir = qemu_tls_dir(self, "client")?;
        nasvisor_vm::migration::tls_client(qmp, "nv-tls-client", &dir, &tls_name(peer))
            .await
            .map(Some)
            .map_err(|e| errors::internal(e.to_string()))
    }

    /// TLS of a QEMU's stream servers (memory, NBD exports) for host
    /// `client` only: the server credentials and authorization added to
    /// `qmp`; `None` when `migration-tls` is off.
    pub(crate) async fn qemu_stream_server(
        &self,
        qmp: &nasvisor_vm::QmpClient,
        client: u64,
    ) -> Result<Option<nasvisor_vm::qmp::TlsServer>, CoreError> {
        if !self.cfg.migration_tls {
            return Ok(None);
        }
        let dir = qemu_tls_dir(self, "server")?;
        let identity = tls_identity(client);
        nasvisor_vm::migration::tls_server(qmp, "nv-tls-server", &dir, "nv-authz", &identity)
            .await
            .map(Some)
            .map_err(|e| errors::internal(e.to_string()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::migrate::{free_port, wait_listening};

    /// Real `qemu-nbd` and `qemu-img` with certificates of one cluster CA:
    /// the stream server admits the member it serves and refuses another.
    #[tokio::test]
    async fn a_stream_server_admits_only_the_member_it_serves() {
        use nasvisor_cluster_net::ca::{new_node_key, ClusterCa};
        let tmp = tempfile::tempdir().unwrap();
        let ca = ClusterCa::generate("authz-test").unwrap();
        let node = |id: u64, endpoint: &str| {
            let (key, csr) = new_node_key().unwrap();
            let cert = ca.issue(id, "127.0.0.1:1", &csr).unwrap();
            write_qemu_tls_dir(
                tmp.path().join(format!("{endpoint}-{id}")),
                endpoint,
                ca.cert_pem().to_string(),
                cert,
                key,
            )
            .unwrap()
        };
        let server = node(1, "server");
        let image = tmp.path().join("v.qcow2");
        let st = std::process::Command::new("qemu-img")
            .args(["create", "-q", "-f", "qcow2"])
            .arg(&image)
            .arg("16M")
            .status()
            .unwrap();
        assert!(st.success());
        let port = free_port("127.0.0.1").unwrap();
        let mut child = tokio::process::Command::new("qemu-nbd")
            .args(nbd_server_tls_args(&server, 2))
            .args(["--persistent", "-f", "qcow2", "-b", "127.0.0.1", "-x", "v"])
            .args(["-p", &port.to_string()])
            .arg(&image)
            .stdin(std::process::Stdio::null())
            .stderr(std::process::Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .unwrap();
        wait_listening(&mut child, "127.0.0.1", port).await.unwrap();
        let info = |id: u64| {
            let dir = node(id, "client");
            std::process::Command::new("qemu-img")
                .args(["info", "--object", &tls_object("c", &dir, "client")])
                .arg("--image-opts")
                .arg(format!(
                    "driver=nbd,host=127.0.0.1,port={port},export=v,tls-creds=c,tls-hostname={}",
                    tls_name(1)
                ))
                .output()
                .unwrap()
        };
        let served = info(2);
        let other = info(3);
        // Teardown of the test's own server: its outcome is checked above.
        let _ = child.start_kill();
        let _ = child.wait().await;
        assert!(
            served.status.success(),
            "the member served: {}",
            String::from_utf8_lossy(&served.stderr)
        );
        assert!(
            String::from_utf8_lossy(&served.stdout).contains("virtual size: 16 MiB"),
            "{}",
            String::from_utf8_lossy(&served.stdout)
        );
        assert!(!other.status.success(), "another member was admitted");
    }
}
