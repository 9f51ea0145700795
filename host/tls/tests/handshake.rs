//! Real handshakes (in memory, client and server on the shared provider)
//! through the shared verifier plumbing.

use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer, ServerName};
use rustls::{ClientConfig, ClientConnection, RootCertStore, ServerConfig, ServerConnection};
use std::sync::{Arc, Mutex};

/// A self-signed certificate for `localhost` and a server configuration
/// presenting it.
fn server() -> (CertificateDer<'static>, Arc<ServerConfig>) {
    let key = rcgen::KeyPair::generate().unwrap();
    let cert = rcgen::CertificateParams::new(vec!["localhost".into()])
        .unwrap()
        .self_signed(&key)
        .unwrap();
    let der = cert.der().clone();
    let key = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key.serialize_der()));
    let config = nasvisor_tls::server_config_builder()
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(vec![der.clone()], key)
        .unwrap();
    (der, Arc::new(config))
}

/// Runs a handshake to its end: `Err` is the first side's error.
fn handshake(
    client: Arc<ClientConfig>,
    server: Arc<ServerConfig>,
    name: &str,
) -> Result<(), rustls::Error> {
    let mut c = ClientConnection::new(client, ServerName::try_from(name.to_string()).unwrap())?;
    let mut s = ServerConnection::new(server)?;
    for _ in 0..16 {
        let mut buf = Vec::new();
        while c.wants_write() {
            c.write_tls(&mut buf).unwrap();
        }
        let mut rd = &buf[..];
        while !rd.is_empty() {
            s.read_tls(&mut rd).unwrap();
            s.process_new_packets()?;
        }
        buf.clear();
        while s.wants_write() {
            s.write_tls(&mut buf).unwrap();
        }
        let mut rd = &buf[..];
        while !rd.is_empty() {
            c.read_tls(&mut rd).unwrap();
            c.process_new_packets()?;
        }
        if !c.is_handshaking() && !s.is_handshaking() {
            return Ok(());
        }
    }
    panic!("the handshake did not finish");
}

#[test]
fn a_check_sees_the_presented_certificate_and_the_handshake_completes_when_it_agrees() {
    let (der, config) = server();
    let seen = Arc::new(Mutex::new(None));
    let s = seen.clone();
    let client =
        nasvisor_tls::client_builder_checked("test pin", move |p: &nasvisor_tls::Presented<'_>| {
            *s.lock().unwrap() = Some((p.end_entity.to_vec(), format!("{:?}", p.server_name)));
            Ok(())
        })
        .unwrap()
        .with_no_client_auth();
    handshake(Arc::new(client), config, "localhost").unwrap();
    let (cert, name) = seen.lock().unwrap().take().unwrap();
    assert_eq!(cert, der.to_vec());
    assert!(name.contains("localhost"), "{name}");
}

#[test]
fn a_check_that_refuses_ends_the_handshake_with_its_reason() {
    let (_, config) = server();
    let client =
        nasvisor_tls::client_builder_checked("test pin", |_: &nasvisor_tls::Presented<'_>| {
            Err(rustls::Error::General("not the pinned one".into()))
        })
        .unwrap()
        .with_no_client_auth();
    let e = handshake(Arc::new(client), config, "localhost").unwrap_err();
    assert!(e.to_string().contains("not the pinned one"), "{e}");
}

#[test]
fn webpki_verification_needs_the_root_and_the_name() {
    let (der, config) = server();
    let mut roots = RootCertStore::empty();
    roots.add(der).unwrap();
    let verifier = nasvisor_tls::webpki_server_verifier(roots).unwrap();
    let client = Arc::new(
        nasvisor_tls::client_config_builder()
            .unwrap()
            .dangerous()
            .with_custom_certificate_verifier(verifier)
            .with_no_client_auth(),
    );
    handshake(client.clone(), config.clone(), "localhost").unwrap();
    let e = handshake(client, config.clone(), "nas.example").unwrap_err();
    assert!(e.to_string().contains("certificate"), "{e}");
    // Without the root: refused.
    let empty = nasvisor_tls::client_config_builder()
        .unwrap()
        .with_root_certificates(RootCertStore::empty())
        .with_no_client_auth();
    let e = handshake(Arc::new(empty), config, "localhost").unwrap_err();
    assert!(e.to_string().contains("UnknownIssuer"), "{e}");
}
