//! Authentication during the handshake: who may connect, and who they may claim to be.
//!
//! When a node has an [`Authenticator`], every connection it makes or accepts proves
//! both peers' identities before either is registered. Each side sends a proof over
//! the *transcript* of the handshake — both hellos, byte for byte, the prover's first —
//! and checks the other's. A hello carries a fresh random nonce, so a transcript, and
//! a proof over it, is good for one handshake only: a recorded handshake cannot be
//! replayed. The prover's hello comes first in its transcript and the verifier's in the
//! other's, so a proof cannot be reflected back at the node that made it either.

use std::fmt;

use hmac::{Hmac, Mac};
use sha2::Sha256;

use crate::error::{ConfigError, Error};
use crate::id::PeerId;

/// Proves this node's identity to a peer during the handshake, and checks the peer's.
///
/// The crate builds the transcript; an authenticator only turns it into a proof and
/// checks proofs. [`SharedSecret`] is the built-in one. Implement this trait for other
/// schemes: a key per peer id (so that one compromised key cannot be used to claim
/// another id), or signatures checked against known public keys.
///
/// Both methods run on the connection's own thread during its handshake, holding no
/// lock of the crate; they should not block for long, as the handshake timeout runs.
///
/// # Examples
///
/// A key per peer, so a peer can prove only its own id:
///
/// ```
/// use std::collections::HashMap;
/// use wirelane::{Authenticator, PeerId};
///
/// #[derive(Debug)]
/// struct PerPeerKeys(HashMap<PeerId, Vec<u8>>);
///
/// impl Authenticator for PerPeerKeys {
///     fn prove(&self, local: PeerId, _remote: PeerId, transcript: &[u8]) -> Vec<u8> {
///         tag(&self.0[&local], transcript)
///     }
///     fn verify(&self, _local: PeerId, remote: PeerId, transcript: &[u8], proof: &[u8]) -> bool {
///         self.0.get(&remote).is_some_and(|key| tag(key, transcript) == proof)
///     }
/// }
/// # fn tag(key: &[u8], transcript: &[u8]) -> Vec<u8> {
/// #     key.iter().chain(transcript).map(|b| b.wrapping_mul(31)).collect()
/// # }
/// ```
pub trait Authenticator: Send + Sync + fmt::Debug + 'static {
    /// The proof that this node (`local`) sends to `remote` over `transcript`. At most
    /// [`MAX_PROOF_LEN`](crate::MAX_PROOF_LEN) bytes.
    fn prove(&self, local: PeerId, remote: PeerId, transcript: &[u8]) -> Vec<u8>;

    /// Whether `proof` shows that the peer claiming to be `remote` may connect to
    /// this node (`local`) under that id.
    fn verify(&self, local: PeerId, remote: PeerId, transcript: &[u8], proof: &[u8]) -> bool;
}

/// Authentication by a secret that every node of the network holds.
///
/// The proof is HMAC-SHA256 over the handshake transcript, checked in constant time.
/// A peer without the secret cannot connect, cannot claim any id, and cannot replay a
/// handshake it recorded. Every holder of the secret is trusted alike: any of them can
/// claim any id. Payloads are not encrypted.
///
/// # Examples
///
/// ```
/// use wirelane::{Config, Node, PeerId, SharedSecret};
///
/// let secret = SharedSecret::new(b"correct horse battery staple")?;
/// let config = Config::default().authenticator(secret);
/// let a = Node::bind(PeerId(1), "127.0.0.1:0", config.clone())?;
/// let b = Node::bind(PeerId(2), "127.0.0.1:0", config)?;
/// assert_eq!(a.connect(b.local_addr())?, PeerId(2));
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Clone)]
pub struct SharedSecret {
    key: Vec<u8>,
}

/// The shortest secret [`SharedSecret::new`] accepts.
pub const MIN_SECRET_LEN: usize = 16;

impl SharedSecret {
    /// A shared-secret authenticator.
    ///
    /// # Errors
    ///
    /// Returns [`Error::Config`] if the secret is shorter than [`MIN_SECRET_LEN`] bytes.
    pub fn new(secret: impl AsRef<[u8]>) -> Result<SharedSecret, Error> {
        let key = secret.as_ref();
        if key.len() < MIN_SECRET_LEN {
            return Err(Error::Config(ConfigError::new(
                "secret",
                "must be at least MIN_SECRET_LEN (16) bytes",
            )));
        }
        Ok(SharedSecret { key: key.to_vec() })
    }

    fn mac(&self, transcript: &[u8]) -> Hmac<Sha256> {
        let mut mac =
            Hmac::<Sha256>::new_from_slice(&self.key).expect("HMAC takes a key of any length");
        mac.update(transcript);
        mac
    }
}

impl fmt::Debug for SharedSecret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Never print the key.
        f.write_str("SharedSecret(..)")
    }
}

impl Authenticator for SharedSecret {
    fn prove(&self, _local: PeerId, _remote: PeerId, transcript: &[u8]) -> Vec<u8> {
        self.mac(transcript).finalize().into_bytes().to_vec()
    }

    fn verify(&self, _local: PeerId, _remote: PeerId, transcript: &[u8], proof: &[u8]) -> bool {
        self.mac(transcript).verify_slice(proof).is_ok()
    }
}

/// What every transcript starts with, so that a proof made for another protocol or
/// version never verifies here.
const LABEL: &[u8] = b"wirelane auth v1";

/// The bytes a proof is made over: the label, the prover's hello, the verifier's
/// hello (each exactly as sent).
pub(crate) fn transcript(prover_hello: &[u8], verifier_hello: &[u8]) -> Vec<u8> {
    let mut t = Vec::with_capacity(LABEL.len() + prover_hello.len() + verifier_hello.len());
    t.extend_from_slice(LABEL);
    t.extend_from_slice(prover_hello);
    t.extend_from_slice(verifier_hello);
    t
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shared_secret_proofs_verify_only_with_the_same_secret_and_transcript() {
        let a = SharedSecret::new([7u8; 32]).unwrap();
        let b = SharedSecret::new([7u8; 32]).unwrap();
        let other = SharedSecret::new([8u8; 32]).unwrap();
        let t = transcript(b"hello from a", b"hello from b");
        let proof = a.prove(PeerId(1), PeerId(2), &t);
        assert_eq!(proof.len(), 32);
        assert!(b.verify(PeerId(2), PeerId(1), &t, &proof));
        assert!(!other.verify(PeerId(2), PeerId(1), &t, &proof));
        // The other direction's transcript (hellos swapped) does not verify: no
        // reflection.
        let reflected = transcript(b"hello from b", b"hello from a");
        assert!(!b.verify(PeerId(2), PeerId(1), &reflected, &proof));
        assert!(!b.verify(PeerId(2), PeerId(1), &t, &proof[..31]));
    }

    #[test]
    fn short_secrets_are_refused_and_keys_are_never_printed() {
        assert!(matches!(SharedSecret::new(b"short"), Err(Error::Config(_))));
        let secret = SharedSecret::new(b"0123456789abcdef-secret").unwrap();
        assert_eq!(format!("{secret:?}"), "SharedSecret(..)");
    }
}
