//! Certificates made inside the TLS tests: a CA, and node certificates carrying
//! their id in a `urn:wirelane:peer:<id>` URI name.

use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose, SanType,
};
use wirelane::tls::{peer_uri, TlsConfig};
use wirelane::PeerId;

use wirelane::tls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};

pub struct Ca {
    issuer: Issuer<'static, KeyPair>,
    pub der: CertificateDer<'static>,
}

impl Ca {
    pub fn new(name: &str) -> Ca {
        let key = KeyPair::generate().expect("a CA key");
        let mut params = CertificateParams::new(Vec::<String>::new()).expect("params");
        params.distinguished_name.push(DnType::CommonName, name);
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
        let cert = params.self_signed(&key).expect("a self-signed CA");
        Ca {
            der: cert.der().clone(),
            issuer: Issuer::new(params, key),
        }
    }

    /// A node certificate naming `id`, valid from yesterday for a year unless
    /// `expired`.
    pub fn node(
        &self,
        id: u64,
        expired: bool,
    ) -> (CertificateDer<'static>, PrivateKeyDer<'static>) {
        let key = KeyPair::generate().expect("a node key");
        let mut params = CertificateParams::new(Vec::<String>::new()).expect("params");
        params
            .distinguished_name
            .push(DnType::CommonName, format!("wirelane node {id}"));
        params.subject_alt_names = vec![SanType::URI(
            peer_uri(PeerId(id)).try_into().expect("an ia5 uri"),
        )];
        params.extended_key_usages = vec![
            ExtendedKeyUsagePurpose::ServerAuth,
            ExtendedKeyUsagePurpose::ClientAuth,
        ];
        if expired {
            params.not_before = rcgen::date_time_ymd(2020, 1, 1);
            params.not_after = rcgen::date_time_ymd(2021, 1, 1);
        } else {
            params.not_before = rcgen::date_time_ymd(2024, 1, 1);
            params.not_after = rcgen::date_time_ymd(2100, 1, 1);
        }
        let cert = params.signed_by(&key, &self.issuer).expect("a node cert");
        let key = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key.serialize_der()));
        (cert.der().clone(), key)
    }

    /// TLS settings for node `id`, trusting this CA.
    pub fn tls(&self, id: u64) -> TlsConfig {
        self.tls_as(id, false)
    }

    pub fn tls_as(&self, id: u64, expired: bool) -> TlsConfig {
        self.tls_trusting(id, expired, self)
    }

    /// TLS settings for node `id` with a certificate of this CA, trusting `trusted`
    /// (a node whose certificate comes from a CA its peers do not trust, but which
    /// trusts theirs).
    pub fn tls_trusting(&self, id: u64, expired: bool, trusted: &Ca) -> TlsConfig {
        let (cert, key) = self.node(id, expired);
        TlsConfig::new(vec![cert], key, vec![trusted.der.clone()]).expect("tls config")
    }
}
