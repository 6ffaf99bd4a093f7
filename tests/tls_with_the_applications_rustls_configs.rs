//! A node may take rustls configs the application built itself
//! (`TlsConfig::from_rustls`): its own certificate verifier decides whom the node
//! dials, and a server config that asks for no client certificate refuses every
//! dialler, since a peer without one names no wirelane id.
#![cfg(feature = "tls")]

mod util;

use std::sync::atomic::{AtomicUsize, Ordering::Relaxed};
use std::sync::Arc;

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::{ring, verify_tls12_signature, verify_tls13_signature, CryptoProvider};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};
use rustls::server::WebPkiClientVerifier;
use rustls::{ClientConfig, DigitallySignedStruct, RootCertStore, ServerConfig, SignatureScheme};
use util::certs::Ca;
use util::refusal::refusal;
use util::{config, connect, node_with, recv};
use wirelane::tls::TlsConfig;
use wirelane::{Error, HandshakeError, Node, PeerId, TlsError};

/// The application's rule for the nodes it dials: exactly one certificate.
#[derive(Debug)]
struct Pinned {
    cert: CertificateDer<'static>,
    provider: Arc<CryptoProvider>,
    asked: AtomicUsize,
}

impl ServerCertVerifier for Pinned {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _name: &ServerName<'_>,
        _ocsp: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        self.asked.fetch_add(1, Relaxed);
        match end_entity.as_ref() == self.cert.as_ref() {
            true => Ok(ServerCertVerified::assertion()),
            false => Err(rustls::Error::General("not the pinned certificate".into())),
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        let algorithms = &self.provider.signature_verification_algorithms;
        verify_tls12_signature(message, cert, dss, algorithms)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        let algorithms = &self.provider.signature_verification_algorithms;
        verify_tls13_signature(message, cert, dss, algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.provider
            .signature_verification_algorithms
            .supported_schemes()
    }
}

fn provider() -> Arc<CryptoProvider> {
    Arc::new(ring::default_provider())
}

/// A server config that asks diallers for a certificate of `ca`, or for none.
fn server(
    ca: &Ca,
    (cert, key): (CertificateDer<'static>, PrivateKeyDer<'static>),
    ask_for_certificates: bool,
) -> Arc<ServerConfig> {
    let builder = ServerConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .expect("versions");
    let builder = match ask_for_certificates {
        true => {
            let mut roots = RootCertStore::empty();
            roots.add(ca.der.clone()).expect("a root");
            let verifier = WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider())
                .build()
                .expect("a client verifier");
            builder.with_client_cert_verifier(verifier)
        }
        false => builder.with_no_client_auth(),
    };
    let config = builder
        .with_single_cert(vec![cert], key)
        .expect("a server config");
    Arc::new(config)
}

/// A client config that trusts only `pinned`.
fn client(
    pinned: Arc<Pinned>,
    (cert, key): (CertificateDer<'static>, PrivateKeyDer<'static>),
) -> Arc<ClientConfig> {
    let config = ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .expect("versions")
        .dangerous()
        .with_custom_certificate_verifier(pinned)
        .with_client_auth_cert(vec![cert], key)
        .expect("a client config");
    Arc::new(config)
}

fn pin(cert: &CertificateDer<'static>) -> Arc<Pinned> {
    Arc::new(Pinned {
        cert: cert.clone(),
        provider: provider(),
        asked: AtomicUsize::new(0),
    })
}

/// A node with configs of its own making, and what it was made with.
struct Made {
    node: Node,
    /// Its certificate, of `ca`, naming its id.
    cert: CertificateDer<'static>,
    /// The verifier of the nodes it dials.
    verifier: Arc<Pinned>,
}

/// Node `id` with a certificate of `ca`, dialling only the node whose certificate
/// is `pinned` (its own if `None`), and asking diallers for a certificate of `ca`
/// if `ask`.
fn made(ca: &Ca, id: u64, pinned: Option<&CertificateDer<'static>>, ask: bool) -> Made {
    let (cert, key) = ca.node(id, false);
    let verifier = pin(pinned.unwrap_or(&cert));
    let tls = TlsConfig::from_rustls(
        client(verifier.clone(), (cert.clone(), key.clone_key())),
        server(ca, (cert.clone(), key), ask),
    );
    Made {
        node: node_with(id, config().tls(tls)),
        cert,
        verifier,
    }
}

#[test]
fn the_applications_own_verifier_decides_whom_a_node_dials() {
    let ca = Ca::new("network ca");
    let b = made(&ca, 2, None, true);

    // A pins b's certificate: they connect and talk.
    let a = made(&ca, 1, Some(&b.cert), true);
    connect(&a.node, &b.node);
    assert!(a.verifier.asked.load(Relaxed) > 0, "a's verifier was asked");
    a.node
        .send(PeerId(2), &b"through the application's configs"[..])
        .expect("send");
    assert_eq!(
        &recv(b.node.incoming()).payload[..],
        b"through the application's configs"
    );

    // C's certificate is as good as a's, but it pins another one: it refuses b.
    let (other, _) = ca.node(2, false);
    let c = made(&ca, 3, Some(&other), true);
    match c.node.connect(b.node.local_addr()) {
        Err(Error::Handshake(HandshakeError::Tls(_))) => {}
        other => panic!("c dialled b against its own verifier: {other:?}"),
    }
    assert!(c.verifier.asked.load(Relaxed) > 0, "c's verifier was asked");
    assert!(!c.node.is_connected(PeerId(2)));
    for m in [a, b, c] {
        m.node.shutdown();
    }
}

#[test]
fn a_server_config_that_asks_for_no_client_certificate_refuses_every_dialler() {
    let ca = Ca::new("network ca");
    let lax = made(&ca, 1, None, false);
    let dialler = made(&ca, 2, Some(&lax.cert), true);
    let seen = refusal(&dialler.node, &lax.node);
    assert_eq!(seen.acceptor, HandshakeError::Tls(TlsError::NoIdentity));
    lax.node.shutdown();
    dialler.node.shutdown();
}
