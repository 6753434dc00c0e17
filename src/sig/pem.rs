//! The syntax under PEM keys: PEM armour (RFC 7468) and the few DER structures a `Grip-Sig`
//! key comes in (PKCS#8 `PrivateKeyInfo`, SEC1 `ECPrivateKey`, SPKI `SubjectPublicKeyInfo`,
//! PKCS#1 `RSAPublicKey`). Only enough DER to find the algorithm, the curve and the key bytes;
//! the key material itself is checked by `ring` when [`super::SigKey`] builds its key objects.
//! Runs once per key at config load, never per request. Every error is a sentence for the
//! config error message; nothing here panics on a hostile file.

use base64::engine::general_purpose::STANDARD;
use base64::Engine as _;

/// Largest PEM file body tack decodes. A 4096-bit RSA private key is ~3.3 KB of PEM; a key
/// file 16x that is not a key.
pub const PEM_BYTES_MAX: usize = 64 * 1024;

/// OID `1.2.840.10045.2.1` (id-ecPublicKey), DER content bytes.
pub const OID_EC_PUBLIC_KEY: &[u8] = &[0x2a, 0x86, 0x48, 0xce, 0x3d, 0x02, 0x01];
/// OID `1.2.840.10045.3.1.7` (prime256v1, secp256r1, P-256).
pub const OID_P256: &[u8] = &[0x2a, 0x86, 0x48, 0xce, 0x3d, 0x03, 0x01, 0x07];
/// OID `1.2.840.113549.1.1.1` (rsaEncryption).
pub const OID_RSA: &[u8] = &[0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x01, 0x01];

/// Names for OIDs that show up in key files, for error messages only.
fn oid_name(oid: &[u8]) -> &'static str {
    match oid {
        [0x2b, 0x81, 0x04, 0x00, 0x22] => "P-384",
        [0x2b, 0x81, 0x04, 0x00, 0x23] => "P-521",
        [0x2b, 0x81, 0x04, 0x00, 0x0a] => "secp256k1",
        [0x2b, 0x65, 0x70] => "Ed25519",
        [0x2b, 0x65, 0x71] => "Ed448",
        [0x2a, 0x86, 0x48, 0xce, 0x38, 0x04, 0x01] => "DSA",
        [0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x01, 0x0a] => "RSA-PSS",
        _ => "an unknown algorithm",
    }
}

/// One `-----BEGIN <label>-----` … `-----END <label>-----` block, decoded.
#[derive(Debug, PartialEq, Eq)]
pub struct PemBlock {
    /// The label, e.g. `PRIVATE KEY`.
    pub label: String,
    /// The decoded DER.
    pub der: Vec<u8>,
    /// 1-based line of the BEGIN line in the file.
    pub line: usize,
    /// The block has RFC 1421 headers saying it is encrypted (`Proc-Type: 4,ENCRYPTED`).
    pub encrypted: bool,
}

/// Every PEM block in `text`, in order. Text outside blocks is ignored (OpenSSL writes
/// comments there); inside a block, RFC 1421 headers (`Name: value`) are skipped.
pub fn blocks(text: &str) -> Result<Vec<PemBlock>, String> {
    if text.len() > PEM_BYTES_MAX {
        return Err(format!(
            "PEM file is {} bytes, more than any key ({PEM_BYTES_MAX} max)",
            text.len()
        ));
    }
    let mut out = Vec::new();
    let mut lines = text.lines().enumerate();
    while let Some((i, line)) = lines.next() {
        let Some(label) = armour(line, "BEGIN") else {
            continue;
        };
        let begin_line = i + 1;
        let mut b64 = String::new();
        let mut encrypted = false;
        let mut ended = false;
        for (j, line) in lines.by_ref() {
            let line = line.trim();
            if let Some(end) = armour(line, "END") {
                if end != label {
                    return Err(format!(
                        "line {}: \"-----END {end}-----\" closes \"-----BEGIN {label}-----\" of line {begin_line}",
                        j + 1
                    ));
                }
                ended = true;
                break;
            }
            if let Some((name, value)) = line.split_once(':') {
                // RFC 1421 header (OpenSSL's traditional encrypted keys).
                if name.trim().eq_ignore_ascii_case("proc-type") && value.contains("ENCRYPTED") {
                    encrypted = true;
                }
                continue;
            }
            b64.push_str(line);
        }
        if !ended {
            return Err(format!(
                "line {begin_line}: \"-----BEGIN {label}-----\" has no END line"
            ));
        }
        let der = STANDARD.decode(b64.as_bytes()).map_err(|e| {
            format!("line {begin_line}: PEM block \"{label}\" is not valid base64 ({e})")
        })?;
        out.push(PemBlock {
            label: label.to_string(),
            der,
            line: begin_line,
            encrypted,
        });
    }
    debug_assert!(out.iter().all(|b| b.line >= 1));
    Ok(out)
}

/// `-----BEGIN X-----` → `X` (for `kind` BEGIN or END).
fn armour<'a>(line: &'a str, kind: &str) -> Option<&'a str> {
    let rest = line.trim().strip_prefix("-----")?.strip_prefix(kind)?;
    let label = rest.strip_prefix(' ')?.strip_suffix("-----")?;
    (!label.is_empty() && !label.contains('-')).then_some(label)
}

/// DER tags used here.
pub mod tag {
    pub const INTEGER: u8 = 0x02;
    pub const BIT_STRING: u8 = 0x03;
    pub const OCTET_STRING: u8 = 0x04;
    pub const NULL: u8 = 0x05;
    pub const OID: u8 = 0x06;
    pub const SEQUENCE: u8 = 0x30;
    /// `[0]` constructed (explicit context tag 0).
    pub const CONTEXT_0: u8 = 0xa0;
    /// `[1]` constructed (explicit context tag 1).
    pub const CONTEXT_1: u8 = 0xa1;
}

/// A cursor over DER: reads one definite-length TLV at a time.
pub struct Der<'a> {
    data: &'a [u8],
}

impl<'a> Der<'a> {
    pub fn new(data: &'a [u8]) -> Self {
        Der { data }
    }

    pub fn is_empty(&self) -> bool {
        self.data.is_empty()
    }

    /// The tag of the next element, if any.
    pub fn peek_tag(&self) -> Option<u8> {
        self.data.first().copied()
    }

    /// Reads the next element, which must have tag `want`; returns its content.
    pub fn read(&mut self, want: u8, what: &str) -> Result<&'a [u8], String> {
        let bad = || format!("malformed DER: expected {what}");
        let (&got, rest) = self.data.split_first().ok_or_else(bad)?;
        if got != want {
            return Err(bad());
        }
        let (&first, mut rest) = rest.split_first().ok_or_else(bad)?;
        let len = if first < 0x80 {
            usize::from(first)
        } else {
            // Long form: 1..=3 length bytes is plenty for a key (16 MiB); 0x80 (indefinite
            // length) is not DER.
            let n = usize::from(first & 0x7f);
            if n == 0 || n > 3 || rest.len() < n {
                return Err(bad());
            }
            let (len_bytes, tail) = rest.split_at(n);
            rest = tail;
            len_bytes
                .iter()
                .fold(0usize, |acc, &b| (acc << 8) | usize::from(b))
        };
        if rest.len() < len {
            return Err(bad());
        }
        let (content, tail) = rest.split_at(len);
        self.data = tail;
        debug_assert_eq!(content.len(), len);
        Ok(content)
    }

    /// Like [`Der::read`], for a constructed element: a cursor over its content.
    pub fn nested(&mut self, want: u8, what: &str) -> Result<Der<'a>, String> {
        self.read(want, what).map(Der::new)
    }

    /// A BIT STRING with no unused bits: its bytes.
    pub fn bit_string(&mut self, what: &str) -> Result<&'a [u8], String> {
        match self.read(tag::BIT_STRING, what)?.split_first() {
            Some((0, bytes)) => Ok(bytes),
            _ => Err(format!("malformed DER: {what} has unused bits")),
        }
    }
}

/// The key algorithm an `AlgorithmIdentifier` names.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeyAlg {
    /// id-ecPublicKey on P-256.
    EcP256,
    /// rsaEncryption.
    Rsa,
}

/// Reads an `AlgorithmIdentifier` and refuses anything but EC P-256 and RSA, naming it.
fn algorithm(der: &mut Der<'_>) -> Result<KeyAlg, String> {
    let mut alg = der.nested(tag::SEQUENCE, "an AlgorithmIdentifier")?;
    let oid = alg.read(tag::OID, "an algorithm OID")?;
    if oid == OID_RSA {
        return Ok(KeyAlg::Rsa);
    }
    if oid != OID_EC_PUBLIC_KEY {
        return Err(format!(
            "{} keys are not supported: Grip-Sig keys are EC P-256 (ES256) or RSA (RS256)",
            oid_name(oid)
        ));
    }
    match alg.peek_tag() {
        Some(tag::OID) => {
            let curve = alg.read(tag::OID, "a curve OID")?;
            if curve == OID_P256 {
                Ok(KeyAlg::EcP256)
            } else {
                Err(curve_error(curve))
            }
        }
        _ => Err("EC key without a named curve: only P-256 (ES256) is supported".to_string()),
    }
}

fn curve_error(curve: &[u8]) -> String {
    format!(
        "EC key on curve {}: only P-256 (prime256v1, ES256) is supported",
        match oid_name(curve) {
            "an unknown algorithm" => "unknown",
            name => name,
        }
    )
}

/// PKCS#8 `PrivateKeyInfo` (`-----BEGIN PRIVATE KEY-----`): which algorithm it holds.
pub fn pkcs8_algorithm(der: &[u8]) -> Result<KeyAlg, String> {
    let mut outer = Der::new(der);
    let mut info = outer.nested(tag::SEQUENCE, "a PrivateKeyInfo")?;
    info.read(tag::INTEGER, "the PrivateKeyInfo version")?;
    algorithm(&mut info)
}

/// SEC1 `ECPrivateKey` (`-----BEGIN EC PRIVATE KEY-----`): the private scalar and the public
/// point. The curve, when named, must be P-256; the public key must be there (OpenSSL always
/// writes it; ring needs it).
pub fn sec1_parts(der: &[u8]) -> Result<(&[u8], &[u8]), String> {
    let mut outer = Der::new(der);
    let mut key = outer.nested(tag::SEQUENCE, "an ECPrivateKey")?;
    if key.read(tag::INTEGER, "the ECPrivateKey version")? != [1] {
        return Err("EC PRIVATE KEY: unsupported version (expected 1)".to_string());
    }
    let private = key.read(tag::OCTET_STRING, "the EC private key")?;
    if key.peek_tag() == Some(tag::CONTEXT_0) {
        let mut params = key.nested(tag::CONTEXT_0, "the EC parameters")?;
        let curve = params.read(tag::OID, "a curve OID")?;
        if curve != OID_P256 {
            return Err(curve_error(curve));
        }
    }
    if key.peek_tag() != Some(tag::CONTEXT_1) {
        return Err(
            "EC PRIVATE KEY without its public key; rewrite it with `openssl pkcs8 -topk8 -nocrypt`"
                .to_string(),
        );
    }
    let public = key
        .nested(tag::CONTEXT_1, "the EC public key")?
        .bit_string("the EC public key")?;
    Ok((private, public))
}

/// SPKI `SubjectPublicKeyInfo` (`-----BEGIN PUBLIC KEY-----`): the algorithm and the key bytes
/// (an uncompressed EC point, or a DER `RSAPublicKey`).
pub fn spki_parts(der: &[u8]) -> Result<(KeyAlg, &[u8]), String> {
    let mut outer = Der::new(der);
    let mut info = outer.nested(tag::SEQUENCE, "a SubjectPublicKeyInfo")?;
    let alg = algorithm(&mut info)?;
    let key = info.bit_string("the public key")?;
    Ok((alg, key))
}

/// Bits in the modulus of a DER `RSAPublicKey` (`SEQUENCE { n INTEGER, e INTEGER }`).
pub fn rsa_public_modulus_bits(der: &[u8]) -> Result<usize, String> {
    let mut outer = Der::new(der);
    let mut key = outer.nested(tag::SEQUENCE, "an RSAPublicKey")?;
    let n = key.read(tag::INTEGER, "the RSA modulus")?;
    key.read(tag::INTEGER, "the RSA public exponent")?;
    if !key.is_empty() || !outer.is_empty() {
        return Err("malformed DER: trailing data after the RSA public key".to_string());
    }
    let n = match n.iter().position(|&b| b != 0) {
        Some(i) => &n[i..],
        None => return Err("RSA modulus is zero".to_string()),
    };
    Ok(n.len() * 8 - n[0].leading_zeros() as usize)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn blocks_skip_text_and_headers() {
        let text = "comment\n-----BEGIN EC PARAMETERS-----\nBggqhkjOPQMBBw==\n-----END EC PARAMETERS-----\n\
                    -----BEGIN X-----\nProc-Type: 4,ENCRYPTED\nDEK-Info: AES-128-CBC,00\n\nAAEC\n/w==\n-----END X-----\n";
        let b = blocks(text).unwrap();
        assert_eq!(b.len(), 2);
        assert_eq!(b[0].label, "EC PARAMETERS");
        assert_eq!(b[0].line, 2);
        assert!(!b[0].encrypted);
        assert_eq!(
            Der::new(&b[0].der).read(tag::OID, "curve").unwrap(),
            OID_P256
        );
        assert_eq!(b[1].label, "X");
        assert_eq!(b[1].der, [0, 1, 2, 255]);
        assert_eq!(b[1].line, 5);
        assert!(b[1].encrypted);
        assert_eq!(blocks("no pem here\n").unwrap(), vec![]);
    }

    #[test]
    fn block_errors() {
        assert_eq!(
            blocks("x\n-----BEGIN PRIVATE KEY-----\nAAAA\n").unwrap_err(),
            "line 2: \"-----BEGIN PRIVATE KEY-----\" has no END line"
        );
        assert_eq!(
            blocks("-----BEGIN A-----\nAAAA\n-----END B-----\n").unwrap_err(),
            "line 3: \"-----END B-----\" closes \"-----BEGIN A-----\" of line 1"
        );
        assert!(blocks("-----BEGIN A-----\nA*AA\n-----END A-----\n")
            .unwrap_err()
            .starts_with("line 1: PEM block \"A\" is not valid base64"));
        assert!(blocks(&"A".repeat(PEM_BYTES_MAX + 1))
            .unwrap_err()
            .contains("more than any key"));
    }

    #[test]
    fn der_reader_is_strict() {
        // Short and long form lengths.
        let mut d = Der::new(&[0x04, 0x02, 0xaa, 0xbb, 0x04, 0x81, 0x01, 0xcc]);
        assert_eq!(d.read(tag::OCTET_STRING, "x").unwrap(), [0xaa, 0xbb]);
        assert_eq!(d.read(tag::OCTET_STRING, "x").unwrap(), [0xcc]);
        assert!(d.is_empty());
        // Wrong tag, truncated content, indefinite and oversized length forms, empty input.
        for bad in [
            &[0x02, 0x01, 0x00][..],
            &[0x04, 0x03, 0x00],
            &[0x04, 0x80, 0x00, 0x00],
            &[0x04, 0x85, 0, 0, 0, 0, 1, 0],
            &[0x04, 0x82, 0x01],
            &[0x04],
            &[],
        ] {
            assert_eq!(
                Der::new(bad).read(tag::OCTET_STRING, "x").unwrap_err(),
                "malformed DER: expected x",
                "{bad:?}"
            );
        }
        assert!(Der::new(&[0x03, 0x02, 0x01, 0xff])
            .bit_string("k")
            .unwrap_err()
            .contains("unused bits"));
        assert_eq!(
            Der::new(&[0x03, 0x02, 0x00, 0xff]).bit_string("k").unwrap(),
            [0xff]
        );
    }

    #[test]
    fn modulus_bits() {
        // SEQUENCE { INTEGER 0x00 0x80 0x01 (16 bits), INTEGER 3 }
        let der = [0x30, 0x08, 0x02, 0x03, 0x00, 0x80, 0x01, 0x02, 0x01, 0x03];
        assert_eq!(rsa_public_modulus_bits(&der).unwrap(), 16);
        let der = [0x30, 0x06, 0x02, 0x01, 0x05, 0x02, 0x01, 0x03];
        assert_eq!(rsa_public_modulus_bits(&der).unwrap(), 3);
        let der = [0x30, 0x06, 0x02, 0x01, 0x00, 0x02, 0x01, 0x03];
        assert_eq!(
            rsa_public_modulus_bits(&der).unwrap_err(),
            "RSA modulus is zero"
        );
        let der = [0x30, 0x06, 0x02, 0x01, 0x05, 0x02, 0x01, 0x03, 0x00];
        assert!(rsa_public_modulus_bits(&der)
            .unwrap_err()
            .contains("trailing data"));
    }
}
