//! `certs`: a fresh CA and a certificate per wirelane id, as PEM files that
//! `TlsConfig::from_pem_files` reads; and the same in memory ([`Authority`]) for the
//! runs that compare TLS with plaintext (`--tls`).
//!
//! A node certificate names its node the way wirelane's default identity rule
//! reads it: one URI subject alternative name `urn:wirelane:peer:<id>`
//! ([`peer_uri`]). It is valid for both ends of a connection (server and client
//! authentication), since every node both dials and accepts.

use std::fs::{self, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use anyhow::{bail, Context};
use rcgen::{
    BasicConstraints, Certificate, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa,
    Issuer, KeyPair, KeyUsagePurpose, SanType,
};
use wirelane::tls::pki_types::{PrivateKeyDer, PrivatePkcs8KeyDer};
use wirelane::tls::{peer_uri, TlsConfig};
use wirelane::PeerId;

use crate::report::{Output, Record};

const DAY: Duration = Duration::from_secs(24 * 60 * 60);

/// Writes a fresh CA (ca.pem, ca.key) and, per id, node-ID.pem and node-ID.key:
/// certificates carrying the id as the URI name urn:wirelane:peer:ID, signed by
/// that CA, for --cert/--key/--ca. Refuses to overwrite a file.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// The directory to write into (made if missing).
    #[arg(long)]
    out: PathBuf,
    /// The peer ids to make node certificates for, comma-separated.
    #[arg(long, required = true, value_delimiter = ',')]
    ids: Vec<u64>,
    /// Days the certificates stay valid, from now (they are valid from a day ago,
    /// so that a clock a little behind accepts them).
    #[arg(long, default_value_t = 365, value_parser = clap::value_parser!(u64).range(1..=36_500))]
    days: u64,
}

pub fn run(args: &Args, out: Output) -> anyhow::Result<ExitCode> {
    let dir = &args.out;
    let mut ids = args.ids.clone();
    ids.sort_unstable();
    ids.dedup();
    let files = files(&ids);
    // Nothing is written unless everything can be: an existing CA key in particular
    // must never be lost to a new one.
    for name in &files {
        let path = dir.join(name);
        if path.exists() {
            bail!("{} exists: not overwritten", path.display());
        }
    }
    fs::create_dir_all(dir).with_context(|| format!("cannot make {}", dir.display()))?;
    let validity = DAY * args.days as u32;
    let ca = Authority::new(validity)?;
    write(&dir.join("ca.pem"), &ca.cert.pem(), false)?;
    write(&dir.join("ca.key"), &ca.issuer.key().serialize_pem(), true)?;
    let mut records = Vec::new();
    for &id in &ids {
        let (cert, key) = ca.node(PeerId(id), validity)?;
        let (pem, key_file) = (
            dir.join(format!("node-{id}.pem")),
            dir.join(format!("node-{id}.key")),
        );
        write(&pem, &cert.pem(), false)?;
        write(&key_file, &key.serialize_pem(), true)?;
        records.push(
            Record::new("certs", "rcgen")
                .set("id", id)
                .set("uri", peer_uri(PeerId(id)))
                .set("cert", pem.display().to_string())
                .set("key", key_file.display().to_string()),
        );
    }
    out.records(
        &format!(
            "certs: a CA and {} node certificate(s) in {}",
            ids.len(),
            dir.display()
        ),
        &records,
    );
    out.note(&format!(
        "use: --cert {0}/node-{{id}}.pem --key {0}/node-{{id}}.key --ca {0}/ca.pem",
        dir.display()
    ));
    Ok(ExitCode::SUCCESS)
}

/// The files `run` writes for `ids`.
fn files(ids: &[u64]) -> Vec<String> {
    let mut names = vec!["ca.pem".to_owned(), "ca.key".to_owned()];
    for id in ids {
        names.push(format!("node-{id}.pem"));
        names.push(format!("node-{id}.key"));
    }
    names
}

/// Writes a new file; a private key is readable by its owner only.
fn write(path: &Path, text: &str, secret: bool) -> anyhow::Result<()> {
    let mut options = OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    if secret {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(0o600);
    }
    #[cfg(not(unix))]
    let _ = secret;
    let mut file = options
        .open(path)
        .with_context(|| format!("cannot create {}", path.display()))?;
    file.write_all(text.as_bytes())
        .with_context(|| format!("cannot write {}", path.display()))
}

/// A CA that signs node certificates: on disk for `certs`, in memory for `--tls`.
pub struct Authority {
    issuer: Issuer<'static, KeyPair>,
    cert: Certificate,
    validity: Duration,
}

impl Authority {
    /// A fresh CA with a fresh key (ECDSA P-256), valid for `validity` from now.
    pub fn new(validity: Duration) -> anyhow::Result<Authority> {
        let key = KeyPair::generate()?;
        let mut params = CertificateParams::new(Vec::<String>::new())?;
        params
            .distinguished_name
            .push(DnType::CommonName, "wirelane-bench CA");
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
        valid_for(&mut params, validity)?;
        let cert = params.self_signed(&key)?;
        Ok(Authority {
            issuer: Issuer::new(params, key),
            cert,
            validity,
        })
    }

    /// A certificate for `id` with a fresh key, signed by this CA.
    pub fn node(&self, id: PeerId, validity: Duration) -> anyhow::Result<(Certificate, KeyPair)> {
        let key = KeyPair::generate()?;
        let mut params = CertificateParams::new(Vec::<String>::new())?;
        params
            .distinguished_name
            .push(DnType::CommonName, format!("wirelane node {}", id.0));
        params.subject_alt_names = vec![SanType::URI(peer_uri(id).try_into()?)];
        params.extended_key_usages = vec![
            ExtendedKeyUsagePurpose::ServerAuth,
            ExtendedKeyUsagePurpose::ClientAuth,
        ];
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        valid_for(&mut params, validity)?;
        let cert = params.signed_by(&key, &self.issuer)?;
        Ok((cert, key))
    }

    /// TLS settings for node `id`: a fresh certificate of its own, trusting this CA.
    pub fn tls(&self, id: PeerId) -> anyhow::Result<TlsConfig> {
        let (cert, key) = self.node(id, self.validity)?;
        let key = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key.serialize_der()));
        Ok(TlsConfig::new(
            vec![cert.der().clone()],
            key,
            vec![self.cert.der().clone()],
        )?)
    }
}

/// Valid from a day ago (a clock a little behind still accepts it) to `validity`
/// from now.
fn valid_for(params: &mut CertificateParams, validity: Duration) -> anyhow::Result<()> {
    let now = SystemTime::now().duration_since(UNIX_EPOCH)?;
    let epoch = rcgen::date_time_ymd(1970, 1, 1);
    params.not_before = epoch + now.saturating_sub(DAY);
    params.not_after = epoch + now + validity;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    use wirelane::{Config, Node};

    /// A fresh directory under the system's temporary one.
    fn scratch(name: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!(
            "wirelane-bench-{name}-{}-{}",
            std::process::id(),
            SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map_or(0, |d| d.as_nanos())
        ));
        let _ = fs::remove_dir_all(&dir);
        dir
    }

    #[test]
    fn written_certificates_connect_two_nodes_under_their_ids() {
        let dir = scratch("certs");
        let args = Args {
            out: dir.clone(),
            ids: vec![2, 1, 2],
            days: 1,
        };
        run(&args, Output { json: true }).expect("certs written");
        let tls = |id: u64| {
            TlsConfig::from_pem_files(
                dir.join(format!("node-{id}.pem")),
                dir.join(format!("node-{id}.key")),
                dir.join("ca.pem"),
            )
            .expect("the files load")
        };
        let a = Node::bind(PeerId(1), "127.0.0.1:0", Config::default().tls(tls(1))).expect("bind");
        let b = Node::bind(PeerId(2), "127.0.0.1:0", Config::default().tls(tls(2))).expect("bind");
        assert_eq!(a.connect(b.local_addr()).expect("connect"), PeerId(2));
        a.shutdown();
        b.shutdown();
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = fs::metadata(dir.join("ca.key"))
                .expect("ca.key")
                .permissions()
                .mode();
            assert_eq!(mode & 0o077, 0, "a key is readable by its owner only");
        }
        // A second run into the same directory leaves the CA alone.
        let again = run(&args, Output { json: true });
        assert!(again.is_err_and(|e| e.to_string().contains("not overwritten")));
        let _ = fs::remove_dir_all(&dir);
    }

    #[test]
    fn a_certificate_for_one_id_is_refused_under_another() {
        let ca = Authority::new(DAY).expect("a CA");
        let a = Node::bind(
            PeerId(1),
            "127.0.0.1:0",
            Config::default().tls(ca.tls(PeerId(1)).expect("tls")),
        )
        .expect("bind");
        // Node 2 presents node 3's certificate.
        let b = Node::bind(
            PeerId(2),
            "127.0.0.1:0",
            Config::default().tls(ca.tls(PeerId(3)).expect("tls")),
        )
        .expect("bind");
        let refused = a.connect(b.local_addr());
        assert!(
            refused.is_err(),
            "a certificate naming 3 must not pass as 2"
        );
        a.shutdown();
        b.shutdown();
    }
}
