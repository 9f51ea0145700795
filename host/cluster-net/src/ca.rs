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
//! The files (under `<data_dir>/pki/`) are kept by the store crate
//! ([`nasvisor_cluster::identity`]); [`Pki`] is the parsed identity.

use std::path::{Path, PathBuf};

use nasvisor_cluster::identity::{CheckedIdentity, Identity, CA_CERT, NODE_CERT, NODE_KEY};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use sha2::{Digest, Sha256};

use nasvisor_cluster::NodeId;

pub use nasvisor_cluster::identity::{
    addr_host, node_id_of_name, node_name, PkiError, JOIN_NAME, NAME_SUFFIX, PKI_DIR,
};

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

fn cert_err(what: &'static str) -> impl FnOnce(rcgen::Error) -> PkiError {
    move |e| PkiError::Cert {
        what,
        reason: e.to_string(),
    }
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
        Identity::dir(data_dir)
    }

    /// Whether `data_dir` holds a cluster identity.
    pub fn exists(data_dir: &Path) -> bool {
        Identity::exists(data_dir)
    }

    /// The identity as the store keeps it (PEM text).
    pub fn to_identity(&self) -> Identity {
        Identity {
            cluster_id: self.cluster_id.clone(),
            node_id: self.node_id,
            ca_cert_pem: self.ca.cert_pem.clone(),
            ca_key_pem: self.ca.key_pem(),
            node_cert_pem: self.node_cert_pem.clone(),
            node_key_pem: self.node_key_pem.clone(),
        }
    }

    /// Write the files under `<data_dir>/pki/` (mode 0600). `cluster.json`
    /// is written last: a crash before it leaves no identity at all.
    pub fn save(&self, data_dir: &Path) -> Result<(), PkiError> {
        self.to_identity().save(data_dir)
    }

    /// Load the identity under `<data_dir>/pki/`; `None` if this host has
    /// not created or joined a cluster.
    pub fn load(data_dir: &Path) -> Result<Option<Self>, PkiError> {
        let dir = Self::dir(data_dir);
        Identity::load(data_dir)?
            .map(|i| Self::from_identity(i, &dir))
            .transpose()
    }

    /// Parse `identity`; errors name the file under `dir` that holds the
    /// unusable part.
    pub fn from_identity(identity: Identity, dir: &Path) -> Result<Self, PkiError> {
        let ca = ClusterCa::from_pem(&identity.ca_cert_pem, identity.ca_key_pem.as_deref())
            .map_err(|e| match e {
                PkiError::Bad { reason, .. } => PkiError::Bad {
                    path: dir.join(CA_CERT),
                    reason,
                },
                e => e,
            })?;
        let pki = Self {
            cluster_id: identity.cluster_id,
            node_id: identity.node_id,
            ca,
            node_cert_pem: identity.node_cert_pem,
            node_key_pem: identity.node_key_pem,
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
        Ok(pki)
    }

    /// The identity with what the store needs from it.
    pub fn checked(&self) -> Result<CheckedIdentity, PkiError> {
        let node_key_pin = self.node_key_pin().map_err(|reason| PkiError::Bad {
            path: PathBuf::from(NODE_CERT),
            reason,
        })?;
        Ok(CheckedIdentity {
            identity: self.to_identity(),
            ca_fingerprint: self.ca.fingerprint(),
            node_key_pin,
        })
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

#[cfg(test)]
mod tests {
    use super::*;
    use nasvisor_cluster::identity::{CA_KEY, CLUSTER_FILE};
    use std::os::unix::fs::PermissionsExt;

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
