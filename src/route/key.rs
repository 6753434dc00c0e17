//! Signing keys as written in routes (`sig_key=`) and in `pushpin.conf` (`sig_key`,
//! `upstream_key`), as Pushpin's `fromConfigString` reads them:
//! - a plain string: its bytes are an HMAC secret (HS256);
//! - `base64:<data>`: the decoded bytes are the secret;
//! - `file:<path>` (relative to the file that names it): a PEM file gives an EC P-256 (ES256)
//!   or RSA (RS256) key ([`SigKey::from_pem`]); any other content, whitespace trimmed, is a
//!   hex secret (Pushpin 1.38+);
//! - empty: no key.
//!
//! The key type is [`crate::sig::SigKey`]; keys are parsed here once, at load.

use std::path::Path;

use base64::Engine as _;

use super::RouteEnv;
pub use crate::sig::{KeyUse, SigKey};

/// Parses a key value for `key_use`. Returns `Ok(None)` for an empty value (no key).
/// `file:` paths are relative to `base_dir`; the file is read through `env`.
pub fn parse_key(
    value: &str,
    base_dir: &Path,
    env: &dyn RouteEnv,
    key_use: KeyUse,
) -> Result<Option<SigKey>, String> {
    if value.is_empty() {
        return Ok(None);
    }
    if let Some(b64) = value.strip_prefix("base64:") {
        let bytes = base64::engine::general_purpose::STANDARD
            .decode(b64.trim())
            .map_err(|e| format!("invalid base64 key: {e}"))?;
        if bytes.is_empty() {
            return Err("base64 key decodes to zero bytes".to_string());
        }
        return Ok(Some(SigKey::Secret(bytes)));
    }
    if let Some(file) = value.strip_prefix("file:") {
        let path = base_dir.join(file);
        let data = env
            .read_file(&path)
            .map_err(|e| format!("cannot read key file {}: {e}", path.display()))?;
        let text = String::from_utf8_lossy(&data);
        if text.contains("-----BEGIN") {
            let key = SigKey::from_pem(&text, key_use)
                .map_err(|e| format!("key file {}: {e}", path.display()))?;
            return Ok(Some(key));
        }
        let bytes =
            decode_hex(text.trim()).map_err(|e| format!("key file {}: {e}", path.display()))?;
        return Ok(Some(SigKey::Secret(bytes)));
    }
    Ok(Some(SigKey::Secret(value.as_bytes().to_vec())))
}

/// Decodes a non-empty hex string (either case) into bytes.
fn decode_hex(text: &str) -> Result<Vec<u8>, String> {
    if text.is_empty() {
        return Err("empty hex secret".to_string());
    }
    if text.len() % 2 != 0 {
        return Err("hex secret has an odd number of digits".to_string());
    }
    let digit = |c: u8| -> Result<u8, String> {
        match c {
            b'0'..=b'9' => Ok(c - b'0'),
            b'a'..=b'f' => Ok(c - b'a' + 10),
            b'A'..=b'F' => Ok(c - b'A' + 10),
            _ => Err(format!("invalid hex digit {:?}", c as char)),
        }
    };
    let out = text
        .as_bytes()
        .chunks_exact(2)
        .map(|pair| Ok((digit(pair[0])? << 4) | digit(pair[1])?))
        .collect::<Result<Vec<u8>, String>>()?;
    debug_assert_eq!(out.len() * 2, text.len());
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::route::tests::FakeEnv;

    const EC: &str = include_str!("../sig/testdata/ec.pem");
    const EC_PUB: &str = include_str!("../sig/testdata/ec-pub.pem");
    const RSA: &str = include_str!("../sig/testdata/rsa-pkcs1.pem");

    fn parse(value: &str, env: &FakeEnv) -> Result<Option<SigKey>, String> {
        parse_key(value, Path::new("/etc/pushpin"), env, KeyUse::Sign)
    }

    #[test]
    fn plain_base64_and_empty() {
        let env = FakeEnv::default();
        assert_eq!(parse("", &env).unwrap(), None);
        assert_eq!(
            parse("changeme", &env).unwrap(),
            Some(SigKey::Secret(b"changeme".to_vec()))
        );
        assert_eq!(
            parse("base64:AAEC/w==", &env).unwrap(),
            Some(SigKey::Secret(vec![0, 1, 2, 255]))
        );
        assert!(parse("base64:***", &env)
            .unwrap_err()
            .contains("invalid base64"));
    }

    #[test]
    fn file_keys() {
        let mut env = FakeEnv::default();
        env.files
            .insert("/etc/pushpin/k.hex".into(), b" 00ff1A\n".to_vec());
        env.files
            .insert("/etc/pushpin/ec.pem".into(), EC.as_bytes().to_vec());
        env.files
            .insert("/etc/pushpin/ec-pub.pem".into(), EC_PUB.as_bytes().to_vec());
        env.files
            .insert("/etc/pushpin/keys/rsa.pem".into(), RSA.as_bytes().to_vec());
        env.files.insert(
            "/etc/pushpin/trunc.pem".into(),
            b"-----BEGIN EC PRIVATE KEY-----\n".to_vec(),
        );
        env.files.insert("/etc/pushpin/bad".into(), b"0g".to_vec());
        assert_eq!(
            parse("file:k.hex", &env).unwrap(),
            Some(SigKey::Secret(vec![0x00, 0xff, 0x1a]))
        );
        let ec = parse("file:ec.pem", &env).unwrap().unwrap();
        assert_eq!(ec.alg(), crate::sig::Alg::Es256);
        assert!(ec.can_sign());
        let rsa = parse("file:keys/rsa.pem", &env).unwrap().unwrap();
        assert_eq!(rsa.alg(), crate::sig::Alg::Rs256);
        // A public key verifies but cannot sign.
        let public = parse_key(
            "file:ec-pub.pem",
            Path::new("/etc/pushpin"),
            &env,
            KeyUse::Verify,
        )
        .unwrap()
        .unwrap();
        assert!(public.verify(&ec.mint("x", 1).unwrap(), 1));
        assert_eq!(
            parse("file:ec-pub.pem", &env).unwrap_err(),
            "key file /etc/pushpin/ec-pub.pem: line 1: a public key cannot sign: a signing key \
             must be the private key (PRIVATE KEY, EC PRIVATE KEY or RSA PRIVATE KEY); the \
             public key is for the backend (or a downstream proxy's upstream_key) to verify with"
        );
        assert_eq!(
            parse("file:trunc.pem", &env).unwrap_err(),
            "key file /etc/pushpin/trunc.pem: line 1: \"-----BEGIN EC PRIVATE KEY-----\" has no END line"
        );
        assert!(parse("file:bad", &env)
            .unwrap_err()
            .contains("invalid hex digit 'g'"));
        assert!(parse("file:missing", &env)
            .unwrap_err()
            .contains("cannot read key file /etc/pushpin/missing"));
        // Absolute paths stay absolute.
        assert!(parse("file:/etc/pushpin/ec.pem", &env).unwrap().is_some());
    }
}
