//! Keys: the private key a domain signs with, the public key record it
//! publishes (`v=DKIM1; k=rsa; p=...`), and reading such records back.

use std::fmt;
use std::sync::Arc;

use aws_lc_rs::encoding::AsDer;
use aws_lc_rs::rand::SystemRandom;
use aws_lc_rs::rsa::{KeyPair, KeySize};
use aws_lc_rs::signature::KeyPair as _;
use aws_lc_rs::signature::{
    UnparsedPublicKey, RSA_PKCS1_1024_8192_SHA256_FOR_LEGACY_USE_ONLY, RSA_PKCS1_SHA256,
};
use base64::engine::general_purpose::STANDARD;
use base64::Engine;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::PrivateKeyDer;

use super::tags::{without_whitespace, TagList};

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum KeyError {
    #[error("not a PEM private key: {0}")]
    Pem(String),
    #[error("not an RSA private key the signer can use: {0}")]
    Rsa(String),
    #[error("{0} bits is not a key size offered (2048, 3072 or 4096)")]
    Size(u32),
    #[error("not an RSA public key (base64 SubjectPublicKeyInfo or RSAPublicKey): {0}")]
    Public(String),
}

/// A domain's RSA signing key (PKCS#8 or PKCS#1 PEM).
#[derive(Clone)]
pub struct SigningKey {
    pair: Arc<KeyPair>,
}

impl fmt::Debug for SigningKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "SigningKey(RSA {} bits)", self.bits())
    }
}

impl SigningKey {
    pub fn from_pem(pem: &[u8]) -> Result<SigningKey, KeyError> {
        let der = PrivateKeyDer::from_pem_slice(pem).map_err(|e| KeyError::Pem(e.to_string()))?;
        let pair = match der {
            PrivateKeyDer::Pkcs8(k) => KeyPair::from_pkcs8(k.secret_pkcs8_der()),
            PrivateKeyDer::Pkcs1(k) => KeyPair::from_der(k.secret_pkcs1_der()),
            _ => return Err(KeyError::Rsa("an elliptic-curve key (SEC1)".into())),
        }
        .map_err(|e| KeyError::Rsa(e.to_string()))?;
        Ok(SigningKey {
            pair: Arc::new(pair),
        })
    }

    pub fn generate(bits: u32) -> Result<SigningKey, KeyError> {
        let size = match bits {
            2048 => KeySize::Rsa2048,
            3072 => KeySize::Rsa3072,
            4096 => KeySize::Rsa4096,
            _ => return Err(KeyError::Size(bits)),
        };
        let pair = KeyPair::generate(size).map_err(|e| KeyError::Rsa(e.to_string()))?;
        Ok(SigningKey {
            pair: Arc::new(pair),
        })
    }

    pub fn bits(&self) -> usize {
        self.pair.public_modulus_len() * 8
    }

    /// The key as an unencrypted PKCS#8 PEM file.
    pub fn to_pkcs8_pem(&self) -> Result<String, KeyError> {
        let der = self
            .pair
            .as_der()
            .map_err(|e| KeyError::Rsa(e.to_string()))?;
        Ok(pem("PRIVATE KEY", der.as_ref()))
    }

    /// The public half as DKIM publishes it.
    pub fn public_key(&self) -> PublicKey {
        PublicKey {
            rsa: self.pair.public_key().as_ref().to_vec(),
        }
    }

    /// RSASSA-PKCS1-v1_5 with SHA-256 over `data`.
    pub fn sign(&self, data: &[u8]) -> Result<Vec<u8>, KeyError> {
        let mut signature = vec![0; self.pair.public_modulus_len()];
        self.pair
            .sign(
                &RSA_PKCS1_SHA256,
                &SystemRandom::new(),
                data,
                &mut signature,
            )
            .map_err(|e| KeyError::Rsa(e.to_string()))?;
        Ok(signature)
    }
}

/// An RSA public key, kept as its RSAPublicKey (PKCS#1) DER so keys from
/// either encoding compare equal.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PublicKey {
    rsa: Vec<u8>,
}

impl PublicKey {
    /// From a `p=` value: base64 of SubjectPublicKeyInfo (what DKIM
    /// publishes) or of a bare RSAPublicKey.
    pub fn from_base64(p: &str) -> Result<PublicKey, KeyError> {
        let der = STANDARD
            .decode(without_whitespace(p))
            .map_err(|e| KeyError::Public(e.to_string()))?;
        let key = aws_lc_rs::rsa::PublicKey::from_der(&der)
            .map_err(|e| KeyError::Public(e.to_string()))?;
        Ok(PublicKey {
            rsa: key.as_ref().to_vec(),
        })
    }

    /// Base64 of the SubjectPublicKeyInfo, the `p=` value.
    pub fn to_base64(&self) -> String {
        let spki = aws_lc_rs::rsa::PublicKey::from_der(&self.rsa)
            .ok()
            .and_then(|k| k.as_der().ok())
            .map(|der| der.as_ref().to_vec())
            .unwrap_or_default();
        STANDARD.encode(spki)
    }

    /// `v=DKIM1; k=rsa; p=...`: the record for DNS and the well-known URI.
    pub fn record(&self) -> String {
        format!("v=DKIM1; k=rsa; p={}", self.to_base64())
    }

    pub fn verifies(&self, data: &[u8], signature: &[u8]) -> bool {
        UnparsedPublicKey::new(&RSA_PKCS1_1024_8192_SHA256_FOR_LEGACY_USE_ONLY, &self.rsa)
            .verify(data, signature)
            .is_ok()
    }
}

/// A published key record, judged for iSchedule rsa-sha256 signatures.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KeyRecord {
    Usable(PublicKey),
    /// `p=` empty: the signer withdrew the key (RFC 6376 3.6.1).
    Revoked,
    /// A record for something else, and why.
    Unusable(String),
}

impl KeyRecord {
    pub fn parse(text: &str) -> KeyRecord {
        let tags = match TagList::parse(text) {
            Ok(tags) => tags,
            Err(e) => return KeyRecord::Unusable(e.to_string()),
        };
        let unusable = |why: String| KeyRecord::Unusable(why);
        match tags.get("v") {
            None | Some("DKIM1") => {}
            Some(v) => return unusable(format!("v={v} is not DKIM1")),
        }
        match tags.get("k") {
            None | Some("rsa") => {}
            Some(k) => return unusable(format!("k={k} is not rsa")),
        }
        if let Some(h) = tags.get("h") {
            if !h.split(':').any(|h| h.trim() == "sha256") {
                return unusable(format!("h={h} does not allow sha256"));
            }
        }
        // Service types: "*" or iSchedule's own; a key only for e-mail is not for us.
        if let Some(s) = tags.get("s") {
            if !s.split(':').any(|s| matches!(s.trim(), "*" | "ischedule")) {
                return unusable(format!("s={s} is not for ischedule"));
            }
        }
        match tags.get("p") {
            None => unusable("no p= tag".into()),
            Some(p) if without_whitespace(p).is_empty() => KeyRecord::Revoked,
            Some(p) => match PublicKey::from_base64(p) {
                Ok(key) => KeyRecord::Usable(key),
                Err(e) => unusable(e.to_string()),
            },
        }
    }
}

fn pem(label: &str, der: &[u8]) -> String {
    let text = STANDARD.encode(der);
    let mut out = format!("-----BEGIN {label}-----\n");
    for line in text.as_bytes().chunks(64) {
        out.push_str(std::str::from_utf8(line).unwrap_or_default());
        out.push('\n');
    }
    out + &format!("-----END {label}-----\n")
}
