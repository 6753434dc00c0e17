//! `Grip-Sig`: the HS256 JWT tack adds to every request it forwards to a GRIP backend, and the
//! check of an incoming one against `upstream_key` (grip-spec §5.3).
//!
//! The token is `{"typ":"JWT","alg":"HS256"}` . `{"iss":<iss>,"exp":<now+3600>}`, both
//! base64url without padding, signed with HMAC-SHA256. Nothing binds it to the request. The
//! clock is passed in (`now_unix_s`), never read here.

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use hmac::{Hmac, Mac};
use sha2::Sha256;

type HmacSha256 = Hmac<Sha256>;

/// How long a minted token is valid, as Pushpin: one hour.
pub const GRIP_SIG_TTL_S: u64 = 3600;

/// Longest token [`verify_grip_sig`] looks at. A genuine token is ~150 bytes; the bound keeps
/// the work on a hostile header small.
pub const MAX_TOKEN_BYTES: usize = 4096;

/// The fixed JOSE header, base64url of `{"typ":"JWT","alg":"HS256"}`.
const HEADER_B64: &str = "eyJ0eXAiOiJKV1QiLCJhbGciOiJIUzI1NiJ9";

fn mac_for(key: &[u8]) -> Option<HmacSha256> {
    // HMAC takes keys of any length, so this never fails; no panic path either way.
    HmacSha256::new_from_slice(key).ok()
}

/// Mint the Grip-Sig JWT: header `{"typ":"JWT","alg":"HS256"}` (exactly that order), claims
/// `{"iss":<iss>,"exp":<now+3600>}` (that order), base64url without padding, HMAC-SHA256.
pub fn mint_grip_sig(key: &[u8], iss: &str, now_unix_s: u64) -> String {
    let iss_json = serde_json::Value::String(iss.to_owned()).to_string();
    let exp = now_unix_s.saturating_add(GRIP_SIG_TTL_S);
    let claims = format!("{{\"iss\":{iss_json},\"exp\":{exp}}}");

    let mut token = String::with_capacity(HEADER_B64.len() + claims.len() * 4 / 3 + 48);
    token.push_str(HEADER_B64);
    token.push('.');
    URL_SAFE_NO_PAD.encode_string(claims.as_bytes(), &mut token);
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

/// Verify a Grip-Sig for `upstream_key`: HS256 only, signature compared in constant time,
/// `exp` an integer with `exp > now` (strict, no leeway). `iss` is not checked. An empty key
/// verifies nothing.
pub fn verify_grip_sig(token: &str, key: &[u8], now_unix_s: u64) -> bool {
    if key.is_empty() || token.len() > MAX_TOKEN_BYTES {
        return false;
    }
    let mut parts = token.split('.');
    let (Some(header_b64), Some(claims_b64), Some(sig_b64), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return false;
    };

    // The algorithm is the key's, not the token's choice: anything but HS256 is refused.
    let Some(header) = decode_json_object(header_b64) else {
        return false;
    };
    if header.get("alg").and_then(|a| a.as_str()) != Some("HS256") {
        return false;
    }

    let Ok(sig) = URL_SAFE_NO_PAD.decode(sig_b64) else {
        return false;
    };
    let Some(mut mac) = mac_for(key) else {
        return false;
    };
    // header_b64 and claims_b64 are adjacent in `token`, joined by the first dot.
    let signed_len = header_b64.len() + 1 + claims_b64.len();
    mac.update(&token.as_bytes()[..signed_len]);
    if mac.verify_slice(&sig).is_err() {
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
            URL_SAFE_NO_PAD.decode(HEADER_B64).unwrap(),
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
}
