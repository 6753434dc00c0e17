//! `Grip-Sig`: the JWT tack adds to every request it forwards to a GRIP backend, and the check
//! of an incoming one against `upstream_key` (grip-spec §5.3).
//!
//! # The token
//!
//! `{"typ":"JWT","alg":<alg>}` . `{"iss":<iss>,"exp":<now+3600>}` . signature, each part
//! base64url without padding, as Pushpin writes it. Nothing binds it to the request. The clock
//! is passed in (`now_unix_s`), never read here. Verification requires the header's `alg` to be
//! the key's own, a valid signature, and an integer `exp > now` (strict, no leeway, as
//! Pushpin's `validate_token`); `iss` is not checked.
//!
//! # Keys and algorithms
//!
//! The algorithm follows the key type, as in Pushpin ([`SigKey`]):
//!
//! | key | algorithm | signature |
//! |---|---|---|
//! | a secret (plain string, `base64:`, `file:` with hex) | HS256 | HMAC-SHA256, 32 bytes |
//! | EC P-256 PEM | ES256 | ECDSA P-256 SHA-256, raw 64-byte `r‖s` (JWS, not DER) |
//! | RSA PEM (2048–4096 bits to sign, up to 8192 to verify) | RS256 | RSASSA-PKCS1-v1_5 SHA-256 |
//!
//! PEM forms ([`SigKey::from_pem`]): a signing key (`sig_key`, route `sig_key=`) must be a
//! private key: PKCS#8 `PRIVATE KEY` (EC or RSA), PKCS#1 `RSA PRIVATE KEY`, and, beyond
//! Pushpin (whose jsonwebtoken has no such tag), SEC1 `EC PRIVATE KEY` with its public key, as
//! `openssl ecparam -genkey` writes it (a leading `EC PARAMETERS` block is skipped). A public
//! key given to sign is a config error (Pushpin would start and silently never sign). A
//! verification key (`upstream_key`) is the matching public key, SPKI `PUBLIC KEY` or PKCS#1
//! `RSA PUBLIC KEY`; a private key is accepted too and only its public half is kept (Pushpin
//! refuses an EC private key there). Encrypted keys and certificates are refused with a hint.
//! Keys are parsed once, at config load ([`pem`] does the PEM/DER syntax, ring checks the key
//! material); minting never touches PEM.
//!
//! # Cost per request, and the token cache
//!
//! HS256 is minted fresh per forwarded request (about a microsecond). ES256 and RS256 cost
//! more (measured on the 2-core dev machine under load: ES256 sign 22 µs, verify 60 µs; RS256
//! 2048-bit sign 0.74 ms, verify 24 µs), and RS256 per request would cap a shard near 1,300
//! forwarded requests a second. Since the claims only change once a second, each shard keeps a
//! [`TokenCache`]: one asymmetric signature per key, issuer and second, reused until the second
//! turns. A reused token is byte-for-byte a valid fresh one (an HS256 token minted in the same
//! second is identical too).
//!
//! # Why ring
//!
//! The signatures come from [`ring`] 0.17 (ECDSA P-256 fixed-length, RSA PKCS#1 v1.5). Weighed
//! against RustCrypto (`p256` + `rsa`) and `jsonwebtoken` (which wraps one of the two):
//! - *what Pushpin does*: Pushpin signs through jsonwebtoken's ring backend, so the same key
//!   checks apply (P-256 only, RSA sizes, PKCS#8 EC with the public key);
//! - *side channels*: the `rsa` crate carries RUSTSEC-2023-0071 (Marvin timing attack) in every
//!   release including 0.10, and tack signs whenever any client makes a request; ring's RSA and
//!   P-256 arithmetic are constant-time;
//! - *speed*: RustCrypto measured 9x slower for ES256 signing (200 µs), 6x for verifying
//!   (340 µs) and 7x for RS256 signing (5.2 ms) in the same run;
//! - *build*: ring adds 3 crates to the lock file (ring, untrusted, getrandom; `cc` and
//!   `cfg-if` were there) and about 13 s of CPU to a clean release build; `p256` 0.13 + `rsa`
//!   0.9 add about 30 crates and 28 s; `p256` 0.14 + `rsa` 0.10 also bring a second
//!   `digest`/`sha2` generation beside `hmac` 0.12;
//! - *not pure Rust*: ring compiles C and assembly with `cc`. tack already needs a C compiler
//!   (mimalloc), so the build needs nothing new.
//!
//! HS256 stays on the `hmac`/`sha2` crates already in the tree. The only non-pure input here
//! is randomness: ECDSA nonces and RSA blinding come from the OS (`ring::rand::SystemRandom`);
//! they do not change what verifies.

pub mod pem;

use std::sync::Arc;

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use hmac::{Hmac, Mac};
use ring::rand::SystemRandom;
use ring::signature::{self as rsig, EcdsaKeyPair, KeyPair as _, RsaKeyPair, UnparsedPublicKey};
use sha2::Sha256;

type HmacSha256 = Hmac<Sha256>;

/// How long a minted token is valid, as Pushpin: one hour.
pub const GRIP_SIG_TTL_S: u64 = 3600;

/// Longest token [`SigKey::verify`] looks at. A genuine token is ~150 bytes (HS256, ES256) or
/// ~460 (RS256 with a 2048-bit key; ~1,480 with 8192 bits); the bound keeps the work on a
/// hostile header small.
pub const MAX_TOKEN_BYTES: usize = 4096;

/// RSA modulus sizes ring verifies (`RSA_PKCS1_2048_8192_SHA256`), checked at load so that a
/// key that could never verify is a config error.
const RSA_VERIFY_BITS: std::ops::RangeInclusive<usize> = 2048..=8192;

/// A JWS algorithm tack signs and verifies with. It follows the key type.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Alg {
    /// HMAC-SHA256, for a secret.
    Hs256,
    /// ECDSA P-256 SHA-256, for an EC key.
    Es256,
    /// RSASSA-PKCS1-v1_5 SHA-256, for an RSA key.
    Rs256,
}

impl Alg {
    /// The JOSE `alg` value.
    pub fn name(self) -> &'static str {
        match self {
            Alg::Hs256 => "HS256",
            Alg::Es256 => "ES256",
            Alg::Rs256 => "RS256",
        }
    }

    /// base64url of the fixed header `{"typ":"JWT","alg":"<alg>"}` (jsonwebtoken's order).
    fn header_b64(self) -> &'static str {
        match self {
            Alg::Hs256 => "eyJ0eXAiOiJKV1QiLCJhbGciOiJIUzI1NiJ9",
            Alg::Es256 => "eyJ0eXAiOiJKV1QiLCJhbGciOiJFUzI1NiJ9",
            Alg::Rs256 => "eyJ0eXAiOiJKV1QiLCJhbGciOiJSUzI1NiJ9",
        }
    }
}

/// What a key is loaded for: it decides which PEM forms are accepted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeyUse {
    /// `sig_key` and route `sig_key=`: needs a private key.
    Sign,
    /// `upstream_key`: a public key (or a private one, of which only the public half is kept).
    Verify,
}

/// A `Grip-Sig` key, parsed once at config load. Cloning is cheap (asymmetric keys are shared).
#[derive(Clone)]
pub enum SigKey {
    /// An HMAC secret: HS256.
    Secret(Vec<u8>),
    /// An EC P-256 key: ES256.
    Ec(Arc<EcKey>),
    /// An RSA key: RS256.
    Rsa(Arc<RsaKey>),
}

/// An EC P-256 key: the key pair when it can sign, and always the public point.
pub struct EcKey {
    pair: Option<EcdsaKeyPair>,
    /// Uncompressed SEC1 point, 65 bytes.
    public: Vec<u8>,
}

/// An RSA key: the key pair when it can sign, and always the public key.
pub struct RsaKey {
    pair: Option<RsaKeyPair>,
    /// DER `RSAPublicKey`.
    public: Vec<u8>,
    modulus_bits: usize,
}

impl PartialEq for SigKey {
    /// Same key material and the same abilities (a public key differs from its private key).
    fn eq(&self, other: &Self) -> bool {
        match (self, other) {
            (SigKey::Secret(a), SigKey::Secret(b)) => a == b,
            (SigKey::Ec(a), SigKey::Ec(b)) => {
                Arc::ptr_eq(a, b) || (a.public == b.public && a.pair.is_some() == b.pair.is_some())
            }
            (SigKey::Rsa(a), SigKey::Rsa(b)) => {
                Arc::ptr_eq(a, b) || (a.public == b.public && a.pair.is_some() == b.pair.is_some())
            }
            _ => false,
        }
    }
}

impl Eq for SigKey {}

impl std::fmt::Debug for SigKey {
    // Never print key material into logs.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let half = |private: bool| if private { "private" } else { "public" };
        match self {
            SigKey::Secret(s) => write!(f, "SigKey::Secret(<{} bytes>)", s.len()),
            SigKey::Ec(k) => write!(f, "SigKey::Ec(ES256 P-256, {})", half(k.pair.is_some())),
            SigKey::Rsa(k) => write!(
                f,
                "SigKey::Rsa(RS256 {}-bit, {})",
                k.modulus_bits,
                half(k.pair.is_some())
            ),
        }
    }
}

impl SigKey {
    /// Loads a PEM key (see the module doc for the accepted forms). Errors are sentences
    /// naming the PEM line where it helps; the caller adds the file and config line.
    pub fn from_pem(text: &str, key_use: KeyUse) -> Result<SigKey, String> {
        let blocks = pem::blocks(text)?;
        let Some(block) = blocks.iter().find(|b| b.label != "EC PARAMETERS") else {
            return Err("no key in the PEM file (no -----BEGIN ... KEY----- block)".to_string());
        };
        let at = |m: String| format!("line {}: {m}", block.line);
        if block.encrypted || block.label == "ENCRYPTED PRIVATE KEY" {
            return Err(at(
                "encrypted keys are not supported; decrypt it (openssl pkey -in KEY -out PLAIN)"
                    .to_string(),
            ));
        }
        let der = block.der.as_slice();
        let rng = SystemRandom::new();
        let key = match block.label.as_str() {
            "PRIVATE KEY" => match pem::pkcs8_algorithm(der).map_err(at)? {
                pem::KeyAlg::EcP256 => {
                    EcdsaKeyPair::from_pkcs8(&rsig::ECDSA_P256_SHA256_FIXED_SIGNING, der, &rng)
                        .map_err(|e| at(rejected("EC private key", e)))
                        .map(|pair| SigKey::ec_from_pair(pair, key_use))?
                }
                pem::KeyAlg::Rsa => RsaKeyPair::from_pkcs8(der)
                    .map_err(|e| at(rejected("RSA private key", e)))
                    .and_then(|pair| SigKey::rsa_from_pair(pair, key_use).map_err(at))?,
            },
            "EC PRIVATE KEY" => {
                let (private, public) = pem::sec1_parts(der).map_err(at)?;
                EcdsaKeyPair::from_private_key_and_public_key(
                    &rsig::ECDSA_P256_SHA256_FIXED_SIGNING,
                    private,
                    public,
                    &rng,
                )
                .map_err(|e| at(rejected("EC private key", e)))
                .map(|pair| SigKey::ec_from_pair(pair, key_use))?
            }
            "RSA PRIVATE KEY" => RsaKeyPair::from_der(der)
                .map_err(|e| at(rejected("RSA private key", e)))
                .and_then(|pair| SigKey::rsa_from_pair(pair, key_use).map_err(at))?,
            "PUBLIC KEY" | "RSA PUBLIC KEY" if key_use == KeyUse::Sign => {
                return Err(at(format!(
                    "a {} cannot sign: a signing key must be the private key \
                     (PRIVATE KEY, EC PRIVATE KEY or RSA PRIVATE KEY); the public key is for \
                     the backend (or a downstream proxy's upstream_key) to verify with",
                    block.label.to_ascii_lowercase()
                )))
            }
            "PUBLIC KEY" => match pem::spki_parts(der).map_err(at)? {
                (pem::KeyAlg::EcP256, point) => SigKey::ec_public(point).map_err(at)?,
                (pem::KeyAlg::Rsa, public) => SigKey::rsa_public(public).map_err(at)?,
            },
            "RSA PUBLIC KEY" => SigKey::rsa_public(der).map_err(at)?,
            "CERTIFICATE" => return Err(at(
                "a certificate is not a key; extract its public key (openssl x509 -pubkey -noout)"
                    .to_string(),
            )),
            other => {
                return Err(at(format!(
                    "unsupported PEM block \"{other}\" (expected PRIVATE KEY, EC PRIVATE KEY, \
                     RSA PRIVATE KEY, PUBLIC KEY or RSA PUBLIC KEY)"
                )))
            }
        };
        debug_assert!(key_use == KeyUse::Verify || key.can_sign());
        debug_assert!(key.alg() != Alg::Hs256);
        Ok(key)
    }

    fn ec_from_pair(pair: EcdsaKeyPair, key_use: KeyUse) -> SigKey {
        let public = pair.public_key().as_ref().to_vec();
        debug_assert_eq!(public.len(), 65);
        let pair = (key_use == KeyUse::Sign).then_some(pair);
        SigKey::Ec(Arc::new(EcKey { pair, public }))
    }

    fn ec_public(point: &[u8]) -> Result<SigKey, String> {
        // ring verifies uncompressed points only (as jsonwebtoken, so Pushpin).
        if point.len() != 65 || point[0] != 0x04 {
            return Err("EC public key is not an uncompressed P-256 point".to_string());
        }
        Ok(SigKey::Ec(Arc::new(EcKey {
            pair: None,
            public: point.to_vec(),
        })))
    }

    fn rsa_from_pair(pair: RsaKeyPair, key_use: KeyUse) -> Result<SigKey, String> {
        let public = pair.public().as_ref().to_vec();
        let modulus_bits = pem::rsa_public_modulus_bits(&public)?;
        debug_assert!(RSA_VERIFY_BITS.contains(&modulus_bits));
        let pair = (key_use == KeyUse::Sign).then_some(pair);
        Ok(SigKey::Rsa(Arc::new(RsaKey {
            pair,
            public,
            modulus_bits,
        })))
    }

    fn rsa_public(der: &[u8]) -> Result<SigKey, String> {
        let modulus_bits = pem::rsa_public_modulus_bits(der)?;
        if !RSA_VERIFY_BITS.contains(&modulus_bits) {
            return Err(format!(
                "RSA public key is {modulus_bits} bits; RS256 keys must be 2048 to 8192 bits"
            ));
        }
        Ok(SigKey::Rsa(Arc::new(RsaKey {
            pair: None,
            public: der.to_vec(),
            modulus_bits,
        })))
    }

    /// The algorithm this key signs and verifies with.
    pub fn alg(&self) -> Alg {
        match self {
            SigKey::Secret(_) => Alg::Hs256,
            SigKey::Ec(_) => Alg::Es256,
            SigKey::Rsa(_) => Alg::Rs256,
        }
    }

    /// Whether [`SigKey::mint`] can sign with it: a non-empty secret or a private key.
    pub fn can_sign(&self) -> bool {
        match self {
            SigKey::Secret(s) => !s.is_empty(),
            SigKey::Ec(k) => k.pair.is_some(),
            SigKey::Rsa(k) => k.pair.is_some(),
        }
    }

    /// Mints a Grip-Sig with this key. `None` when it cannot sign (public key, empty secret)
    /// or the signer fails (the OS gave no randomness); the request then goes unsigned, as
    /// Pushpin's "failed to sign request".
    pub fn mint(&self, iss: &str, now_unix_s: u64) -> Option<String> {
        let token = match self {
            SigKey::Secret(s) => {
                return (!s.is_empty()).then(|| mint_grip_sig(s, iss, now_unix_s));
            }
            SigKey::Ec(k) => {
                let pair = k.pair.as_ref()?;
                let rng = SystemRandom::new();
                let mut token = signing_input(Alg::Es256, iss, now_unix_s, 87);
                let sig = pair.sign(&rng, token.as_bytes()).ok()?;
                debug_assert_eq!(sig.as_ref().len(), 64, "fixed r||s, not DER");
                token.push('.');
                URL_SAFE_NO_PAD.encode_string(sig.as_ref(), &mut token);
                token
            }
            SigKey::Rsa(k) => {
                let pair = k.pair.as_ref()?;
                let rng = SystemRandom::new();
                let mut sig = vec![0; pair.public().modulus_len()];
                let mut token =
                    signing_input(Alg::Rs256, iss, now_unix_s, sig.len().div_ceil(3) * 4 + 1);
                pair.sign(&rsig::RSA_PKCS1_SHA256, &rng, token.as_bytes(), &mut sig)
                    .ok()?;
                token.push('.');
                URL_SAFE_NO_PAD.encode_string(&sig, &mut token);
                token
            }
        };
        debug_assert_eq!(token.matches('.').count(), 2);
        Some(token)
    }

    /// Verifies a Grip-Sig: the header's `alg` must be this key's, the signature valid, and
    /// `exp` an integer with `exp > now` (strict). An empty secret verifies nothing.
    pub fn verify(&self, token: &str, now_unix_s: u64) -> bool {
        match self {
            SigKey::Secret(s) => verify_grip_sig(token, s, now_unix_s),
            SigKey::Ec(k) => verify_token(token, Alg::Es256, now_unix_s, |msg, sig| {
                UnparsedPublicKey::new(&rsig::ECDSA_P256_SHA256_FIXED, &k.public)
                    .verify(msg, sig)
                    .is_ok()
            }),
            SigKey::Rsa(k) => verify_token(token, Alg::Rs256, now_unix_s, |msg, sig| {
                UnparsedPublicKey::new(&rsig::RSA_PKCS1_2048_8192_SHA256, &k.public)
                    .verify(msg, sig)
                    .is_ok()
            }),
        }
    }
}

/// ring's key rejection, as a sentence.
fn rejected(what: &str, e: ring::error::KeyRejected) -> String {
    let why = match e.to_string().as_str() {
        "TooSmall" => "too small (RSA signing keys are 2048 to 4096 bits)".to_string(),
        "TooLarge" => "too large (RSA signing keys are 2048 to 4096 bits)".to_string(),
        "InvalidEncoding" => "invalid encoding".to_string(),
        "InconsistentComponents" => "its parts do not belong together".to_string(),
        "WrongAlgorithm" => "not a P-256 key".to_string(),
        "PublicKeyIsMissing" => "the public key is missing".to_string(),
        "VersionNotSupported" => "unsupported version".to_string(),
        other => other.to_string(),
    };
    format!("{what} rejected: {why}")
}

/// `header.claims`, with room for `sig_b64_len` more bytes (the dot and the signature).
fn signing_input(alg: Alg, iss: &str, now_unix_s: u64, sig_b64_len: usize) -> String {
    // Serialising a &str cannot fail; an empty fallback would only fail verification.
    let iss_json = serde_json::to_string(iss).unwrap_or_default();
    let exp = now_unix_s.saturating_add(GRIP_SIG_TTL_S);
    let claims = format!("{{\"iss\":{iss_json},\"exp\":{exp}}}");
    let header = alg.header_b64();
    let mut token =
        String::with_capacity(header.len() + 1 + claims.len().div_ceil(3) * 4 + sig_b64_len);
    token.push_str(header);
    token.push('.');
    URL_SAFE_NO_PAD.encode_string(claims.as_bytes(), &mut token);
    debug_assert_eq!(token.matches('.').count(), 1);
    token
}

fn mac_for(key: &[u8]) -> Option<HmacSha256> {
    // HMAC takes keys of any length, so this never fails; no panic path either way.
    HmacSha256::new_from_slice(key).ok()
}

/// Mint an HS256 Grip-Sig: header `{"typ":"JWT","alg":"HS256"}` (exactly that order), claims
/// `{"iss":<iss>,"exp":<now+3600>}` (that order), base64url without padding, HMAC-SHA256.
pub fn mint_grip_sig(key: &[u8], iss: &str, now_unix_s: u64) -> String {
    let mut token = signing_input(Alg::Hs256, iss, now_unix_s, 44);
    let Some(mut mac) = mac_for(key) else {
        debug_assert!(false, "HMAC rejected a key");
        return String::new();
    };
    mac.update(token.as_bytes());
    let sig = mac.finalize().into_bytes();
    token.push('.');
    URL_SAFE_NO_PAD.encode_string(sig, &mut token);
    debug_assert_eq!(token.matches('.').count(), 2);
    token
}

/// Verify an HS256 Grip-Sig with secret `key`: signature compared in constant time, `exp` an
/// integer with `exp > now` (strict, no leeway). `iss` is not checked. An empty key verifies
/// nothing.
pub fn verify_grip_sig(token: &str, key: &[u8], now_unix_s: u64) -> bool {
    if key.is_empty() {
        return false;
    }
    verify_token(token, Alg::Hs256, now_unix_s, |msg, sig| {
        let Some(mut mac) = mac_for(key) else {
            return false;
        };
        mac.update(msg);
        mac.verify_slice(sig).is_ok()
    })
}

/// The checks every algorithm shares; `check(signing_input, signature)` verifies the
/// signature itself.
fn verify_token(
    token: &str,
    alg: Alg,
    now_unix_s: u64,
    check: impl FnOnce(&[u8], &[u8]) -> bool,
) -> bool {
    if token.len() > MAX_TOKEN_BYTES {
        return false;
    }
    let mut parts = token.split('.');
    let (Some(header_b64), Some(claims_b64), Some(sig_b64), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return false;
    };

    // The algorithm is the key's, not the token's choice: anything else is refused.
    let Some(header) = decode_json_object(header_b64) else {
        return false;
    };
    if header.get("alg").and_then(|a| a.as_str()) != Some(alg.name()) {
        return false;
    }

    let Ok(sig) = URL_SAFE_NO_PAD.decode(sig_b64) else {
        return false;
    };
    // header_b64 and claims_b64 are adjacent in `token`, joined by the first dot.
    let signed_len = header_b64.len() + 1 + claims_b64.len();
    debug_assert!(signed_len < token.len());
    if !check(&token.as_bytes()[..signed_len], &sig) {
        return false;
    }

    let Some(claims) = decode_json_object(claims_b64) else {
        return false;
    };
    match claims.get("exp").and_then(|e| e.as_u64()) {
        Some(exp) => exp > 0 && exp > now_unix_s,
        None => false,
    }
}

fn decode_json_object(b64: &str) -> Option<serde_json::Map<String, serde_json::Value>> {
    let bytes = URL_SAFE_NO_PAD.decode(b64).ok()?;
    match serde_json::from_slice(&bytes).ok()? {
        serde_json::Value::Object(map) => Some(map),
        _ => None,
    }
}

/// Entries in a [`TokenCache`]: one per (asymmetric key, issuer) pair a shard signs with in a
/// second. Most deployments have one global key; a few route keys fit; past that a miss costs
/// one signature, never correctness.
pub const TOKEN_CACHE_ENTRIES_MAX: usize = 8;

/// A shard's recently minted ES256/RS256 tokens (see the module doc). Keyed by key identity
/// (the shared `Arc`, kept alive by the entry so its address is never reused), issuer and
/// second. HS256 bypasses it.
#[derive(Default)]
pub struct TokenCache {
    entries: Vec<CachedToken>,
    /// Next entry to replace when full (round robin).
    next: usize,
}

struct CachedToken {
    key: SigKey,
    iss: String,
    now_unix_s: u64,
    token: String,
}

impl TokenCache {
    /// The token for `key`, `iss` and this second: the cached one if minted in the same second,
    /// else a fresh one (cached). `None` as [`SigKey::mint`].
    pub fn mint(&mut self, key: &SigKey, iss: &str, now_unix_s: u64) -> Option<String> {
        if let SigKey::Secret(_) = key {
            return key.mint(iss, now_unix_s);
        }
        let found = self
            .entries
            .iter()
            .position(|e| same_arc(&e.key, key) && e.iss == iss);
        if let Some(i) = found {
            let e = &mut self.entries[i];
            if e.now_unix_s != now_unix_s {
                e.token = key.mint(iss, now_unix_s)?;
                e.now_unix_s = now_unix_s;
            }
            return Some(e.token.clone());
        }
        let token = key.mint(iss, now_unix_s)?;
        let entry = CachedToken {
            key: key.clone(),
            iss: iss.to_string(),
            now_unix_s,
            token: token.clone(),
        };
        if self.entries.len() < TOKEN_CACHE_ENTRIES_MAX {
            self.entries.push(entry);
        } else {
            self.entries[self.next] = entry;
            self.next = (self.next + 1) % TOKEN_CACHE_ENTRIES_MAX;
        }
        debug_assert!(self.entries.len() <= TOKEN_CACHE_ENTRIES_MAX);
        debug_assert!(self.next < TOKEN_CACHE_ENTRIES_MAX);
        Some(token)
    }
}

/// The same shared key object (not merely equal key material).
fn same_arc(a: &SigKey, b: &SigKey) -> bool {
    match (a, b) {
        (SigKey::Ec(a), SigKey::Ec(b)) => Arc::ptr_eq(a, b),
        (SigKey::Rsa(a), SigKey::Rsa(b)) => Arc::ptr_eq(a, b),
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const NOW: u64 = 1_700_000_000;

    /// Builds a token independently of `mint_grip_sig`, from raw JSON text.
    fn make(header_json: &str, claims_json: &str, key: &[u8]) -> String {
        let signing_input = format!(
            "{}.{}",
            URL_SAFE_NO_PAD.encode(header_json),
            URL_SAFE_NO_PAD.encode(claims_json)
        );
        let mut mac = HmacSha256::new_from_slice(key).unwrap();
        mac.update(signing_input.as_bytes());
        format!(
            "{signing_input}.{}",
            URL_SAFE_NO_PAD.encode(mac.finalize().into_bytes())
        )
    }

    #[test]
    fn header_constant_matches() {
        assert_eq!(
            URL_SAFE_NO_PAD.decode(Alg::Hs256.header_b64()).unwrap(),
            br#"{"typ":"JWT","alg":"HS256"}"#
        );
    }

    #[test]
    fn mint_matches_independent_construction() {
        let token = mint_grip_sig(b"changeme", "pushpin", NOW);
        let expected = make(
            r#"{"typ":"JWT","alg":"HS256"}"#,
            r#"{"iss":"pushpin","exp":1700003600}"#,
            b"changeme",
        );
        assert_eq!(token, expected);
        // Pinned vector, computed outside Rust (Python hmac + base64).
        assert_eq!(
            token,
            "eyJ0eXAiOiJKV1QiLCJhbGciOiJIUzI1NiJ9.eyJpc3MiOiJwdXNocGluIiwiZXhwIjoxNzAwMDAzNjAwfQ.\
peoNzXovaO7IPyWazCP8fxwN-UW2nMVvWdjJusj1PiU"
        );
        assert!(!token.contains('='));
        assert!(verify_grip_sig(&token, b"changeme", NOW));
    }

    #[test]
    fn iss_is_json_escaped() {
        let token = mint_grip_sig(b"k", "a\"b\\c\n", NOW);
        let claims = token.split('.').nth(1).unwrap();
        assert_eq!(
            URL_SAFE_NO_PAD.decode(claims).unwrap(),
            br#"{"iss":"a\"b\\c\n","exp":1700003600}"#
        );
        assert!(verify_grip_sig(&token, b"k", NOW));
    }

    #[test]
    fn expiry_is_strict() {
        let token = mint_grip_sig(b"key", "tack", NOW);
        assert!(verify_grip_sig(&token, b"key", NOW + 3599));
        assert!(!verify_grip_sig(&token, b"key", NOW + 3600));
        assert!(!verify_grip_sig(&token, b"key", NOW + 100_000));
    }

    #[test]
    fn rejects_tampering_and_wrong_keys() {
        let token = mint_grip_sig(b"key", "tack", NOW);
        assert!(!verify_grip_sig(&token, b"other", NOW));
        assert!(!verify_grip_sig(&token, b"", NOW));

        // Changed claims with the old signature.
        let parts: Vec<&str> = token.split('.').collect();
        let forged_claims = URL_SAFE_NO_PAD.encode(r#"{"iss":"tack","exp":9999999999}"#);
        let forged = format!("{}.{}.{}", parts[0], forged_claims, parts[2]);
        assert!(!verify_grip_sig(&forged, b"key", NOW));

        // Every single-character change breaks it.
        let alphabet = b"AQgw-_.x";
        for i in 0..token.len() {
            for &c in alphabet {
                let mut t = token.clone().into_bytes();
                if t[i] == c {
                    continue;
                }
                t[i] = c;
                let t = String::from_utf8(t).unwrap();
                assert!(
                    !verify_grip_sig(&t, b"key", NOW),
                    "mutation at {i} to {}",
                    c as char
                );
            }
        }

        // Structure.
        assert!(!verify_grip_sig("", b"key", NOW));
        assert!(!verify_grip_sig("a.b", b"key", NOW));
        assert!(!verify_grip_sig(&format!("{token}.x"), b"key", NOW));
        assert!(!verify_grip_sig(&format!("{token}="), b"key", NOW));
        assert!(!verify_grip_sig(
            &"a".repeat(MAX_TOKEN_BYTES + 1),
            b"key",
            NOW
        ));
    }

    #[test]
    fn algorithm_and_claim_rules() {
        let key = b"key";
        let good_claims = r#"{"iss":"x","exp":1700000100}"#;
        assert!(verify_grip_sig(
            &make(r#"{"alg":"HS256"}"#, good_claims, key),
            key,
            NOW
        ));
        assert!(!verify_grip_sig(
            &make(r#"{"alg":"none","typ":"JWT"}"#, good_claims, key),
            key,
            NOW
        ));
        assert!(!verify_grip_sig(
            &make(r#"{"alg":"HS512"}"#, good_claims, key),
            key,
            NOW
        ));
        assert!(!verify_grip_sig(
            &make(r#"{"typ":"JWT"}"#, good_claims, key),
            key,
            NOW
        ));
        assert!(!verify_grip_sig(
            &make(r#"["HS256"]"#, good_claims, key),
            key,
            NOW
        ));
        let h = r#"{"typ":"JWT","alg":"HS256"}"#;
        assert!(!verify_grip_sig(&make(h, r#"{"iss":"x"}"#, key), key, NOW));
        assert!(!verify_grip_sig(
            &make(h, r#"{"exp":"1700000100"}"#, key),
            key,
            NOW
        ));
        assert!(!verify_grip_sig(
            &make(h, r#"{"exp":1700000100.5}"#, key),
            key,
            NOW
        ));
        assert!(!verify_grip_sig(&make(h, r#"{"exp":-5}"#, key), key, NOW));
        assert!(!verify_grip_sig(&make(h, r#"{"exp":0}"#, key), key, 0));
        assert!(!verify_grip_sig(
            &make(h, r#"{"exp":1700000000}"#, key),
            key,
            NOW
        ));
        assert!(verify_grip_sig(
            &make(h, r#"{"exp":1700000001}"#, key),
            key,
            NOW
        ));
        assert!(!verify_grip_sig(&make(h, "not json", key), key, NOW));
        // iss is not checked.
        assert!(verify_grip_sig(
            &make(h, r#"{"iss":5,"exp":1700000001}"#, key),
            key,
            NOW
        ));
    }

    // ---- ES256 / RS256 ----------------------------------------------------------------

    // Test keys, made with openssl for these tests only (src/sig/testdata/).
    const EC: &str = include_str!("sig/testdata/ec.pem");
    const EC_SEC1: &str = include_str!("sig/testdata/ec-sec1.pem");
    const EC_PUB: &str = include_str!("sig/testdata/ec-pub.pem");
    const EC_OTHER: &str = include_str!("sig/testdata/ec-other.pem");
    const RSA: &str = include_str!("sig/testdata/rsa.pem");
    const RSA_PKCS1: &str = include_str!("sig/testdata/rsa-pkcs1.pem");
    const RSA_PUB: &str = include_str!("sig/testdata/rsa-pub.pem");
    const RSA_PUB_PKCS1: &str = include_str!("sig/testdata/rsa-pub-pkcs1.pem");

    /// Tokens PyJWT 2.15.1 (with `cryptography` 51) made offline from the keys above:
    /// `jwt.encode({"iss": "pushpin", "exp": 1700003600}, key, algorithm=...)`.
    const PYJWT_ES256: &str =
        "eyJhbGciOiJFUzI1NiIsInR5cCI6IkpXVCJ9.eyJpc3MiOiJwdXNocGluIiwiZXhwIjoxNzAwMDAzNjAwfQ.\
mY0Vk1zmF66ixzylSBV5mrubPjaqPO0stMolOPgYC-6yv3YX3eUHkKLjVab018hoWe-lBysF_ni5XQea6UQ-cA";
    /// The same claims signed with `ec-other.pem`.
    const PYJWT_ES256_OTHER: &str =
        "eyJhbGciOiJFUzI1NiIsInR5cCI6IkpXVCJ9.eyJpc3MiOiJwdXNocGluIiwiZXhwIjoxNzAwMDAzNjAwfQ.\
Tco6hOt8UdPOOhrcgciQ5Z7ngSX1o2GJmwb_7Mx_pGK-1zB-6BSPzfU2ofpiF7jtyhPQbcbVJPf03TcYLjZSuA";
    const PYJWT_RS256: &str = "eyJhbGciOiJSUzI1NiIsInR5cCI6IkpXVCJ9.eyJpc3MiOiJwdXNocGluIiwiZXhwIjoxNzAwMDAzNjAwfQ.\
LiCdVSx36kmvEtZ9-uZWux-3ox6yBZrhiMsx6ioqRoyi-FQ6a9rwjfGmCvJu0lNIfvS0YFpbsaoBMkioALSzQ2DUvJ1E2NJ1s0QvYG3qnSmxtBfSMcsTGAO18V8XeEo5c7xyrB1GQ0-NWWj5SZFmv7vgCybUJpBxBAeA0s1_SvCJX93W1xofTL8n-PtjyaAM5mickoUJCa9fyn_1RhMrsmrQlm-cjwuP-LRcygqUn51yXe2lpVHrf7ktug2Qoz6SGLaYQ1gHyQQCj-7-EHeYwyO7wDlzkokIPlkqZryPFrfZOSFDMVc_f7u6bgRKqeNHJxLuAbvU4UXIJNiQXbl6sQ";
    /// `sort_headers=False`: PyJWT then writes jsonwebtoken's header order, and RS256 is
    /// deterministic, so tack must produce exactly this token.
    const PYJWT_RS256_UNSORTED: &str = "eyJ0eXAiOiJKV1QiLCJhbGciOiJSUzI1NiJ9.eyJpc3MiOiJwdXNocGluIiwiZXhwIjoxNzAwMDAzNjAwfQ.\
GXLUke-XLHLGflnGJG07wKSACXrTsQNFg8UQ1Cmra5pfGLrs9dvS1As6OpY472YZ1QTliUPtk8oFTsDvIaODsJvGYSSvYDeyIrkTbdSV7dVFba9_nbe1HvInjk4vGAYzxu3Xpl82b7LoIEk6G5mPkUc2qAgvFeZ2TWqxfb3UaU-Sfap-5vZJ6jRmUamVlpi2eGutD99qovLwfSZlyv2SlvIr995UF3_ApQ1jymbV-0FWnHj1EnT-zjAaWrxOC5Pv7YY9ntMYNXHvPlR9L-sCiBQEZW6qBNYt-gBHcIuMeYWhwMyInUFLyvMTn4-aHkfzUED5Z3_HV0AvyGmLWuUsRQ";

    fn sign_key(pem: &str) -> SigKey {
        SigKey::from_pem(pem, KeyUse::Sign).unwrap()
    }
    fn verify_key(pem: &str) -> SigKey {
        SigKey::from_pem(pem, KeyUse::Verify).unwrap()
    }
    fn part(token: &str, i: usize) -> Vec<u8> {
        URL_SAFE_NO_PAD
            .decode(token.split('.').nth(i).unwrap())
            .unwrap()
    }
    /// `token` with its header replaced (signature kept).
    fn with_header(token: &str, header_json: &str) -> String {
        let mut p = token.splitn(2, '.');
        p.next();
        format!(
            "{}.{}",
            URL_SAFE_NO_PAD.encode(header_json),
            p.next().unwrap()
        )
    }

    #[test]
    fn header_constants_match() {
        for alg in [Alg::Hs256, Alg::Es256, Alg::Rs256] {
            assert_eq!(
                URL_SAFE_NO_PAD.decode(alg.header_b64()).unwrap(),
                format!(r#"{{"typ":"JWT","alg":"{}"}}"#, alg.name()).as_bytes()
            );
        }
    }

    #[test]
    fn es256_round_trip() {
        let key = sign_key(EC);
        assert_eq!(key.alg(), Alg::Es256);
        assert!(key.can_sign());
        let token = key.mint("pushpin", NOW).unwrap();
        assert_eq!(part(&token, 0), br#"{"typ":"JWT","alg":"ES256"}"#);
        assert_eq!(part(&token, 1), br#"{"iss":"pushpin","exp":1700003600}"#);
        // JWS ES256 is the raw r||s pair, 64 bytes, not a DER SEQUENCE.
        assert_eq!(part(&token, 2).len(), 64);
        assert!(!token.contains('='));
        assert!(key.verify(&token, NOW));
        for public in [verify_key(EC_PUB), verify_key(EC), verify_key(EC_SEC1)] {
            assert!(!public.can_sign());
            assert_eq!(public.mint("pushpin", NOW), None);
            assert!(public.verify(&token, NOW));
            assert!(public.verify(&token, NOW + 3599));
            assert!(!public.verify(&token, NOW + 3600), "exp is strict");
        }
        assert!(!verify_key(EC_OTHER).verify(&token, NOW));
        // Signatures are randomised; both verify.
        let again = key.mint("pushpin", NOW).unwrap();
        assert_ne!(again, token);
        assert!(verify_key(EC_PUB).verify(&again, NOW));
    }

    #[test]
    fn rs256_round_trip_matches_pyjwt_byte_for_byte() {
        let key = sign_key(RSA);
        assert_eq!(key.alg(), Alg::Rs256);
        assert_eq!(format!("{key:?}"), "SigKey::Rsa(RS256 2048-bit, private)");
        let token = key.mint("pushpin", NOW).unwrap();
        assert_eq!(token, PYJWT_RS256_UNSORTED);
        assert_eq!(sign_key(RSA_PKCS1).mint("pushpin", NOW).unwrap(), token);
        assert_eq!(part(&token, 2).len(), 256);
        for public in [
            verify_key(RSA_PUB),
            verify_key(RSA_PUB_PKCS1),
            verify_key(RSA),
            verify_key(RSA_PKCS1),
        ] {
            assert_eq!(public, verify_key(RSA_PUB));
            assert!(!public.can_sign());
            assert!(public.verify(&token, NOW));
            assert!(!public.verify(&token, NOW + 3600), "exp is strict");
        }
    }

    #[test]
    fn pyjwt_tokens_verify() {
        assert!(verify_key(EC_PUB).verify(PYJWT_ES256, NOW));
        assert!(verify_key(EC_PUB).verify(PYJWT_ES256, 1_700_003_599));
        assert!(!verify_key(EC_PUB).verify(PYJWT_ES256, 1_700_003_600));
        assert!(!verify_key(EC_PUB).verify(PYJWT_ES256_OTHER, NOW));
        assert!(verify_key(EC_OTHER).verify(PYJWT_ES256_OTHER, NOW));
        assert!(verify_key(RSA_PUB).verify(PYJWT_RS256, NOW));
        assert!(verify_key(RSA_PUB_PKCS1).verify(PYJWT_RS256_UNSORTED, NOW));
        assert!(!verify_key(RSA_PUB).verify(PYJWT_RS256, 1_700_003_600));
    }

    #[test]
    fn sec1_and_pkcs8_are_the_same_key() {
        assert_eq!(sign_key(EC_SEC1), sign_key(EC));
        assert_eq!(verify_key(EC_SEC1), verify_key(EC_PUB));
        assert_ne!(sign_key(EC), verify_key(EC), "abilities differ");
        assert_ne!(sign_key(EC), sign_key(EC_OTHER));
        let t = sign_key(EC_SEC1).mint("x", NOW).unwrap();
        assert!(verify_key(EC_PUB).verify(&t, NOW));
        // `openssl ecparam -genkey` without -noout writes EC PARAMETERS first.
        let with_params = format!(
            "-----BEGIN EC PARAMETERS-----\nBggqhkjOPQMBBw==\n-----END EC PARAMETERS-----\n{EC_SEC1}"
        );
        assert_eq!(sign_key(&with_params), sign_key(EC));
    }

    #[test]
    fn wrong_algorithm_is_refused() {
        let ec = sign_key(EC).mint("x", NOW).unwrap();
        let rsa = sign_key(RSA).mint("x", NOW).unwrap();
        let hs = mint_grip_sig(b"secret", "x", NOW);
        let ec_pub = verify_key(EC_PUB);
        let rsa_pub = verify_key(RSA_PUB);
        let secret = SigKey::Secret(b"secret".to_vec());
        assert!(ec_pub.verify(&ec, NOW) && rsa_pub.verify(&rsa, NOW) && secret.verify(&hs, NOW));
        // Each token against the other keys.
        assert!(!ec_pub.verify(&rsa, NOW) && !ec_pub.verify(&hs, NOW));
        assert!(!rsa_pub.verify(&ec, NOW) && !rsa_pub.verify(&hs, NOW));
        assert!(!secret.verify(&ec, NOW) && !secret.verify(&rsa, NOW));
        // Header alg rewritten to the other algorithms, or none, with the signature kept.
        for h in [
            r#"{"typ":"JWT","alg":"HS256"}"#,
            r#"{"typ":"JWT","alg":"RS256"}"#,
            r#"{"typ":"JWT","alg":"none"}"#,
            r#"{"typ":"JWT","alg":"ES384"}"#,
            r#"{"typ":"JWT"}"#,
        ] {
            assert!(!ec_pub.verify(&with_header(&ec, h), NOW), "{h}");
        }
        // Classic confusion: HS256 made with the public key bytes as the HMAC secret.
        let confused = mint_grip_sig(EC_PUB.as_bytes(), "x", NOW);
        assert!(!ec_pub.verify(&confused, NOW));
        let confused = mint_grip_sig(RSA_PUB.as_bytes(), "x", NOW);
        assert!(!rsa_pub.verify(&confused, NOW));
        // An alg:none token with no signature.
        let none = format!(
            "{}.{}.",
            URL_SAFE_NO_PAD.encode(r#"{"alg":"none"}"#),
            URL_SAFE_NO_PAD.encode(r#"{"exp":1800000000}"#)
        );
        assert!(!ec_pub.verify(&none, NOW) && !rsa_pub.verify(&none, NOW));
    }

    #[test]
    fn asymmetric_tampering_and_expiry() {
        for (signer, verifier) in [
            (sign_key(EC), verify_key(EC_PUB)),
            (sign_key(RSA), verify_key(RSA_PUB)),
        ] {
            let token = signer.mint("tack", NOW).unwrap();
            let parts: Vec<&str> = token.split('.').collect();
            let forged_claims = URL_SAFE_NO_PAD.encode(r#"{"iss":"tack","exp":9999999999}"#);
            let forged = format!("{}.{}.{}", parts[0], forged_claims, parts[2]);
            assert!(!verifier.verify(&forged, NOW));
            // A DER-encoded or truncated signature is not a JWS signature.
            let sig = part(&token, 2);
            let cut = format!(
                "{}.{}.{}",
                parts[0],
                parts[1],
                URL_SAFE_NO_PAD.encode(&sig[..sig.len() - 1])
            );
            assert!(!verifier.verify(&cut, NOW));
            let mut flipped = sig.clone();
            flipped[5] ^= 1;
            let flipped = format!(
                "{}.{}.{}",
                parts[0],
                parts[1],
                URL_SAFE_NO_PAD.encode(&flipped)
            );
            assert!(!verifier.verify(&flipped, NOW));
            // Expired: minted an hour and a second ago.
            let old = signer.mint("tack", NOW - 3601).unwrap();
            assert!(!verifier.verify(&old, NOW));
            assert!(verifier.verify(&old, NOW - 2));
            assert!(!verifier.verify(&format!("{token}.x"), NOW));
        }
    }

    fn pem_of(label: &str, der: &[u8]) -> String {
        use base64::engine::general_purpose::STANDARD;
        format!(
            "-----BEGIN {label}-----\n{}\n-----END {label}-----\n",
            STANDARD.encode(der)
        )
    }

    fn der_of(pem: &str) -> Vec<u8> {
        pem::blocks(pem).unwrap().remove(0).der
    }

    #[test]
    fn bad_pem_keys_are_clear_errors() {
        let err = |text: &str, key_use| SigKey::from_pem(text, key_use).unwrap_err();
        let s = KeyUse::Sign;
        assert!(err(EC_PUB, s).starts_with("line 1: a public key cannot sign"));
        assert!(err(RSA_PUB_PKCS1, s).starts_with("line 1: a rsa public key cannot sign"));
        assert_eq!(
            err(include_str!("sig/testdata/ec384.pem"), s),
            "line 1: EC key on curve P-384: only P-256 (prime256v1, ES256) is supported"
        );
        assert_eq!(
            err(include_str!("sig/testdata/ed25519.pem"), KeyUse::Verify),
            "line 1: Ed25519 keys are not supported: Grip-Sig keys are EC P-256 (ES256) or RSA (RS256)"
        );
        assert_eq!(
            err(include_str!("sig/testdata/rsa1024.pem"), s),
            "line 1: RSA private key rejected: too small (RSA signing keys are 2048 to 4096 bits)"
        );
        assert_eq!(
            err("-----BEGIN ENCRYPTED PRIVATE KEY-----\nAAAA\n-----END ENCRYPTED PRIVATE KEY-----\n", s),
            "line 1: encrypted keys are not supported; decrypt it (openssl pkey -in KEY -out PLAIN)"
        );
        assert!(err(
            "-----BEGIN RSA PRIVATE KEY-----\nProc-Type: 4,ENCRYPTED\nDEK-Info: AES-256-CBC,00\n\nAAAA\n-----END RSA PRIVATE KEY-----\n",
            s
        )
        .contains("encrypted keys are not supported"));
        assert!(err(
            "-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n",
            KeyUse::Verify
        )
        .contains("a certificate is not a key"));
        assert!(err(
            "-----BEGIN OPENSSH PRIVATE KEY-----\nAAAA\n-----END OPENSSH PRIVATE KEY-----\n",
            s
        )
        .starts_with("line 1: unsupported PEM block \"OPENSSH PRIVATE KEY\""));
        assert_eq!(
            err("garbage\n", s),
            "no key in the PEM file (no -----BEGIN ... KEY----- block)"
        );
        assert!(err(
            "-----BEGIN PRIVATE KEY-----\nnot base64!\n-----END PRIVATE KEY-----\n",
            s
        )
        .contains("not valid base64"));
        assert!(err(&EC[..EC.len() - 10], s).contains("has no END line"));
        // Truncated DER inside good armour.
        let der = der_of(EC);
        assert_eq!(
            err(&pem_of("PRIVATE KEY", &der[..der.len() - 5]), s),
            "line 1: malformed DER: expected a PrivateKeyInfo"
        );
        // An EC key under an RSA label and the reverse: ring refuses the encoding.
        assert!(err(&pem_of("RSA PRIVATE KEY", &der), s)
            .starts_with("line 1: RSA private key rejected"));
        assert_eq!(
            err(&pem_of("EC PRIVATE KEY", &der_of(RSA_PKCS1)), s),
            "line 1: EC PRIVATE KEY: unsupported version (expected 1)"
        );
        // A SEC1 key without its public key: SEQUENCE { 1, OCTET STRING d, [0] P-256 }.
        let sec1 = der_of(EC_SEC1);
        let mut d = pem::Der::new(&sec1);
        let mut inner = d.nested(pem::tag::SEQUENCE, "k").unwrap();
        inner.read(pem::tag::INTEGER, "v").unwrap();
        let scalar = inner.read(pem::tag::OCTET_STRING, "d").unwrap();
        let mut body = vec![0x02, 0x01, 0x01, 0x04, 0x20];
        body.extend_from_slice(scalar);
        body.extend_from_slice(&[0xa0, 0x0a, 0x06, 0x08]);
        body.extend_from_slice(pem::OID_P256);
        let mut no_pub = vec![0x30, body.len() as u8];
        no_pub.extend_from_slice(&body);
        assert!(err(&pem_of("EC PRIVATE KEY", &no_pub), s)
            .contains("EC PRIVATE KEY without its public key"));
        // A 1024-bit RSA public key cannot verify RS256 here.
        assert!(err(
            &pem_of(
                "RSA PUBLIC KEY",
                &[0x30, 0x08, 0x02, 0x03, 0x00, 0x80, 0x01, 0x02, 0x01, 0x03]
            ),
            KeyUse::Verify
        )
        .contains("RSA public key is 16 bits"));
        // Error lines count from the file's top.
        let later = format!("# comment\n\n{EC_PUB}");
        assert!(err(&later, s).starts_with("line 3: "));
    }

    #[test]
    fn debug_hides_key_material() {
        assert_eq!(
            format!("{:?}", SigKey::Secret(b"abc".to_vec())),
            "SigKey::Secret(<3 bytes>)"
        );
        assert_eq!(
            format!("{:?}", sign_key(EC)),
            "SigKey::Ec(ES256 P-256, private)"
        );
        assert_eq!(
            format!("{:?}", verify_key(EC)),
            "SigKey::Ec(ES256 P-256, public)"
        );
        assert_eq!(
            format!("{:?}", verify_key(RSA_PUB)),
            "SigKey::Rsa(RS256 2048-bit, public)"
        );
    }

    #[test]
    fn secret_keys_mint_hs256() {
        let k = SigKey::Secret(b"changeme".to_vec());
        assert_eq!(k.alg(), Alg::Hs256);
        assert_eq!(
            k.mint("pushpin", NOW).unwrap(),
            mint_grip_sig(b"changeme", "pushpin", NOW)
        );
        let empty = SigKey::Secret(Vec::new());
        assert!(!empty.can_sign());
        assert_eq!(empty.mint("pushpin", NOW), None);
        assert!(!empty.verify(&mint_grip_sig(b"", "pushpin", NOW), NOW));
    }

    #[test]
    fn token_cache_signs_once_per_second() {
        let ec = sign_key(EC);
        let mut cache = TokenCache::default();
        let a = cache.mint(&ec, "pushpin", NOW).unwrap();
        // Same key object, issuer and second: the same token (ES256 would otherwise differ).
        assert_eq!(cache.mint(&ec.clone(), "pushpin", NOW).unwrap(), a);
        let b = cache.mint(&ec, "pushpin", NOW + 1).unwrap();
        assert_ne!(a, b);
        assert_eq!(part(&b, 1), br#"{"iss":"pushpin","exp":1700003601}"#);
        let c = cache.mint(&ec, "other", NOW + 1).unwrap();
        assert_eq!(part(&c, 1), br#"{"iss":"other","exp":1700003601}"#);
        assert_eq!(cache.entries.len(), 2);
        // A separately loaded equal key is another object: its own entry.
        let ec2 = sign_key(EC);
        let d = cache.mint(&ec2, "pushpin", NOW + 1).unwrap();
        assert_ne!(d, b);
        assert!(verify_key(EC_PUB).verify(&d, NOW));
        // Secrets bypass the cache; public keys mint nothing.
        let hs = SigKey::Secret(b"k".to_vec());
        assert_eq!(
            cache.mint(&hs, "x", NOW).unwrap(),
            mint_grip_sig(b"k", "x", NOW)
        );
        assert_eq!(cache.mint(&verify_key(EC_PUB), "x", NOW), None);
        assert_eq!(cache.entries.len(), 3);
        // Bounded: many issuers replace old entries round robin; tokens stay right.
        for i in 0..(3 * TOKEN_CACHE_ENTRIES_MAX) {
            let iss = format!("iss{i}");
            let t = cache.mint(&ec, &iss, NOW).unwrap();
            assert!(verify_key(EC_PUB).verify(&t, NOW));
            assert_eq!(
                part(&t, 1),
                format!(r#"{{"iss":"{iss}","exp":1700003600}}"#).as_bytes()
            );
            assert!(cache.entries.len() <= TOKEN_CACHE_ENTRIES_MAX);
        }
        // RSA is deterministic: cached or not, the same bytes.
        let rsa = sign_key(RSA);
        assert_eq!(
            cache.mint(&rsa, "pushpin", NOW).unwrap(),
            PYJWT_RS256_UNSORTED
        );
        assert_eq!(
            cache.mint(&rsa, "pushpin", NOW).unwrap(),
            PYJWT_RS256_UNSORTED
        );
    }
}
