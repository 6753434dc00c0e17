//! Signing keys as written in routes (`sig_key=`) and in `pushpin.conf` (`sig_key`,
//! `upstream_key`): a plain string, `base64:<data>`, or `file:<path>` holding a hex secret.
//! PEM (EC/RSA) keys are recognised and refused with a clear message.

use std::path::Path;

use base64::Engine as _;

use super::RouteEnv;

/// A key used to sign (`Grip-Sig`) or verify upstream tokens.
#[derive(Clone, PartialEq, Eq)]
pub enum SigKey {
    /// An HMAC secret (HS256).
    Secret(Vec<u8>),
}

impl std::fmt::Debug for SigKey {
    // Never print secret bytes into logs.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            SigKey::Secret(s) => write!(f, "SigKey::Secret(<{} bytes>)", s.len()),
        }
    }
}

impl SigKey {
    /// Parses a key value. Returns `Ok(None)` for an empty value (no signing).
    /// `file:` paths are relative to `base_dir`; the file is read through `env`.
    pub fn parse(
        value: &str,
        base_dir: &Path,
        env: &dyn RouteEnv,
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
                return Err(format!(
                    "key file {}: PEM keys (ES256/RS256) are not supported yet; use a hex secret",
                    path.display()
                ));
            }
            let bytes =
                decode_hex(text.trim()).map_err(|e| format!("key file {}: {e}", path.display()))?;
            return Ok(Some(SigKey::Secret(bytes)));
        }
        Ok(Some(SigKey::Secret(value.as_bytes().to_vec())))
    }

    /// The secret bytes.
    pub fn secret(&self) -> &[u8] {
        match self {
            SigKey::Secret(s) => s,
        }
    }
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

    #[test]
    fn plain_base64_and_empty() {
        let env = FakeEnv::default();
        let base = Path::new("/etc/pushpin");
        assert_eq!(SigKey::parse("", base, &env).unwrap(), None);
        assert_eq!(
            SigKey::parse("changeme", base, &env).unwrap(),
            Some(SigKey::Secret(b"changeme".to_vec()))
        );
        assert_eq!(
            SigKey::parse("base64:AAEC/w==", base, &env).unwrap(),
            Some(SigKey::Secret(vec![0, 1, 2, 255]))
        );
        assert!(SigKey::parse("base64:***", base, &env)
            .unwrap_err()
            .contains("invalid base64"));
    }

    #[test]
    fn file_keys() {
        let mut env = FakeEnv::default();
        env.files
            .insert("/etc/pushpin/k.hex".into(), b"00ff1A\n".to_vec());
        env.files.insert(
            "/etc/pushpin/k.pem".into(),
            b"-----BEGIN EC PRIVATE KEY-----\n".to_vec(),
        );
        env.files.insert("/etc/pushpin/bad".into(), b"0g".to_vec());
        let base = Path::new("/etc/pushpin");
        assert_eq!(
            SigKey::parse("file:k.hex", base, &env).unwrap(),
            Some(SigKey::Secret(vec![0x00, 0xff, 0x1a]))
        );
        let e = SigKey::parse("file:k.pem", base, &env).unwrap_err();
        assert!(
            e.contains("PEM keys (ES256/RS256) are not supported yet"),
            "{e}"
        );
        assert!(SigKey::parse("file:bad", base, &env)
            .unwrap_err()
            .contains("invalid hex digit 'g'"));
        assert!(SigKey::parse("file:missing", base, &env)
            .unwrap_err()
            .contains("cannot read key file /etc/pushpin/missing"));
    }

    #[test]
    fn debug_hides_secret() {
        assert_eq!(
            format!("{:?}", SigKey::Secret(b"abc".to_vec())),
            "SigKey::Secret(<3 bytes>)"
        );
    }
}
