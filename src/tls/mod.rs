//! Mutual TLS 1.3 (feature `tls`): every connection encrypted, and every peer's id
//! bound to its certificate.
//!
//! Both ends present a certificate signed by a CA the other trusts. The dialler is
//! the TLS client and the acceptor the server, but the checks are the same on both
//! sides: the chain must verify against the trusted roots, and the id the
//! certificate carries must be the id the peer announces in its hello. A valid
//! certificate presented under another id is refused with
//! [`TlsError::WrongIdentity`](crate::TlsError::WrongIdentity).
//!
//! # The identity rule
//!
//! By default a certificate names its node with a URI subject alternative name
//! `urn:wirelane:peer:<id>`, the id in decimal ([`peer_uri`] writes it). A renewed
//! certificate for the same id is accepted like the first: nothing is pinned. An
//! application that maps certificates to ids its own way sets
//! [`TlsConfig::identify`].
//!
//! # Example
//!
//! ```no_run
//! use wirelane::{tls::TlsConfig, Config, Node, PeerId};
//!
//! let tls = TlsConfig::from_pem_files("node-1.pem", "node-1.key", "ca.pem")?;
//! let node = Node::bind(PeerId(1), "127.0.0.1:0", Config::default().tls(tls))?;
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

pub(crate) mod session;
mod verify;

use std::fmt;
use std::path::Path;
use std::sync::Arc;

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use rustls::{ClientConfig, RootCertStore, ServerConfig};

use crate::id::PeerId;

/// Certificate and key types, as [`TlsConfig::new`] takes them.
pub use rustls::pki_types;

/// The prefix of the URI a certificate carries its node's id in.
pub const PEER_URI_PREFIX: &str = "urn:wirelane:peer:";

/// The URI subject alternative name that names `peer` in its certificate.
///
/// ```
/// assert_eq!(wirelane::tls::peer_uri(wirelane::PeerId(7)), "urn:wirelane:peer:7");
/// ```
pub fn peer_uri(peer: PeerId) -> String {
    format!("{PEER_URI_PREFIX}{}", peer.0)
}

/// Maps a peer's end-entity certificate (DER) to the id it may use.
pub type Identify = dyn Fn(&[u8]) -> Option<PeerId> + Send + Sync;

/// A node's TLS settings: its certificate chain and key, whom it trusts, and how a
/// certificate names a peer.
#[derive(Clone)]
pub struct TlsConfig {
    client: Arc<ClientConfig>,
    server: Arc<ServerConfig>,
    identify: Arc<Identify>,
}

impl fmt::Debug for TlsConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TlsConfig").finish_non_exhaustive()
    }
}

/// Why TLS settings could not be made.
#[derive(Debug)]
pub struct TlsSetupError(String);

impl fmt::Display for TlsSetupError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "tls setup: {}", self.0)
    }
}

impl std::error::Error for TlsSetupError {}

fn setup(what: impl fmt::Display) -> TlsSetupError {
    TlsSetupError(what.to_string())
}

impl TlsConfig {
    /// Settings from DER: this node's chain (its own certificate first), its key, and
    /// the CA certificates it trusts to sign its peers'.
    ///
    /// # Errors
    ///
    /// The key does not match the certificate, or a CA certificate cannot be parsed.
    pub fn new(
        chain: Vec<CertificateDer<'static>>,
        key: PrivateKeyDer<'static>,
        roots: Vec<CertificateDer<'static>>,
    ) -> Result<TlsConfig, TlsSetupError> {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let mut store = RootCertStore::empty();
        for root in roots {
            store.add(root).map_err(setup)?;
        }
        if store.is_empty() {
            return Err(setup("no trusted CA certificate"));
        }
        let store = Arc::new(store);
        let client_verifier = rustls::server::WebPkiClientVerifier::builder_with_provider(
            store.clone(),
            provider.clone(),
        )
        .build()
        .map_err(setup)?;
        let mut server = ServerConfig::builder_with_provider(provider.clone())
            .with_protocol_versions(&[&rustls::version::TLS13])
            .map_err(setup)?
            .with_client_cert_verifier(client_verifier)
            .with_single_cert(chain.clone(), key.clone_key())
            .map_err(setup)?;
        // No resumption: every connection proves its certificate afresh.
        server.send_tls13_tickets = 0;
        server.session_storage = Arc::new(rustls::server::NoServerSessionStorage {});
        let server_verifier = Arc::new(verify::PeerVerifier::new(store, provider.clone()));
        let mut client = ClientConfig::builder_with_provider(provider)
            .with_protocol_versions(&[&rustls::version::TLS13])
            .map_err(setup)?
            .dangerous()
            .with_custom_certificate_verifier(server_verifier)
            .with_client_auth_cert(chain, key)
            .map_err(setup)?;
        client.enable_sni = false;
        client.resumption = rustls::client::Resumption::disabled();
        Ok(TlsConfig::from_rustls(Arc::new(client), Arc::new(server)))
    }

    /// Settings from PEM files: this node's chain, its key, and the trusted CAs.
    ///
    /// # Errors
    ///
    /// A file cannot be read or holds no certificate or key, or [`TlsConfig::new`]
    /// refuses what they hold.
    pub fn from_pem_files(
        chain: impl AsRef<Path>,
        key: impl AsRef<Path>,
        ca: impl AsRef<Path>,
    ) -> Result<TlsConfig, TlsSetupError> {
        let certs = |path: &Path| -> Result<Vec<CertificateDer<'static>>, TlsSetupError> {
            let certs = CertificateDer::pem_file_iter(path)
                .map_err(|e| setup(format!("{}: {e}", path.display())))?
                .collect::<Result<Vec<_>, _>>()
                .map_err(|e| setup(format!("{}: {e}", path.display())))?;
            if certs.is_empty() {
                return Err(setup(format!("{}: no certificate", path.display())));
            }
            Ok(certs)
        };
        let key_path = key.as_ref();
        let key = PrivateKeyDer::from_pem_file(key_path)
            .map_err(|e| setup(format!("{}: {e}", key_path.display())))?;
        TlsConfig::new(certs(chain.as_ref())?, key, certs(ca.as_ref())?)
    }

    /// Settings from rustls configs built by the application: its own verifiers,
    /// versions or providers. The client config is used for connections this node
    /// dials, the server config for those it accepts; the server config must ask
    /// for client certificates, or [`TlsError::NoIdentity`](crate::TlsError::NoIdentity)
    /// refuses every dialler.
    pub fn from_rustls(client: Arc<ClientConfig>, server: Arc<ServerConfig>) -> TlsConfig {
        TlsConfig {
            client,
            server,
            identify: Arc::new(peer_in_uri),
        }
    }

    /// Replaces the identity rule: `identify` gets a peer's end-entity certificate
    /// (DER) and returns the id it may use, or `None` to refuse it.
    #[must_use]
    pub fn identify(
        mut self,
        identify: impl Fn(&[u8]) -> Option<PeerId> + Send + Sync + 'static,
    ) -> TlsConfig {
        self.identify = Arc::new(identify);
        self
    }

    pub(crate) fn session(&self, inbound: bool) -> session::Session {
        let conn: rustls::Connection = if inbound {
            rustls::ServerConnection::new(self.server.clone())
                .expect("a server config makes a connection")
                .into()
        } else {
            // The name is not checked (the id in the certificate is) and not sent.
            let name = ServerName::try_from("wirelane.invalid").expect("a valid name");
            rustls::ClientConnection::new(self.client.clone(), name)
                .expect("a client config makes a connection")
                .into()
        };
        session::Session::new(conn, self.identify.clone())
    }
}

/// The default identity rule: the one `urn:wirelane:peer:<id>` URI name.
fn peer_in_uri(der: &[u8]) -> Option<PeerId> {
    let der = CertificateDer::from(der);
    let cert = webpki::EndEntityCert::try_from(&der).ok()?;
    let mut ids = cert
        .valid_uri_names()
        .filter_map(|uri| uri.strip_prefix(PEER_URI_PREFIX))
        .map(|id| id.parse::<u64>().ok());
    match (ids.next(), ids.next()) {
        (Some(Some(id)), None) => Some(PeerId(id)),
        _ => None,
    }
}
