//! Control-API authentication: one credential, checked on every request to the publish port
//! (and, with `metrics_auth`, the metrics port). Pure: no I/O, no clock.
//!
//! Off by default, as in Pushpin (which has none; grip-spec §4.1). Turned on by one of the
//! tuning keys `control_auth_bearer`, `control_auth_bearer_file`, `control_auth_basic` or
//! `control_auth_basic_file` (see [`crate::config::tuning`]); there is deliberately no
//! command-line option, so the secret never shows in `ps`.
//!
//! | `Authorization` | Verdict |
//! |---|---|
//! | absent (or empty) | [`Refusal::Missing`] |
//! | another scheme than the configured one (case-insensitive, RFC 9110 §11.1) | [`Refusal::WrongScheme`] |
//! | `Basic` whose credentials are not valid base64 | [`Refusal::Wrong`] |
//! | the configured scheme with other credentials | [`Refusal::Wrong`] |
//! | the configured scheme and credentials | allowed |
//!
//! Only the first `Authorization` header counts. A refusal is answered `401` with
//! [`Credential::challenge`] as `WWW-Authenticate`, counted and logged at debug level (never
//! with the credentials).
//!
//! **Constant time.** Only the SHA-256 digest of the configured secret is kept (the secret
//! itself is dropped at load, so nothing can log it later). A presented credential is hashed
//! the same way and the two 32-byte digests are compared with `subtle`'s `ConstantTimeEq`,
//! which looks at every byte whatever the first difference. Hashing first matters: comparing
//! the raw strings, even in constant time per byte, must stop at the shorter one and so leaks
//! the secret's length; two digests always have the same length. The time to hash depends
//! only on the length of what the client sent, which the client already knows.

use base64::engine::general_purpose::STANDARD;
use base64::Engine as _;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

/// Longest bearer token or `user:pass` accepted in configuration (a secret is a few dozen
/// bytes; anything longer is a file given by mistake).
pub const SECRET_BYTES_MAX: usize = 4096;

/// The HTTP authentication scheme a [`Credential`] expects.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scheme {
    /// `Authorization: Bearer TOKEN` (RFC 6750).
    Bearer,
    /// `Authorization: Basic base64(user:pass)` (RFC 7617).
    Basic,
}

impl Scheme {
    /// The scheme name as sent on the wire.
    pub fn name(self) -> &'static str {
        match self {
            Scheme::Bearer => "Bearer",
            Scheme::Basic => "Basic",
        }
    }
}

/// Why a request was refused (for the debug log and tests; never shown to the client beyond
/// the `401`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// No `Authorization` header.
    Missing,
    /// An `Authorization` header with another scheme.
    WrongScheme,
    /// The right scheme with credentials that do not match.
    Wrong,
}

impl Refusal {
    /// A short description for logs.
    pub fn as_str(self) -> &'static str {
        match self {
            Refusal::Missing => "no Authorization header",
            Refusal::WrongScheme => "wrong authentication scheme",
            Refusal::Wrong => "wrong credentials",
        }
    }
}

/// A secret as read from the tuning file, before it becomes a [`Credential`]. `Debug` never
/// shows it.
#[derive(Clone, PartialEq, Eq, Default, serde::Deserialize)]
#[serde(transparent)]
pub struct Secret(pub String);

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Secret(<redacted>)")
    }
}

/// The configured secret, kept only as a digest. `Debug` shows the scheme alone.
#[derive(Clone, PartialEq, Eq)]
pub struct Credential {
    scheme: Scheme,
    digest: [u8; 32],
}

impl std::fmt::Debug for Credential {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Credential")
            .field("scheme", &self.scheme)
            .finish_non_exhaustive()
    }
}

/// Where authentication applies: the control port always, the metrics port with
/// `metrics_auth = true`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ControlAuth {
    pub credential: Credential,
    /// Apply the credential to the Prometheus port as well.
    pub metrics: bool,
}

fn digest(bytes: &[u8]) -> [u8; 32] {
    Sha256::digest(bytes).into()
}

impl Credential {
    /// A bearer token: 1 to [`SECRET_BYTES_MAX`] visible ASCII characters, no spaces (it
    /// travels as one header token).
    pub fn bearer(token: &str) -> Result<Credential, String> {
        if token.is_empty() {
            return Err("the bearer token is empty".to_string());
        }
        if token.len() > SECRET_BYTES_MAX {
            return Err(format!(
                "the bearer token is {} bytes; at most {SECRET_BYTES_MAX}",
                token.len()
            ));
        }
        if !token.bytes().all(|b| b.is_ascii_graphic()) {
            return Err(
                "the bearer token must be visible ASCII characters without spaces".to_string(),
            );
        }
        Ok(Credential {
            scheme: Scheme::Bearer,
            digest: digest(token.as_bytes()),
        })
    }

    /// Basic credentials `user:pass`: a non-empty user without `:` (RFC 7617), a non-empty
    /// password, no control characters, at most [`SECRET_BYTES_MAX`] bytes.
    pub fn basic(user_pass: &str) -> Result<Credential, String> {
        let Some((user, pass)) = user_pass.split_once(':') else {
            return Err("basic credentials must be user:pass".to_string());
        };
        if user.is_empty() || pass.is_empty() {
            return Err("basic credentials must be user:pass with neither empty".to_string());
        }
        if user_pass.len() > SECRET_BYTES_MAX {
            return Err(format!(
                "basic credentials are {} bytes; at most {SECRET_BYTES_MAX}",
                user_pass.len()
            ));
        }
        if user_pass.chars().any(char::is_control) {
            return Err("basic credentials must not contain control characters".to_string());
        }
        Ok(Credential {
            scheme: Scheme::Basic,
            digest: digest(user_pass.as_bytes()),
        })
    }

    pub fn scheme(&self) -> Scheme {
        self.scheme
    }

    /// The `WWW-Authenticate` value of a `401`.
    pub fn challenge(&self) -> &'static str {
        match self.scheme {
            Scheme::Bearer => "Bearer realm=\"tack\"",
            Scheme::Basic => "Basic realm=\"tack\", charset=\"UTF-8\"",
        }
    }

    /// Check the value of a request's first `Authorization` header (see the module table).
    pub fn check(&self, authorization: Option<&[u8]>) -> Result<(), Refusal> {
        let value = authorization.map(<[u8]>::trim_ascii).unwrap_or_default();
        if value.is_empty() {
            return Err(Refusal::Missing);
        }
        let (scheme, rest) = match value.iter().position(|&b| b == b' ' || b == b'\t') {
            Some(i) => (&value[..i], value[i..].trim_ascii()),
            None => (value, &b""[..]),
        };
        if !scheme.eq_ignore_ascii_case(self.scheme.name().as_bytes()) {
            return Err(Refusal::WrongScheme);
        }
        let presented = match self.scheme {
            Scheme::Bearer => digest(rest),
            Scheme::Basic => match STANDARD.decode(rest) {
                Ok(plain) => digest(&plain),
                Err(_) => return Err(Refusal::Wrong),
            },
        };
        debug_assert_eq!(presented.len(), self.digest.len());
        if bool::from(presented.ct_eq(&self.digest)) {
            Ok(())
        } else {
            Err(Refusal::Wrong)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bearer() {
        let c = Credential::bearer("s3cr3t-token").unwrap();
        assert_eq!(c.scheme(), Scheme::Bearer);
        assert_eq!(c.check(Some(b"Bearer s3cr3t-token")), Ok(()));
        // Scheme case-insensitive, extra blanks tolerated.
        assert_eq!(c.check(Some(b"  bearer \t s3cr3t-token ")), Ok(()));
        assert_eq!(c.check(None), Err(Refusal::Missing));
        assert_eq!(c.check(Some(b"")), Err(Refusal::Missing));
        assert_eq!(c.check(Some(b"   ")), Err(Refusal::Missing));
        assert_eq!(c.check(Some(b"Bearer")), Err(Refusal::Wrong));
        assert_eq!(c.check(Some(b"Bearer s3cr3t-toke")), Err(Refusal::Wrong));
        assert_eq!(c.check(Some(b"Bearer s3cr3t-tokenX")), Err(Refusal::Wrong));
        assert_eq!(c.check(Some(b"Bearer S3CR3T-TOKEN")), Err(Refusal::Wrong));
        assert_eq!(
            c.check(Some(b"Bearers3cr3t-token")),
            Err(Refusal::WrongScheme)
        );
        assert_eq!(
            c.check(Some(b"Basic czNjcjN0LXRva2Vu")),
            Err(Refusal::WrongScheme)
        );
        assert_eq!(c.challenge(), "Bearer realm=\"tack\"");
    }

    #[test]
    fn basic() {
        let c = Credential::basic("alice:pa:ss wörd").unwrap();
        let good = format!("Basic {}", STANDARD.encode("alice:pa:ss wörd"));
        assert_eq!(c.check(Some(good.as_bytes())), Ok(()));
        assert_eq!(
            c.check(Some(good.to_ascii_uppercase().as_bytes())),
            Err(Refusal::Wrong)
        );
        let other = format!("Basic {}", STANDARD.encode("alice:pass"));
        assert_eq!(c.check(Some(other.as_bytes())), Err(Refusal::Wrong));
        assert_eq!(c.check(Some(b"Basic !!notbase64")), Err(Refusal::Wrong));
        assert_eq!(
            c.check(Some(b"Bearer alice:pa:ss")),
            Err(Refusal::WrongScheme)
        );
        assert!(c.challenge().starts_with("Basic realm=\"tack\""));
    }

    #[test]
    fn configuration_is_validated() {
        assert_eq!(
            Credential::bearer("").unwrap_err(),
            "the bearer token is empty"
        );
        assert!(Credential::bearer("a b").is_err());
        assert!(Credential::bearer("tök").is_err());
        assert!(Credential::bearer(&"x".repeat(SECRET_BYTES_MAX + 1)).is_err());
        assert!(Credential::bearer(&"x".repeat(SECRET_BYTES_MAX)).is_ok());
        assert_eq!(
            Credential::basic("alice").unwrap_err(),
            "basic credentials must be user:pass"
        );
        assert!(Credential::basic(":pw").is_err());
        assert!(Credential::basic("alice:").is_err());
        assert!(Credential::basic("alice:p\nw").is_err());
    }

    #[test]
    fn debug_never_shows_the_secret() {
        let c = Credential::bearer("hunter2").unwrap();
        let shown = format!("{c:?}");
        assert_eq!(shown, "Credential { scheme: Bearer, .. }");
        assert!(!shown.contains("hunter2"));
    }
}
