//! SASL for the kafka client: PLAIN (RFC 4616) and SCRAM-SHA-256/512 (RFC 5802, RFC 7677), the
//! client side only, built on `ring` (HMAC, PBKDF2, digests). No secret appears in any error or
//! `Debug` output. Usernames are escaped as RFC 5802 requires (`=` → `=3D`, `,` → `=2C`); SASLprep
//! normalisation is not applied (as in librdkafka and sarama).

use base64::Engine as _;
use ring::{digest, hmac, pbkdf2, rand::SecureRandom};

/// The SASL mechanisms the kafka client speaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Mechanism {
    /// `PLAIN`: username and password in clear (use with TLS).
    Plain,
    /// `SCRAM-SHA-256`.
    ScramSha256,
    /// `SCRAM-SHA-512`.
    ScramSha512,
}

impl Mechanism {
    /// The mechanism name sent in SaslHandshake.
    pub fn name(self) -> &'static str {
        match self {
            Self::Plain => "PLAIN",
            Self::ScramSha256 => "SCRAM-SHA-256",
            Self::ScramSha512 => "SCRAM-SHA-512",
        }
    }
}

/// A SASL exchange that went wrong. Never carries a credential.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SaslError {
    /// The server's message was not what the mechanism expects.
    #[error("malformed SCRAM server message: {0}")]
    Malformed(&'static str),
    /// The server's final signature did not match: it does not know the password (or is not the
    /// server it claims to be).
    #[error("the server's SCRAM signature does not match")]
    BadServerSignature,
    /// The server reported an error in its final message.
    #[error("the server rejected the SCRAM exchange: {0}")]
    ServerError(String),
    /// No randomness for the nonce.
    #[error("cannot generate a SCRAM nonce")]
    NoRandomness,
}

/// The single PLAIN message: `\0username\0password`.
pub fn plain_message(username: &str, password: &str) -> Vec<u8> {
    let mut out = Vec::with_capacity(username.len() + password.len() + 2);
    out.push(0);
    out.extend_from_slice(username.as_bytes());
    out.push(0);
    out.extend_from_slice(password.as_bytes());
    out
}

/// The most PBKDF2 iterations accepted from a server (Kafka allows at most 16384).
const MAX_ITERATIONS: u32 = 100_000;

/// The client side of one SCRAM exchange.
pub struct ScramClient {
    mechanism: Mechanism,
    password: String,
    client_first_bare: String,
    client_nonce: String,
    server_signature: Option<Vec<u8>>,
}

impl std::fmt::Debug for ScramClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ScramClient")
            .field("mechanism", &self.mechanism)
            .finish_non_exhaustive()
    }
}

impl ScramClient {
    /// Starts an exchange with a fresh random nonce. `mechanism` must be a SCRAM one (PLAIN is
    /// treated as SCRAM-SHA-256 here, but has no use for this type).
    pub fn new(mechanism: Mechanism, username: &str, password: &str) -> Result<Self, SaslError> {
        let mut raw = [0u8; 24];
        ring::rand::SystemRandom::new()
            .fill(&mut raw)
            .map_err(|_| SaslError::NoRandomness)?;
        let nonce = base64::engine::general_purpose::STANDARD.encode(raw);
        Ok(Self::with_nonce(mechanism, username, password, nonce))
    }

    /// Starts an exchange with a given nonce (for tests against known vectors).
    pub fn with_nonce(mechanism: Mechanism, username: &str, password: &str, nonce: String) -> Self {
        let name = username.replace('=', "=3D").replace(',', "=2C");
        Self {
            mechanism,
            password: password.to_string(),
            client_first_bare: format!("n={name},r={nonce}"),
            client_nonce: nonce,
            server_signature: None,
        }
    }

    /// The client-first message (`n,,n=user,r=nonce`).
    pub fn client_first(&self) -> Vec<u8> {
        format!("n,,{}", self.client_first_bare).into_bytes()
    }

    fn algorithms(&self) -> (pbkdf2::Algorithm, hmac::Algorithm, &'static digest::Algorithm) {
        match self.mechanism {
            Mechanism::ScramSha512 => (pbkdf2::PBKDF2_HMAC_SHA512, hmac::HMAC_SHA512, &digest::SHA512),
            _ => (pbkdf2::PBKDF2_HMAC_SHA256, hmac::HMAC_SHA256, &digest::SHA256),
        }
    }

    /// Answers the server-first message with the client-final message (with the proof), and
    /// remembers the signature the server must send back.
    pub fn client_final(&mut self, server_first: &[u8]) -> Result<Vec<u8>, SaslError> {
        let text = std::str::from_utf8(server_first).map_err(|_| SaslError::Malformed("not UTF-8"))?;
        let mut nonce = None;
        let mut salt = None;
        let mut iterations = None;
        for attr in text.split(',') {
            match attr.split_once('=') {
                Some(("r", v)) => nonce = Some(v),
                Some(("s", v)) => salt = Some(v),
                Some(("i", v)) => iterations = Some(v),
                Some(("e", _)) => return Err(SaslError::ServerError(attr[2..].to_string())),
                _ => {}
            }
        }
        let nonce = nonce.ok_or(SaslError::Malformed("no nonce"))?;
        if !nonce.starts_with(&self.client_nonce) || nonce.len() == self.client_nonce.len() {
            return Err(SaslError::Malformed(
                "the server nonce does not extend the client nonce",
            ));
        }
        let salt = base64::engine::general_purpose::STANDARD
            .decode(salt.ok_or(SaslError::Malformed("no salt"))?)
            .map_err(|_| SaslError::Malformed("the salt is not base64"))?;
        let iterations: u32 = iterations
            .ok_or(SaslError::Malformed("no iteration count"))?
            .parse()
            .map_err(|_| SaslError::Malformed("the iteration count is not a number"))?;
        if iterations == 0 || iterations > MAX_ITERATIONS {
            return Err(SaslError::Malformed("the iteration count is out of range"));
        }
        let iterations =
            std::num::NonZeroU32::new(iterations).ok_or(SaslError::Malformed("zero iterations"))?;

        let (kdf, mac, hash) = self.algorithms();
        let mut salted = vec![0u8; hash.output_len()];
        pbkdf2::derive(kdf, iterations, &salt, self.password.as_bytes(), &mut salted);
        let salted_key = hmac::Key::new(mac, &salted);
        let client_key = hmac::sign(&salted_key, b"Client Key");
        let stored_key = digest::digest(hash, client_key.as_ref());
        let without_proof = format!("c=biws,r={nonce}");
        let auth_message = format!("{},{text},{without_proof}", self.client_first_bare);
        let client_signature = hmac::sign(&hmac::Key::new(mac, stored_key.as_ref()), auth_message.as_bytes());
        let proof: Vec<u8> = client_key
            .as_ref()
            .iter()
            .zip(client_signature.as_ref())
            .map(|(a, b)| a ^ b)
            .collect();
        let server_key = hmac::sign(&salted_key, b"Server Key");
        let server_signature = hmac::sign(&hmac::Key::new(mac, server_key.as_ref()), auth_message.as_bytes());
        self.server_signature = Some(server_signature.as_ref().to_vec());
        let proof = base64::engine::general_purpose::STANDARD.encode(proof);
        Ok(format!("{without_proof},p={proof}").into_bytes())
    }

    /// Checks the server-final message (`v=signature`).
    pub fn verify_server_final(&self, server_final: &[u8]) -> Result<(), SaslError> {
        let text = std::str::from_utf8(server_final).map_err(|_| SaslError::Malformed("not UTF-8"))?;
        if let Some(error) = text.strip_prefix("e=") {
            return Err(SaslError::ServerError(error.to_string()));
        }
        let signature = text
            .split(',')
            .find_map(|a| a.strip_prefix("v="))
            .ok_or(SaslError::Malformed("no server signature"))?;
        let signature = base64::engine::general_purpose::STANDARD
            .decode(signature)
            .map_err(|_| SaslError::Malformed("the server signature is not base64"))?;
        let expected = self
            .server_signature
            .as_deref()
            .ok_or(SaslError::Malformed("server-final before server-first"))?;
        // Constant time is not needed for a value the server sends us, but costs nothing.
        let equal = signature.len() == expected.len()
            && signature
                .iter()
                .zip(expected)
                .fold(0u8, |acc, (a, b)| acc | (a ^ b))
                == 0;
        if equal {
            Ok(())
        } else {
            Err(SaslError::BadServerSignature)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rfc7677_scram_sha256_vector() {
        let mut c = ScramClient::with_nonce(
            Mechanism::ScramSha256,
            "user",
            "pencil",
            "rOprNGfwEbeRWgbNEkqO".to_string(),
        );
        assert_eq!(c.client_first(), b"n,,n=user,r=rOprNGfwEbeRWgbNEkqO");
        let server_first =
            b"r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0,s=W22ZaJ0SNY7soEsUEjb6gQ==,i=4096";
        let client_final = c.client_final(server_first).unwrap();
        assert_eq!(
            String::from_utf8(client_final).unwrap(),
            "c=biws,r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0,p=dHzbZapWIk4jUhN+Ute9ytag9zjfMHgsqmmiz7AndVQ="
        );
        c.verify_server_final(b"v=6rriTRBi23WpRR/wtup+mMhUZUn/dB5nLTJRsjl95G4=")
            .unwrap();
        assert_eq!(
            c.verify_server_final(b"v=AAAATRBi23WpRR/wtup+mMhUZUn/dB5nLTJRsjl95G4="),
            Err(SaslError::BadServerSignature)
        );
        assert!(matches!(
            c.verify_server_final(b"e=invalid-proof"),
            Err(SaslError::ServerError(_))
        ));
        assert!(!format!("{c:?}").contains("pencil"));
    }

    #[test]
    fn scram_sha512_round_trip_shape() {
        let mut c = ScramClient::new(Mechanism::ScramSha512, "a=b,c", "pw").unwrap();
        let first = String::from_utf8(c.client_first()).unwrap();
        assert!(first.starts_with("n,,n=a=3Db=2Cc,r="), "{first}");
        let nonce = first.rsplit("r=").next().unwrap().to_string();
        let server_first = format!("r={nonce}xyz,s=c2FsdA==,i=4096");
        let fin = String::from_utf8(c.client_final(server_first.as_bytes()).unwrap()).unwrap();
        // SHA-512 proof: 64 bytes → 88 base64 characters.
        assert_eq!(fin.rsplit("p=").next().unwrap().len(), 88);
    }

    #[test]
    fn malformed_server_messages_are_errors() {
        let mut c = ScramClient::with_nonce(Mechanism::ScramSha256, "u", "p", "abc".into());
        for bad in [
            &b"r=zzz,s=c2FsdA==,i=4096"[..],
            b"r=abc,s=c2FsdA==,i=4096",
            b"r=abcd,s=!!,i=4096",
            b"r=abcd,s=c2FsdA==,i=0",
            b"r=abcd,s=c2FsdA==,i=99999999",
            b"r=abcd,s=c2FsdA==",
            b"\xff",
        ] {
            assert!(c.client_final(bad).is_err(), "{bad:?}");
        }
        assert!(c.verify_server_final(b"v=AAAA").is_err());
        assert_eq!(plain_message("u", "p"), b"\0u\0p");
    }
}
