//! `Grip-Keep-Alive` header parsing (stream holds), with its `raw`, `cstring` and `base64` data
//! formats, and the lenient base64 decoder also used for JSON `content-bin` / `body-bin`.

use super::params::{find_param, parse_int, parse_params};
use super::{GripError, KeepAlive, KeepAliveMode};

/// Keep-alive period when the header or JSON object gives none, in seconds.
pub const DEFAULT_KEEP_ALIVE_TIMEOUT_S: u32 = 55;
/// Smallest keep-alive period, in seconds: lower values are raised to it.
pub const MIN_KEEP_ALIVE_TIMEOUT_S: u32 = 1;

/// Parses one `Grip-Keep-Alive` value: `<data>[; format=raw|cstring|base64][; timeout=<s>]
/// [; mode=idle|interval]`. The value is not split on commas (the data may contain them).
///
/// Returns `Ok(None)` when the data decodes to nothing (a base64 value without any valid
/// character): an empty keep-alive chunk could not be written anyway.
pub fn parse_keep_alive_header(value: &[u8]) -> Result<Option<KeepAlive>, GripError> {
    let params = parse_params(value, false, false)
        .map_err(|_| GripError::new("failed to parse Grip-Keep-Alive"))?;
    let raw = params
        .first()
        .map(|p| p.name.as_slice())
        .unwrap_or_default();
    if raw.is_empty() {
        return Err(GripError::new("Grip-Keep-Alive cannot be empty"));
    }
    let get = |key: &str| find_param(&params, key, true).and_then(|p| p.value.as_deref());

    let mode = match get("mode").unwrap_or_default() {
        b"" | b"idle" => KeepAliveMode::Idle,
        b"interval" => KeepAliveMode::Interval,
        other => {
            return Err(GripError(format!(
                "no such Grip-Keep-Alive mode '{}'",
                String::from_utf8_lossy(other)
            )))
        }
    };

    let timeout_s = match find_param(&params, "timeout", true) {
        Some(p) => {
            let t = parse_int(p.value.as_deref().unwrap_or_default())
                .ok_or_else(|| GripError::new("failed to parse Grip-Keep-Alive timeout value"))?;
            u32::try_from(t)
                .map_err(|_| GripError::new("Grip-Keep-Alive timeout has invalid value"))?
        }
        None => DEFAULT_KEEP_ALIVE_TIMEOUT_S,
    };

    let data = match get("format").unwrap_or_default() {
        b"" | b"raw" => raw.to_vec(),
        b"cstring" => unescape_cstring(raw)
            .ok_or_else(|| GripError::new("failed to parse Grip-Keep-Alive cstring format"))?,
        b"base64" => decode_base64_lenient(raw),
        other => {
            return Err(GripError(format!(
                "no such Grip-Keep-Alive format '{}'",
                String::from_utf8_lossy(other)
            )))
        }
    };
    Ok(keep_alive(data, timeout_s, mode))
}

/// Builds a [`KeepAlive`] with the timeout floor applied; `None` for empty data.
pub(crate) fn keep_alive(data: Vec<u8>, timeout_s: u32, mode: KeepAliveMode) -> Option<KeepAlive> {
    if data.is_empty() {
        return None;
    }
    let ka = KeepAlive {
        data,
        timeout_s: timeout_s.max(MIN_KEEP_ALIVE_TIMEOUT_S),
        mode,
    };
    debug_assert!(ka.timeout_s >= MIN_KEEP_ALIVE_TIMEOUT_S && !ka.data.is_empty());
    Some(ka)
}

/// Decodes the `cstring` keep-alive format: `\\`, `\r`, `\n` and `\xHH`. Any other escape, a
/// trailing backslash or a bad hex digit gives `None`.
///
/// (Pushpin errors on a trailing backslash and a bad `\x`, but silently drops other unknown
/// escapes such as `\t`; tack rejects them so the mistake is visible.)
pub fn unescape_cstring(input: &[u8]) -> Option<Vec<u8>> {
    let mut out = Vec::with_capacity(input.len());
    let mut n = 0;
    while n < input.len() {
        let c = input[n];
        if c != b'\\' {
            out.push(c);
            n += 1;
            continue;
        }
        match *input.get(n + 1)? {
            b'\\' => out.push(b'\\'),
            b'r' => out.push(b'\r'),
            b'n' => out.push(b'\n'),
            b'x' => {
                let hi = hex_value(*input.get(n + 2)?)?;
                let lo = hex_value(*input.get(n + 3)?)?;
                out.push((hi << 4) | lo);
                n += 2;
            }
            _ => return None,
        }
        n += 2;
    }
    debug_assert!(out.len() <= input.len());
    Some(out)
}

fn hex_value(c: u8) -> Option<u8> {
    match c {
        b'0'..=b'9' => Some(c - b'0'),
        b'a'..=b'f' => Some(c - b'a' + 10),
        b'A'..=b'F' => Some(c - b'A' + 10),
        _ => None,
    }
}

/// Decodes standard base64 leniently, like Pushpin (Qt's `fromBase64`): characters outside the
/// alphabet are skipped, decoding stops at the first `=`, and leftover bits are dropped. Never
/// fails.
pub fn decode_base64_lenient(input: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(input.len() / 4 * 3 + 2);
    let mut acc: u32 = 0;
    let mut bits = 0u32;
    for &c in input {
        let v = match c {
            b'A'..=b'Z' => c - b'A',
            b'a'..=b'z' => c - b'a' + 26,
            b'0'..=b'9' => c - b'0' + 52,
            b'+' => 62,
            b'/' => 63,
            b'=' => break,
            _ => continue,
        };
        acc = (acc << 6) | u32::from(v);
        bits += 6;
        if bits >= 8 {
            bits -= 8;
            out.push(((acc >> bits) & 0xff) as u8);
            acc &= (1 << bits) - 1;
        }
        debug_assert!(bits < 8);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ka(data: &[u8], timeout_s: u32, mode: KeepAliveMode) -> Option<KeepAlive> {
        Some(KeepAlive {
            data: data.to_vec(),
            timeout_s,
            mode,
        })
    }

    #[test]
    fn raw_default_timeout_and_mode() {
        assert_eq!(
            parse_keep_alive_header(b"ping").unwrap(),
            ka(b"ping", 55, KeepAliveMode::Idle)
        );
        assert_eq!(
            parse_keep_alive_header(b"a,b; format=raw; timeout=10; mode=interval").unwrap(),
            ka(b"a,b", 10, KeepAliveMode::Interval)
        );
        assert_eq!(
            parse_keep_alive_header(b"x; mode=idle").unwrap(),
            ka(b"x", 55, KeepAliveMode::Idle)
        );
    }

    #[test]
    fn cstring_sse_comment() {
        assert_eq!(
            parse_keep_alive_header(br":\n\n; format=cstring; timeout=55").unwrap(),
            ka(b":\n\n", 55, KeepAliveMode::Idle)
        );
        assert_eq!(
            parse_keep_alive_header(br"ka\n; format=cstring; timeout=3").unwrap(),
            ka(b"ka\n", 3, KeepAliveMode::Idle)
        );
        assert_eq!(
            parse_keep_alive_header(br#"a\\b\r\x3b\xFf; format="cstring""#).unwrap(),
            ka(b"a\\b\r;\xff", 55, KeepAliveMode::Idle)
        );
    }

    #[test]
    fn cstring_bad_escapes() {
        for bad in [
            &br"a\; format=cstring"[..],
            br"a\t; format=cstring",
            br"\x4; format=cstring",
            br"\xZZ; format=cstring",
        ] {
            assert_eq!(
                parse_keep_alive_header(bad),
                Err(GripError::new(
                    "failed to parse Grip-Keep-Alive cstring format"
                )),
                "{}",
                String::from_utf8_lossy(bad)
            );
        }
        assert_eq!(unescape_cstring(br"\x41\x"), None);
        assert_eq!(unescape_cstring(br"\x41"), Some(b"A".to_vec()));
        assert_eq!(unescape_cstring(b""), Some(vec![]));
    }

    #[test]
    fn base64_format() {
        assert_eq!(
            parse_keep_alive_header(b"OgoK; format=base64; timeout=20").unwrap(),
            ka(b":\n\n", 20, KeepAliveMode::Idle)
        );
        // Nothing decodable: no keep-alive at all.
        assert_eq!(
            parse_keep_alive_header(b"!!!; format=base64").unwrap(),
            None
        );
    }

    #[test]
    fn timeout_floor_and_errors() {
        assert_eq!(
            parse_keep_alive_header(b"x; timeout=0").unwrap(),
            ka(b"x", 1, KeepAliveMode::Idle)
        );
        assert_eq!(
            parse_keep_alive_header(b"x; timeout=abc"),
            Err(GripError::new(
                "failed to parse Grip-Keep-Alive timeout value"
            ))
        );
        assert_eq!(
            parse_keep_alive_header(b"x; timeout"),
            Err(GripError::new(
                "failed to parse Grip-Keep-Alive timeout value"
            ))
        );
        assert_eq!(
            parse_keep_alive_header(b"x; timeout=-5"),
            Err(GripError::new("Grip-Keep-Alive timeout has invalid value"))
        );
    }

    #[test]
    fn empty_mode_format_errors() {
        assert_eq!(
            parse_keep_alive_header(b""),
            Err(GripError::new("Grip-Keep-Alive cannot be empty"))
        );
        assert_eq!(
            parse_keep_alive_header(b" ; timeout=5"),
            Err(GripError::new("Grip-Keep-Alive cannot be empty"))
        );
        assert_eq!(
            parse_keep_alive_header(b"x; mode=often"),
            Err(GripError::new("no such Grip-Keep-Alive mode 'often'"))
        );
        assert_eq!(
            parse_keep_alive_header(b"x; mode=Idle"),
            Err(GripError::new("no such Grip-Keep-Alive mode 'Idle'"))
        );
        assert_eq!(
            parse_keep_alive_header(b"x; format=hex"),
            Err(GripError::new("no such Grip-Keep-Alive format 'hex'"))
        );
        assert_eq!(
            parse_keep_alive_header(br#"x; format="raw"#),
            Err(GripError::new("failed to parse Grip-Keep-Alive"))
        );
    }

    #[test]
    fn base64_lenient_decoder() {
        assert_eq!(decode_base64_lenient(b"aGVsbG8="), b"hello");
        assert_eq!(decode_base64_lenient(b"aGVsbG8"), b"hello");
        assert_eq!(decode_base64_lenient(b"aGVs\nbG8=junk"), b"hello");
        assert_eq!(decode_base64_lenient(b"AAEC/w=="), [0, 1, 2, 255]);
        assert_eq!(decode_base64_lenient(b"+/+/"), [0xfb, 0xff, 0xbf]);
        assert_eq!(decode_base64_lenient(b""), b"");
        assert_eq!(decode_base64_lenient(b"A"), b"");
    }
}
