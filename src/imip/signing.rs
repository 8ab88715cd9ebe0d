//! DKIM signatures on the iMIP mail the bridge writes (RFC 6376,
//! relaxed/relaxed), with the key configured for `smtp.from`'s domain, so
//! the From domain aligns for DMARC at the receiving mail system.
//! mail-auth writes the signature; the key is the one the bridge signs
//! its iSchedule requests with.

use mail_auth::common::crypto::{Algorithm, Sha256, SigningKey};
use mail_auth::common::headers::{HeaderWriter, Writable};
use mail_auth::dkim::{Canonicalization, DkimSigner};

use crate::config::Config;
use crate::dkim;

/// The headers a reader sees and a forger would change.
const SIGNED: [&str; 9] = [
    "From",
    "Sender",
    "To",
    "Reply-To",
    "Subject",
    "Date",
    "Message-ID",
    "MIME-Version",
    "Content-Type",
];

#[derive(Debug, thiserror::Error)]
#[error("DKIM-signing the mail for {domain}: {reason}")]
pub struct SignError {
    pub domain: String,
    pub reason: String,
}

/// The bridge's own key, as mail-auth's signer wants it.
struct Key<'a>(&'a dkim::SigningKey);

impl SigningKey for Key<'_> {
    type Hasher = Sha256;

    fn sign(&self, input: impl Writable) -> mail_auth::Result<Vec<u8>> {
        let mut data = Vec::new();
        input.write(&mut data);
        self.0.sign(&data).map_err(|e| {
            mail_auth::Error::Crypto(mail_auth::common::crypto::CryptoError::Library(
                e.to_string(),
            ))
        })
    }

    fn algorithm(&self) -> Algorithm {
        Algorithm::RsaSha256
    }
}

/// `message` with a `DKIM-Signature` header in front when `smtp.from`'s
/// domain has a key; unchanged otherwise.
pub fn sign(config: &Config, message: Vec<u8>) -> Result<Vec<u8>, SignError> {
    let Some(domain) = config.smtp.from.rsplit_once('@').map(|(_, d)| d) else {
        return Ok(message);
    };
    let Some(key) = config.signing_key(domain) else {
        return Ok(message);
    };
    let signature = DkimSigner::from_key(Key(&key.key))
        .domain(key.domain.as_str())
        .selector(key.selector.as_str())
        .headers(SIGNED)
        .header_canonicalization(Canonicalization::Relaxed)
        .body_canonicalization(Canonicalization::Relaxed)
        .sign(&message)
        .map_err(|e| SignError {
            domain: key.domain.clone(),
            reason: e.to_string(),
        })?;
    let mut signed = signature.to_header().into_bytes();
    signed.extend(message);
    Ok(signed)
}
