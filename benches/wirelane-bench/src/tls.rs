//! The TLS options of the subcommands that stand up nodes: `--cert`, `--key` and
//! `--ca` (PEM files), and for the comparisons, `--tls` (fresh certificates made in
//! memory). Both end in a [`Security`]: how to make each node's [`Config`].
//!
//! An in-process run has several nodes, each with its own id, and a certificate
//! names exactly one id, so one certificate cannot serve them all: `{id}` in a path
//! stands for each node's id (`--cert dir/node-{id}.pem`), as `certs` names its
//! files. A run of several nodes given a path without it is refused up front.

use std::sync::Arc;
use std::time::Duration;

use anyhow::{bail, Context};
use wirelane::tls::TlsConfig;
use wirelane::{Config, PeerId};

use crate::certs::Authority;

/// What `{id}` is replaced with in a path.
pub const ID: &str = "{id}";

/// `--cert`, `--key`, `--ca`: mutual TLS with certificates from PEM files.
#[derive(Debug, Clone, Default, clap::Args)]
pub struct Files {
    /// This node's certificate chain (PEM), for mutual TLS. `{id}` in the path
    /// stands for the node's id; a run of several nodes needs it.
    #[arg(long, requires_all = ["key", "ca"])]
    pub cert: Option<String>,
    /// This node's private key (PEM); `{id}` as in --cert.
    #[arg(long, requires_all = ["cert", "ca"])]
    pub key: Option<String>,
    /// The CA certificate(s) a peer's certificate must be signed by (PEM).
    #[arg(long, requires_all = ["cert", "key"])]
    pub ca: Option<String>,
}

impl Files {
    /// Whether TLS files were given.
    pub fn given(&self) -> bool {
        self.cert.is_some()
    }

    /// How to secure the nodes `ids` of one run: plaintext without files, else
    /// their files, read (and checked) now, before any node binds.
    ///
    /// # Errors
    ///
    /// Several nodes and a path without `{id}`, or a file that cannot be read.
    pub fn security(&self, ids: &[PeerId]) -> anyhow::Result<Security> {
        let (Some(cert), Some(key), Some(ca)) = (&self.cert, &self.key, &self.ca) else {
            return Ok(Security::Plain);
        };
        if ids.len() > 1 {
            for (option, path) in [("--cert", cert), ("--key", key)] {
                if !path.contains(ID) {
                    bail!(
                        "{option} {path} names one file, but this run has {} nodes (ids {}), \
                         each needing a certificate of its own: put {ID} in the --cert and \
                         --key paths, as in --cert DIR/node-{ID}.pem --key DIR/node-{ID}.key \
                         (`wirelane-bench certs --out DIR --ids {}` makes them)",
                        ids.len(),
                        list(ids, ", "),
                        list(ids, ",")
                    );
                }
            }
        }
        let mut configs = Vec::with_capacity(ids.len());
        for &id in ids {
            let (cert, key) = (expand(cert, id), expand(key, id));
            let tls = TlsConfig::from_pem_files(&cert, &key, ca)
                .with_context(|| format!("TLS for {id}: --cert {cert} --key {key} --ca {ca}"))?;
            configs.push((id, tls));
        }
        Ok(Security::Files(configs))
    }
}

/// `--tls`: compare TLS with plaintext in one run.
#[derive(Debug, Clone, Default, clap::Args)]
pub struct Compare {
    /// Also run wirelane over mutual TLS, with the certificates of --cert/--key/--ca
    /// or else fresh ones made in memory, and report TLS against plaintext.
    #[arg(long)]
    pub tls: bool,
    #[command(flatten)]
    pub files: Files,
}

impl Compare {
    /// What the run measures, for its nodes `ids`: plaintext; TLS alone, with the
    /// files given; or, with `--tls`, plaintext then TLS.
    ///
    /// # Errors
    ///
    /// As [`Files::security`], or a fresh CA cannot be made.
    pub fn securities(&self, ids: &[PeerId]) -> anyhow::Result<Vec<Security>> {
        let given = self.files.security(ids)?;
        Ok(match (self.tls, given.is_tls()) {
            (false, _) => vec![given],
            (true, true) => vec![Security::Plain, given],
            (true, false) => vec![Security::Plain, Security::fresh()?],
        })
    }
}

/// `path` with every `{id}` replaced by `id`'s number.
pub fn expand(path: &str, id: PeerId) -> String {
    path.replace(ID, &id.0.to_string())
}

fn list(ids: &[PeerId], separator: &str) -> String {
    let ids: Vec<String> = ids.iter().map(|id| id.0.to_string()).collect();
    ids.join(separator)
}

/// How the nodes of a run are secured.
#[derive(Clone)]
pub enum Security {
    Plain,
    /// Each node's settings, read from its files.
    Files(Vec<(PeerId, TlsConfig)>),
    /// A CA made for this run, which signs a fresh certificate per node.
    Fresh(Arc<Authority>),
}

impl Security {
    /// Fresh certificates, signed by a CA made now.
    pub fn fresh() -> anyhow::Result<Security> {
        // Long enough for any run; they are never written anywhere.
        let validity = Duration::from_secs(7 * 24 * 60 * 60);
        Ok(Security::Fresh(Arc::new(Authority::new(validity)?)))
    }

    pub fn is_tls(&self) -> bool {
        !matches!(self, Security::Plain)
    }

    /// `base` for node `id`, with its TLS settings if the run has TLS.
    ///
    /// # Errors
    ///
    /// `id` is not a node the files were read for, or its certificate cannot be made.
    pub fn config(&self, base: Config, id: PeerId) -> anyhow::Result<Config> {
        Ok(match self {
            Security::Plain => base,
            Security::Files(configs) => match configs.iter().find(|(i, _)| *i == id) {
                Some((_, tls)) => base.tls(tls.clone()),
                None => bail!("no certificate was read for {id}"),
            },
            Security::Fresh(ca) => base.tls(ca.tls(id)?),
        })
    }

    /// The `impl` name of a wirelane record: `wirelane`, or `wirelane-tls`.
    pub fn name(&self) -> &'static str {
        if self.is_tls() {
            "wirelane-tls"
        } else {
            "wirelane"
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn files(cert: &str, key: &str) -> Files {
        Files {
            cert: Some(cert.to_owned()),
            key: Some(key.to_owned()),
            ca: Some("ca.pem".to_owned()),
        }
    }

    #[test]
    fn id_in_a_path_is_each_nodes_id() {
        assert_eq!(expand("d/node-{id}.pem", PeerId(7)), "d/node-7.pem");
        assert_eq!(expand("d/{id}/{id}.key", PeerId(0)), "d/0/0.key");
        assert_eq!(expand("d/node.pem", PeerId(7)), "d/node.pem");
    }

    #[test]
    fn several_nodes_and_one_certificate_are_refused_with_the_way_out() {
        let two = [PeerId(1), PeerId(2)];
        let Err(e) = files("d/node.pem", "d/node-{id}.key").security(&two) else {
            panic!("one certificate for two nodes was accepted");
        };
        let e = e.to_string();
        assert!(e.contains("--cert d/node.pem names one file"), "{e}");
        assert!(e.contains("ids 1, 2") && e.contains("--ids 1,2"), "{e}");
        let Err(e) = files("d/node-{id}.pem", "d/node.key").security(&two) else {
            panic!("one key for two nodes was accepted");
        };
        assert!(e.to_string().contains("--key d/node.key"), "{e}");
    }

    #[test]
    fn the_three_files_come_together_and_certs_needs_ids() {
        use clap::Parser;
        let parse = |line: &str| crate::cli::Cli::try_parse_from(line.split_whitespace());
        assert!(parse("b serve --listen 127.0.0.1:0 --id 1 --cert c.pem").is_err());
        assert!(parse("b load --connect x:1 --id 1 --cert c.pem --key k.pem").is_err());
        assert!(parse("b mesh --ca ca.pem").is_err());
        assert!(parse("b mesh --cert n-{id}.pem --key n-{id}.key --ca ca.pem").is_ok());
        assert!(parse("b throughput --tls").is_ok());
        assert!(parse("b latency --tls --cert c --key k --ca a").is_ok());
        assert!(parse("b connect --count 0").is_err());
        assert!(parse("b certs --out d").is_err());
        assert!(parse("b certs --out d --ids 1,2,x").is_err());
        assert!(parse("b certs --out d --ids 0,1,2").is_ok());
    }

    #[test]
    fn files_are_read_before_any_node_binds() {
        let Err(e) = files("/nonexistent/node-{id}.pem", "/nonexistent/node-{id}.key")
            .security(&[PeerId(3)])
        else {
            panic!("a missing file was accepted");
        };
        assert!(
            format!("{e:#}").contains("/nonexistent/node-3.pem"),
            "{e:#}"
        );
        assert!(Files::default()
            .security(&[PeerId(1), PeerId(2)])
            .is_ok_and(|s| !s.is_tls()));
    }
}
