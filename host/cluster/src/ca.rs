//! The cluster's own certificate authority and the hosts' certificates
//! (invariant I5: hosts authenticate each other with mutual TLS, using
//! certificates from the cluster's CA).
//!
//! - The CA is created by `nasvisor cluster create` ([`ClusterCa::generate`]):
//!   ECDSA P-256, self-signed, path length 0.
//! - A host's certificate ([`ClusterCa::issue`]) is ECDSA P-256 too, usable
//!   for both TLS server and client authentication, with these SANs:
//!   - `node-<id>.nasvisor.cluster` ([`node_name`]): the host's identity. A
//!     peer connecting to node `n` verifies this name, and a server reads the
//!     node id of a connecting client from it ([`node_id_of_cert`]);
//!   - `join.nasvisor.cluster` ([`JOIN_NAME`]): any member can answer joins;
//!   - the host part of the host's cluster address (IP address or DNS name).
//! - The joining host creates its own key and sends a certificate signing
//!   request; the key never leaves the host. The CA ignores everything in the
//!   request but the public key (and checks its signature).
//! - The CA key is kept by every voter (it is handed to a host when it joins),
//!   so that whichever voter leads can sign the next join. Trust is revoked by
//!   membership, not by certificate revocation: a removed host's certificate
//!   stays valid, but its node id is no longer in the membership and node ids
//!   are never reused, so every member refuses it.
//!
//! Files, under `<data_dir>/pki/`, all mode 0600, written atomically:
//! `ca.pem`, `ca.key` (on voters), `node.pem`, `node.key` and `cluster.json`
//! (cluster id and node id).

use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::types::NodeId;

/// The DNS suffix of the names in cluster certificates.
pub const NAME_SUFFIX: &str = "nasvisor.cluster";
/// The name every member's certificate carries and that a joining host
/// connects to (it does not know the member's node id yet).
pub const JOIN_NAME: &str = "join.nasvisor.cluster";
/// The directory of the PKI files inside the store's data directory.
pub const PKI_DIR: &str = "pki";

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

/// The node id carried by a cluster certificate (its `node-<id>` DNS SAN).
/// `None` if the certificate cannot be parsed or carries no node name, or
/// more than one.
pub fn node_id_of_cert(der: &[u8]) -> Option<NodeId> {
    let (_, cert) = x509_parser::parse_x509_certificate(der).ok()?;
    let san = cert.subject_alternative_name().ok()??;
    let mut ids = san.value.general_names.iter().filter_map(|n| match n {
        x509_parser::extensions::GeneralName::DNSName(d) => node_id_of_name(d),
        _ => None,
    });
    let id = ids.next()?;
    ids.next().is_none().then_some(id)
}

/// SHA-256 fingerprint of a DER certificate, lower-case hex (64 digits).
pub fn fingerprint(der: &[u8]) -> String {
    hex::encode(Sha256::digest(der))
}

/// The key pin of a DER certificate: SHA-256 (lower-case hex) of its DER
/// SubjectPublicKeyInfo. The membership records each host's pin when it
/// joins; a peer is admitted only with a certificate that carries it.
/// `None` if the certificate cannot be parsed.
pub fn key_pin(der: &[u8]) -> Option<String> {
    let (_, cert) = x509_parser::parse_x509_certificate(der).ok()?;
    Some(hex::encode(Sha256::digest(cert.public_key().raw)))
}

/// The node id and key pin of a peer's certificate, or why it names no node.
pub fn peer_identity(der: &[u8]) -> Result<(NodeId, String), &'static str> {
    let id = node_id_of_cert(der).ok_or("the certificate names no cluster node")?;
    let pin = key_pin(der).ok_or("the certificate cannot be parsed")?;
    Ok((id, pin))
}

/// Errors of the cluster PKI.
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
    #[error("cannot {what}: {source}")]
    Cert {
        /// What was being done.
        what: &'static str,
        /// The cause.
        #[source]
        source: rcgen::Error,
    },
    /// A certificate signing request was refused.
    #[error("invalid certificate signing request: {0}")]
    Csr(String),
    /// This host does not hold the CA key, so it cannot sign certificates.
    #[error("this host does not hold the cluster CA key")]
    NoCaKey,
}

fn cert_err(what: &'static str) -> impl FnOnce(rcgen::Error) -> PkiError {
    move |source| PkiError::Cert { what, source }
}

/// Validity: from the start of last year (tolerates clocks a little behind)
/// for `years` years.
fn set_validity(params: &mut rcgen::CertificateParams, years: i32) {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    let year = 1970 + (now / 31_556_952) as i32;
    params.not_before = rcgen::date_time_ymd(year - 1, 1, 1);
    params.not_after = rcgen::date_time_ymd(year + years, 1, 1);
}

/// The cluster CA: its certificate, and its key where this host holds it.
pub struct ClusterCa {
    cert_pem: String,
    cert_der: CertificateDer<'static>,
    key: Option<rcgen::KeyPair>,
}

impl std::fmt::Debug for ClusterCa {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClusterCa")
            .field("fingerprint", &self.fingerprint())
            .field("has_key", &self.key.is_some())
            .finish()
    }
}

impl ClusterCa {
    /// A new CA for cluster `cluster_id`.
    pub fn generate(cluster_id: &str) -> Result<Self, PkiError> {
        let mut params = rcgen::CertificateParams::new(Vec::<String>::new())
            .map_err(cert_err("create CA parameters"))?;
        params.distinguished_name.push(
            rcgen::DnType::CommonName,
            format!("nasvisor cluster {cluster_id} CA"),
        );
        params
            .distinguished_name
            .push(rcgen::DnType::OrganizationName, "nasvisor");
        params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Constrained(0));
        params.key_usages = vec![
            rcgen::KeyUsagePurpose::KeyCertSign,
            rcgen::KeyUsagePurpose::CrlSign,
            rcgen::KeyUsagePurpose::DigitalSignature,
        ];
        set_validity(&mut params, 30);
        let key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256)
            .map_err(cert_err("generate the CA key"))?;
        let cert = params
            .self_signed(&key)
            .map_err(cert_err("self-sign the CA certificate"))?;
        Ok(Self {
            cert_pem: cert.pem(),
            cert_der: cert.der().clone(),
            key: Some(key),
        })
    }

    /// A CA from its PEM certificate and, optionally, its PEM key.
    pub fn from_pem(cert_pem: &str, key_pem: Option<&str>) -> Result<Self, PkiError> {
        let cert_der =
            CertificateDer::from_pem_slice(cert_pem.as_bytes()).map_err(|e| PkiError::Bad {
                path: PathBuf::from(CA_CERT),
                reason: format!("no CA certificate: {e}"),
            })?;
        let key = key_pem
            .map(|k| rcgen::KeyPair::from_pem(k).map_err(cert_err("load the CA key")))
            .transpose()?;
        Ok(Self {
            cert_pem: cert_pem.to_owned(),
            cert_der,
            key,
        })
    }

    /// The CA certificate, PEM.
    pub fn cert_pem(&self) -> &str {
        &self.cert_pem
    }

    /// The CA certificate, DER.
    pub fn cert_der(&self) -> &CertificateDer<'static> {
        &self.cert_der
    }

    /// The CA key, PEM, where this host holds it.
    pub fn key_pem(&self) -> Option<String> {
        self.key.as_ref().map(|k| k.serialize_pem())
    }

    /// The SHA-256 fingerprint of the CA certificate (lower-case hex).
    pub fn fingerprint(&self) -> String {
        fingerprint(&self.cert_der)
    }

    /// Check that `csr_pem` is a well-signed request for an ECDSA P-256 key,
    /// and return the key pin ([`key_pin`]) of every certificate issued for
    /// it: SHA-256 of the SubjectPublicKeyInfo exactly as [`Self::issue`]
    /// writes it.
    pub fn check_csr(csr_pem: &str) -> Result<String, PkiError> {
        use rcgen::PublicKeyData as _;
        let csr = rcgen::CertificateSigningRequestParams::from_pem(csr_pem)
            .map_err(|e| PkiError::Csr(e.to_string()))?;
        if csr.public_key.algorithm() != &rcgen::PKCS_ECDSA_P256_SHA256 {
            return Err(PkiError::Csr("the key must be ECDSA P-256".into()));
        }
        Ok(hex::encode(Sha256::digest(
            csr.public_key.subject_public_key_info(),
        )))
    }

    /// Sign a certificate for node `node_id` reachable at `addr`
    /// (`host:port`) with the public key of `csr_pem`. Only the public key
    /// of the request is used (after checking the request's signature); the
    /// names and usages are the CA's choice. Returns the PEM certificate.
    pub fn issue(&self, node_id: NodeId, addr: &str, csr_pem: &str) -> Result<String, PkiError> {
        let key = self.key.as_ref().ok_or(PkiError::NoCaKey)?;
        Self::check_csr(csr_pem)?;
        let csr = rcgen::CertificateSigningRequestParams::from_pem(csr_pem)
            .map_err(|e| PkiError::Csr(e.to_string()))?;
        let mut names = vec![node_name(node_id), JOIN_NAME.to_owned()];
        let host = addr_host(addr);
        if !host.is_empty() && !names.iter().any(|n| n == host) {
            names.push(host.to_owned());
        }
        let mut params = rcgen::CertificateParams::new(names)
            .map_err(cert_err("create node certificate parameters"))?;
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, node_name(node_id));
        params
            .distinguished_name
            .push(rcgen::DnType::OrganizationName, "nasvisor");
        // KeyEncipherment too: GnuTLS (QEMU's migration and NBD TLS)
        // refuses server certificates without it, whatever the key type.
        params.key_usages = vec![
            rcgen::KeyUsagePurpose::DigitalSignature,
            rcgen::KeyUsagePurpose::KeyEncipherment,
        ];
        params.extended_key_usages = vec![
            rcgen::ExtendedKeyUsagePurpose::ServerAuth,
            rcgen::ExtendedKeyUsagePurpose::ClientAuth,
        ];
        params.use_authority_key_identifier_extension = true;
        set_validity(&mut params, 20);
        let issuer = rcgen::Issuer::from_ca_cert_der(&self.cert_der, key)
            .map_err(cert_err("read the CA certificate"))?;
        let cert = params
            .signed_by(&csr.public_key, &issuer)
            .map_err(cert_err("sign the node certificate"))?;
        Ok(cert.pem())
    }
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

/// A new node key (ECDSA P-256) and a certificate signing request for it:
/// `(key PEM, CSR PEM)`.
pub fn new_node_key() -> Result<(String, String), PkiError> {
    let key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256)
        .map_err(cert_err("generate a node key"))?;
    let params = rcgen::CertificateParams::new(Vec::<String>::new())
        .map_err(cert_err("create request parameters"))?;
    let csr = params
        .serialize_request(&key)
        .map_err(cert_err("create a certificate signing request"))?;
    let csr = csr
        .pem()
        .map_err(cert_err("encode a certificate signing request"))?;
    Ok((key.serialize_pem(), csr))
}

const CA_CERT: &str = "ca.pem";
const CA_KEY: &str = "ca.key";
const NODE_CERT: &str = "node.pem";
const NODE_KEY: &str = "node.key";
const CLUSTER_FILE: &str = "cluster.json";

/// What `cluster.json` records.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct ClusterFile {
    cluster_id: String,
    node_id: NodeId,
}

/// A host's whole cluster identity: the cluster, the CA and its own
/// certificate and key.
pub struct Pki {
    /// The cluster id (16 hex digits).
    pub cluster_id: String,
    /// This host's node id.
    pub node_id: NodeId,
    /// The cluster CA (with its key on voters).
    pub ca: ClusterCa,
    /// This host's certificate, PEM.
    pub node_cert_pem: String,
    /// This host's key, PEM.
    pub node_key_pem: String,
}

impl std::fmt::Debug for Pki {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Pki")
            .field("cluster_id", &self.cluster_id)
            .field("node_id", &self.node_id)
            .field("ca", &self.ca)
            .finish_non_exhaustive()
    }
}

impl Pki {
    /// A new cluster: a fresh cluster id and CA, and a certificate for the
    /// founding node `node_id` at `addr`.
    pub fn create(node_id: NodeId, addr: &str) -> Result<Self, PkiError> {
        let cluster_id = hex::encode(rand::random::<[u8; 8]>());
        let ca = ClusterCa::generate(&cluster_id)?;
        let (node_key_pem, csr) = new_node_key()?;
        let node_cert_pem = ca.issue(node_id, addr, &csr)?;
        Ok(Self {
            cluster_id,
            node_id,
            ca,
            node_cert_pem,
            node_key_pem,
        })
    }

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
        write(CA_CERT, self.ca.cert_pem.as_bytes())?;
        match self.ca.key_pem() {
            Some(k) => write(CA_KEY, k.as_bytes())?,
            None => {
                let _ = std::fs::remove_file(dir.join(CA_KEY));
            }
        }
        write(NODE_KEY, self.node_key_pem.as_bytes())?;
        write(NODE_CERT, self.node_cert_pem.as_bytes())?;
        let record = ClusterFile {
            cluster_id: self.cluster_id.clone(),
            node_id: self.node_id,
        };
        let json = serde_json::to_vec_pretty(&record).unwrap_or_default();
        write(CLUSTER_FILE, &json)?;
        Ok(())
    }

    /// Load the identity under `<data_dir>/pki/`; `None` if this host has
    /// not created or joined a cluster.
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
        let ca_key = match dir.join(CA_KEY).exists() {
            true => Some(read(CA_KEY)?),
            false => None,
        };
        let ca = ClusterCa::from_pem(&read(CA_CERT)?, ca_key.as_deref()).map_err(|e| match e {
            PkiError::Bad { reason, .. } => PkiError::Bad {
                path: dir.join(CA_CERT),
                reason,
            },
            e => e,
        })?;
        let pki = Self {
            cluster_id: record.cluster_id,
            node_id: record.node_id,
            ca,
            node_cert_pem: read(NODE_CERT)?,
            node_key_pem: read(NODE_KEY)?,
        };
        // Fail here, with the file named, rather than at the first handshake.
        pki.node_chain().map_err(|reason| PkiError::Bad {
            path: dir.join(NODE_CERT),
            reason,
        })?;
        pki.node_key().map_err(|reason| PkiError::Bad {
            path: dir.join(NODE_KEY),
            reason,
        })?;
        Ok(Some(pki))
    }

    /// This host's certificate chain for TLS: its certificate, then the CA's.
    pub fn node_chain(&self) -> Result<Vec<CertificateDer<'static>>, String> {
        let leaf = CertificateDer::from_pem_slice(self.node_cert_pem.as_bytes())
            .map_err(|e| format!("no node certificate: {e}"))?;
        if node_id_of_cert(&leaf) != Some(self.node_id) {
            return Err(format!(
                "the node certificate is not for node {}",
                self.node_id
            ));
        }
        Ok(vec![leaf, self.ca.cert_der.clone()])
    }

    /// This host's private key for TLS.
    pub fn node_key(&self) -> Result<PrivateKeyDer<'static>, String> {
        PrivateKeyDer::from_pem_slice(self.node_key_pem.as_bytes())
            .map_err(|e| format!("no node key: {e}"))
    }

    /// The key pin of this host's certificate ([`key_pin`]).
    pub fn node_key_pin(&self) -> Result<String, String> {
        let chain = self.node_chain()?;
        key_pin(&chain[0]).ok_or_else(|| "the node certificate cannot be parsed".into())
    }
}

/// Write `data` to `path` with mode 0600, atomically (temp file + rename).
fn write_private(path: &Path, data: &[u8]) -> std::io::Result<()> {
    let dir = path.parent().unwrap_or(Path::new("."));
    let name = path.file_name().and_then(|n| n.to_str()).unwrap_or("pki");
    let tmp = dir.join(format!(".{name}.tmp{}", std::process::id()));
    let _ = std::fs::remove_file(&tmp);
    {
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&tmp)?;
        f.write_all(data)?;
        f.sync_all()?;
    }
    std::fs::rename(&tmp, path)?;
    if let Ok(d) = std::fs::File::open(dir) {
        let _ = d.sync_all();
    }
    Ok(())
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
    fn create_issue_save_load() {
        let dir = tempfile::tempdir().unwrap();
        let pki = Pki::create(1, "127.0.0.1:7444").unwrap();
        assert_eq!(pki.cluster_id.len(), 16);
        let chain = pki.node_chain().unwrap();
        assert_eq!(node_id_of_cert(&chain[0]), Some(1));
        assert_eq!(node_id_of_cert(&chain[1]), None, "the CA is no node");

        // A second node from a CSR: only its public key is used.
        let (_, csr) = new_node_key().unwrap();
        let pem = pki.ca.issue(5, "nas5.lan:7444", &csr).unwrap();
        let der = CertificateDer::from_pem_slice(pem.as_bytes()).unwrap();
        assert_eq!(node_id_of_cert(&der), Some(5));
        assert_eq!(
            key_pin(&der),
            Some(ClusterCa::check_csr(&csr).unwrap()),
            "the pin taken from the request is the issued certificate's"
        );
        assert_eq!(peer_identity(&der).unwrap().1.len(), 64);
        assert_ne!(
            key_pin(&der),
            key_pin(&chain[0]),
            "another key, another pin"
        );
        assert!(matches!(
            pki.ca.issue(5, "x:1", "garbage"),
            Err(PkiError::Csr(_))
        ));

        assert!(!Pki::exists(dir.path()));
        assert!(Pki::load(dir.path()).unwrap().is_none());
        pki.save(dir.path()).unwrap();
        for f in [CA_CERT, CA_KEY, NODE_CERT, NODE_KEY, CLUSTER_FILE] {
            let mode = std::fs::metadata(dir.path().join(PKI_DIR).join(f))
                .unwrap()
                .permissions()
                .mode();
            assert_eq!(mode & 0o777, 0o600, "{f}");
        }
        let back = Pki::load(dir.path()).unwrap().unwrap();
        assert_eq!(back.cluster_id, pki.cluster_id);
        assert_eq!(back.node_id, 1);
        assert_eq!(back.ca.fingerprint(), pki.ca.fingerprint());
        assert!(back.ca.key_pem().is_some());

        // A CA without its key cannot sign.
        let public = ClusterCa::from_pem(pki.ca.cert_pem(), None).unwrap();
        assert!(matches!(
            public.issue(6, "x:1", &csr),
            Err(PkiError::NoCaKey)
        ));
    }
}
