//! A host's cluster identity as files: the cluster id, its node id, the
//! cluster CA certificate (and key, on voters), its own certificate and
//! key, all PEM text. What the PEM holds is read by the network crate
//! ([`crate::net::ClusterNet::check_identity`]); this module only names
//! things and keeps the files.
//!
//! Files, under `<data_dir>/pki/`, all mode 0600, written atomically:
//! `ca.pem`, `ca.key` (on voters), `node.pem`, `node.key` and `cluster.json`
//! (cluster id and node id).

use std::path::{Path, PathBuf};

use nasvisor_best_effort::write_private;

use serde::{Deserialize, Serialize};

use crate::types::NodeId;

/// The DNS suffix of the names in cluster certificates.
pub const NAME_SUFFIX: &str = "nasvisor.cluster";
/// The name every member's certificate carries and that a joining host
/// connects to (it does not know the member's node id yet).
pub const JOIN_NAME: &str = "join.nasvisor.cluster";
/// The directory of the PKI files inside the store's data directory.
pub const PKI_DIR: &str = "pki";

/// The CA certificate file.
pub const CA_CERT: &str = "ca.pem";
/// The CA key file (on voters).
pub const CA_KEY: &str = "ca.key";
/// This host's certificate file.
pub const NODE_CERT: &str = "node.pem";
/// This host's key file.
pub const NODE_KEY: &str = "node.key";
/// The cluster id and node id (written last).
pub const CLUSTER_FILE: &str = "cluster.json";

/// The certificate name of node `id`: `node-<id>.nasvisor.cluster`.
pub fn node_name(id: NodeId) -> String {
    format!("node-{id}.{NAME_SUFFIX}")
}

/// The node id in a certificate name made by [`node_name`].
pub fn node_id_of_name(name: &str) -> Option<NodeId> {
    let id = name.strip_prefix("node-")?.strip_suffix(NAME_SUFFIX)?;
    let id = id.strip_suffix('.')?;
    if id.is_empty() || !id.bytes().all(|b| b.is_ascii_digit()) || id.starts_with('0') {
        return None;
    }
    id.parse().ok()
}

/// The host part of `host:port` (`[v6]:port` too); the whole string if it
/// has no port.
pub fn addr_host(addr: &str) -> &str {
    let addr = addr.trim();
    if let Some(rest) = addr.strip_prefix('[') {
        return rest.split(']').next().unwrap_or(rest);
    }
    match addr.rsplit_once(':') {
        Some((h, p)) if !h.contains(':') && p.bytes().all(|b| b.is_ascii_digit()) => h,
        _ => addr,
    }
}

/// Errors of the cluster PKI (files, certificates, keys).
#[derive(Debug, thiserror::Error)]
pub enum PkiError {
    /// A PKI file could not be read or written.
    #[error("pki file {path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// A PKI file holds no usable certificate, key or record.
    #[error("pki file {path}: {reason}")]
    Bad {
        /// The file.
        path: PathBuf,
        /// Why it is unusable.
        reason: String,
    },
    /// Generating or signing a certificate failed.
    #[error("cannot {what}: {reason}")]
    Cert {
        /// What was being done.
        what: &'static str,
        /// The cause, as the certificate library reported it.
        reason: String,
    },
    /// A certificate signing request was refused.
    #[error("invalid certificate signing request: {0}")]
    Csr(String),
    /// This host does not hold the CA key, so it cannot sign certificates.
    #[error("this host does not hold the cluster CA key")]
    NoCaKey,
}

/// What `cluster.json` records.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct ClusterFile {
    cluster_id: String,
    node_id: NodeId,
}

/// A host's whole cluster identity, PEM text: the cluster, the CA and its
/// own certificate and key.
#[derive(Clone)]
pub struct Identity {
    /// The cluster id (16 hex digits).
    pub cluster_id: String,
    /// This host's node id.
    pub node_id: NodeId,
    /// The cluster CA certificate.
    pub ca_cert_pem: String,
    /// The cluster CA key, on voters.
    pub ca_key_pem: Option<String>,
    /// This host's certificate.
    pub node_cert_pem: String,
    /// This host's key.
    pub node_key_pem: String,
}

impl std::fmt::Debug for Identity {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Identity")
            .field("cluster_id", &self.cluster_id)
            .field("node_id", &self.node_id)
            .field("has_ca_key", &self.ca_key_pem.is_some())
            .finish_non_exhaustive()
    }
}

/// An identity whose certificates and keys the network crate read and
/// found usable, with what the store needs from them.
#[derive(Debug, Clone)]
pub struct CheckedIdentity {
    /// The files' contents.
    pub identity: Identity,
    /// SHA-256 of the CA certificate (lower-case hex), as join tokens
    /// carry it.
    pub ca_fingerprint: String,
    /// The pin of this host's key (SHA-256 of its SubjectPublicKeyInfo,
    /// lower-case hex), as the membership records it.
    pub node_key_pin: String,
}

impl Identity {
    /// The directory of the PKI files under `data_dir`.
    pub fn dir(data_dir: &Path) -> PathBuf {
        data_dir.join(PKI_DIR)
    }

    /// Whether `data_dir` holds a cluster identity.
    pub fn exists(data_dir: &Path) -> bool {
        Self::dir(data_dir).join(CLUSTER_FILE).exists()
    }

    /// Write the files under `<data_dir>/pki/` (mode 0600). `cluster.json`
    /// is written last: a crash before it leaves no identity at all.
    pub fn save(&self, data_dir: &Path) -> Result<(), PkiError> {
        let dir = Self::dir(data_dir);
        let io = |path: PathBuf| move |source| PkiError::Io { path, source };
        std::fs::create_dir_all(&dir).map_err(io(dir.clone()))?;
        let write = |name: &str, data: &[u8]| {
            let path = dir.join(name);
            write_private(&path, data).map_err(io(path))
        };
        write(CA_CERT, self.ca_cert_pem.as_bytes())?;
        match &self.ca_key_pem {
            Some(k) => write(CA_KEY, k.as_bytes())?,
            None => {
                let path = dir.join(CA_KEY);
                match std::fs::remove_file(&path) {
                    Ok(()) => {}
                    Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                    Err(source) => return Err(PkiError::Io { path, source }),
                }
            }
        }
        write(NODE_KEY, self.node_key_pem.as_bytes())?;
        write(NODE_CERT, self.node_cert_pem.as_bytes())?;
        let record = ClusterFile {
            cluster_id: self.cluster_id.clone(),
            node_id: self.node_id,
        };
        let json = serde_json::to_vec_pretty(&record).map_err(|e| PkiError::Bad {
            path: dir.join(CLUSTER_FILE),
            reason: format!("cannot encode: {e}"),
        })?;
        write(CLUSTER_FILE, &json)?;
        Ok(())
    }

    /// Read the files under `<data_dir>/pki/`; `None` if this host has not
    /// created or joined a cluster. Their contents are not checked here
    /// (see [`crate::net::ClusterNet::check_identity`]).
    pub fn load(data_dir: &Path) -> Result<Option<Self>, PkiError> {
        let dir = Self::dir(data_dir);
        if !dir.join(CLUSTER_FILE).exists() {
            return Ok(None);
        }
        let read = |name: &str| {
            let path = dir.join(name);
            std::fs::read_to_string(&path).map_err(|source| PkiError::Io { path, source })
        };
        let record: ClusterFile =
            serde_json::from_str(&read(CLUSTER_FILE)?).map_err(|e| PkiError::Bad {
                path: dir.join(CLUSTER_FILE),
                reason: e.to_string(),
            })?;
        let ca_key_pem = match dir.join(CA_KEY).exists() {
            true => Some(read(CA_KEY)?),
            false => None,
        };
        Ok(Some(Self {
            cluster_id: record.cluster_id,
            node_id: record.node_id,
            ca_cert_pem: read(CA_CERT)?,
            ca_key_pem,
            node_cert_pem: read(NODE_CERT)?,
            node_key_pem: read(NODE_KEY)?,
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    #[test]
    fn names_round_trip() {
        assert_eq!(node_name(7), "node-7.nasvisor.cluster");
        assert_eq!(node_id_of_name("node-7.nasvisor.cluster"), Some(7));
        for bad in [
            "node-.nasvisor.cluster",
            "node-07.nasvisor.cluster",
            "node-7.other.cluster",
            "node-7x.nasvisor.cluster",
            "join.nasvisor.cluster",
        ] {
            assert_eq!(node_id_of_name(bad), None, "{bad}");
        }
        assert_eq!(addr_host("10.0.0.2:7444"), "10.0.0.2");
        assert_eq!(addr_host("[::1]:7444"), "::1");
        assert_eq!(addr_host("nas1.lan:7444"), "nas1.lan");
        assert_eq!(addr_host("nas1.lan"), "nas1.lan");
    }

    #[test]
    fn identity_files_are_private_and_read_back_as_written() {
        let dir = tempfile::tempdir().unwrap();
        let id = Identity {
            cluster_id: "0123456789abcdef".into(),
            node_id: 3,
            ca_cert_pem: "ca cert".into(),
            ca_key_pem: Some("ca key".into()),
            node_cert_pem: "node cert".into(),
            node_key_pem: "node key".into(),
        };
        assert!(!Identity::exists(dir.path()));
        assert!(Identity::load(dir.path()).unwrap().is_none());
        id.save(dir.path()).unwrap();
        for f in [CA_CERT, CA_KEY, NODE_CERT, NODE_KEY, CLUSTER_FILE] {
            let mode = std::fs::metadata(dir.path().join(PKI_DIR).join(f))
                .unwrap()
                .permissions()
                .mode();
            assert_eq!(mode & 0o777, 0o600, "{f}");
        }
        let back = Identity::load(dir.path()).unwrap().unwrap();
        assert_eq!(
            (
                back.cluster_id.as_str(),
                back.node_id,
                back.ca_key_pem.as_deref()
            ),
            ("0123456789abcdef", 3, Some("ca key"))
        );
        // Saved again without the CA key: the key file goes.
        Identity {
            ca_key_pem: None,
            ..id
        }
        .save(dir.path())
        .unwrap();
        assert!(!dir.path().join(PKI_DIR).join(CA_KEY).exists());
        assert!(Identity::load(dir.path())
            .unwrap()
            .unwrap()
            .ca_key_pem
            .is_none());
    }
}
