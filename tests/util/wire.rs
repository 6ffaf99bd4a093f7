//! How a scenario's nodes talk: in plaintext, or over mutual TLS with certificates
//! from one CA. A behaviour test written once as a function of the [`Wire`] runs
//! both ways; its TLS run sits behind the `tls` feature.

use wirelane::{Config, Node};

#[cfg(feature = "tls")]
use super::certs::Ca;

pub enum Wire {
    Plain,
    #[cfg(feature = "tls")]
    Tls(Box<Ca>),
}

impl Wire {
    /// Mutual TLS, every node's certificate from one fresh CA.
    #[cfg(feature = "tls")]
    pub fn tls() -> Wire {
        Wire::Tls(Box::new(Ca::new("test ca")))
    }

    /// `config` for node `id`: as it is in plaintext, with the node's certificate
    /// over TLS.
    pub fn config(&self, id: u64, config: Config) -> Config {
        match self {
            Wire::Plain => {
                let _ = id;
                config
            }
            #[cfg(feature = "tls")]
            Wire::Tls(ca) => config.tls(ca.tls(id)),
        }
    }

    /// Node `id`, bound to 127.0.0.1:0, on this wire.
    pub fn node(&self, id: u64, config: Config) -> Node {
        super::node_with(id, self.config(id, config))
    }

    pub fn is_tls(&self) -> bool {
        !matches!(self, Wire::Plain)
    }
}
