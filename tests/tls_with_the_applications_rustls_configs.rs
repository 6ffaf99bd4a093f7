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
use wirelane::{Error, HandshakeError, PeerId, TlsError};

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

#[test]
fn the_applications_own_verifier_decides_whom_a_node_dials() {
    let ca = Ca::new("network ca");
    let (b_cert, b_key) = ca.node(2, false);
    let b_tls = TlsConfig::from_rustls(
        client(pin(&b_cert), ca.node(2, false)),
        server(&ca, (b_cert.clone(), b_key), true),
    );
    let b = node_with(2, config().tls(b_tls));

    // A pins b's certificate: they connect and talk.
    let pinned_b = pin(&b_cert);
    let a_tls = TlsConfig::from_rustls(
        client(pinned_b.clone(), ca.node(1, false)),
        server(&ca, ca.node(1, false), true),
    );
    let a = node_with(1, config().tls(a_tls));
    connect(&a, &b);
    assert!(pinned_b.asked.load(Relaxed) > 0, "a's verifier was asked");
    a.send(PeerId(2), &b"through the application's configs"[..])
        .expect("send");
    assert_eq!(
        &recv(b.incoming()).payload[..],
        b"through the application's configs"
    );

    // C's certificate is as good as a's, but it pins another one: it refuses b.
    let (other, _) = ca.node(2, false);
    let pinned_other = pin(&other);
    let c_tls = TlsConfig::from_rustls(
        client(pinned_other.clone(), ca.node(3, false)),
        server(&ca, ca.node(3, false), true),
    );
    let c = node_with(3, config().tls(c_tls));
    match c.connect(b.local_addr()) {
        Err(Error::Handshake(HandshakeError::Tls(_))) => {}
        other => panic!("c dialled b against its own verifier: {other:?}"),
    }
    assert!(
        pinned_other.asked.load(Relaxed) > 0,
        "c's verifier was asked"
    );
    assert!(!c.is_connected(PeerId(2)));
    for node in [a, b, c] {
        node.shutdown();
    }
}

#[test]
fn a_server_config_that_asks_for_no_client_certificate_refuses_every_dialler() {
    let ca = Ca::new("network ca");
    let (cert, key) = ca.node(1, false);
    let lax = TlsConfig::from_rustls(
        client(pin(&cert), ca.node(1, false)),
        server(&ca, (cert.clone(), key), false),
    );
    let node = node_with(1, config().tls(lax));
    let dialler = node_with(
        2,
        config().tls(TlsConfig::from_rustls(
            client(pin(&cert), ca.node(2, false)),
            server(&ca, ca.node(2, false), true),
        )),
    );
    let seen = refusal(&dialler, &node);
    assert_eq!(seen.acceptor, HandshakeError::Tls(TlsError::NoIdentity));
    node.shutdown();
    dialler.shutdown();
}
