//! Header value tokenizer shared by the `Grip-*` header parsers.
//!
//! GRIP headers use one loose syntax: a comma separated list of elements, each element a first
//! token followed by `;`-separated `name[=value]` parameters, values optionally quoted with
//! backslash escapes. This mirrors how Pushpin splits and parses such headers (quote-aware comma
//! split, first token taken verbatim up to the first `;`, parameter names and unquoted values
//! trimmed), with one extension: when `angle` is set, `<...>` protects `,` and `;` (link URIs).

/// One `name[=value]` parameter of a header element. `value` is `None` when there was no `=`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Param {
    pub name: Vec<u8>,
    pub value: Option<Vec<u8>>,
}

/// A quoted string was not terminated, or ended with a lone backslash.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct ParamError;

/// Removes leading and trailing ASCII whitespace (space, tab, CR, LF, VT, FF).
pub(crate) fn trim(input: &[u8]) -> &[u8] {
    let is_ws = |b: &u8| matches!(*b, b' ' | b'\t' | b'\r' | b'\n' | 0x0b | 0x0c);
    let start = input.iter().position(|b| !is_ws(b)).unwrap_or(input.len());
    let end = input
        .iter()
        .rposition(|b| !is_ws(b))
        .map_or(start, |p| p + 1);
    debug_assert!(start <= end && end <= input.len());
    &input[start..end]
}

/// Splits a header value into trimmed comma separated elements. Commas inside `"..."` (and inside
/// `<...>` when `angle`) do not split. An unterminated quote makes the rest one element. A
/// trailing comma adds no element; an empty element between two commas is kept (as `b""`).
pub(crate) fn split_elements(input: &[u8], angle: bool) -> Vec<&[u8]> {
    let mut out = Vec::new();
    let mut pos = 0;
    while pos < input.len() {
        let end = find_unprotected(input, pos, b',', angle).unwrap_or(input.len());
        debug_assert!(end >= pos && end <= input.len());
        out.push(trim(&input[pos..end]));
        pos = end + 1;
    }
    out
}

/// Position of the first `target` at or after `from` that is not inside quotes (or angle
/// brackets when `angle`). `None` if there is none or if a quote is left open.
fn find_unprotected(input: &[u8], from: usize, target: u8, angle: bool) -> Option<usize> {
    let mut in_quote = false;
    let mut in_angle = false;
    let last_gt = if angle {
        input.iter().rposition(|&b| b == b'>')
    } else {
        None
    };
    let mut n = from;
    while n < input.len() {
        let c = input[n];
        if in_quote {
            if c == b'\\' {
                n += 1;
            } else if c == b'"' {
                in_quote = false;
            }
        } else if in_angle {
            if c == b'>' {
                in_angle = false;
            }
        } else if c == b'"' {
            in_quote = true;
        } else if angle && c == b'<' && last_gt.is_some_and(|g| g > n) {
            // Only a `<` with a matching `>` opens a protected span.
            in_angle = true;
        } else if c == target {
            return Some(n);
        }
        n += 1;
    }
    None
}

/// Parses one element into parameters.
///
/// With `parse_first == false` the first parameter is the raw text up to the first `;`
/// (trimmed, `value: None`), as for `Grip-Channel`'s name or `Grip-Keep-Alive`'s data. With
/// `parse_first == true` the first parameter is parsed as `name[=value]` like the others (as for
/// `Grip-Set-Meta`). An empty element yields the single empty first parameter when
/// `parse_first == false` and no parameters at all when `parse_first == true`.
pub(crate) fn parse_params(
    elem: &[u8],
    parse_first: bool,
    angle: bool,
) -> Result<Vec<Param>, ParamError> {
    let mut out = Vec::new();
    let mut start = 0;
    if !parse_first {
        let end = if angle {
            find_unprotected(elem, 0, b';', true)
        } else {
            elem.iter().position(|&b| b == b';')
        };
        let end = end.unwrap_or(elem.len());
        out.push(Param {
            name: trim(&elem[..end]).to_vec(),
            value: None,
        });
        start = end + 1;
    }
    while start < elem.len() {
        let rel = elem[start..].iter().position(|&b| b == b'=' || b == b';');
        let Some(at) = rel.map(|r| start + r) else {
            out.push(Param {
                name: trim(&elem[start..]).to_vec(),
                value: None,
            });
            break;
        };
        let name = trim(&elem[start..at]).to_vec();
        if elem[at] == b';' {
            out.push(Param { name, value: None });
            start = at + 1;
            continue;
        }
        // `name=value`: skip blanks after '=', then a quoted or a plain value.
        let mut v = at + 1;
        while v < elem.len() && matches!(elem[v], b' ' | b'\t') {
            v += 1;
        }
        if v < elem.len() && elem[v] == b'"' {
            let (value, after) = parse_quoted(elem, v + 1)?;
            out.push(Param {
                name,
                value: Some(value),
            });
            // Anything between the closing quote and the next ';' is ignored.
            start = elem[after..]
                .iter()
                .position(|&b| b == b';')
                .map_or(elem.len(), |p| after + p + 1);
        } else {
            let end = elem[v..]
                .iter()
                .position(|&b| b == b';')
                .map_or(elem.len(), |p| v + p);
            out.push(Param {
                name,
                value: Some(trim(&elem[v..end]).to_vec()),
            });
            start = end + 1;
        }
    }
    Ok(out)
}

/// Reads a quoted string whose opening quote precedes `from`. Returns the unescaped content and
/// the index just past the closing quote.
fn parse_quoted(elem: &[u8], from: usize) -> Result<(Vec<u8>, usize), ParamError> {
    let mut value = Vec::new();
    let mut n = from;
    while n < elem.len() {
        match elem[n] {
            b'\\' => {
                let escaped = *elem.get(n + 1).ok_or(ParamError)?;
                value.push(escaped);
                n += 2;
            }
            b'"' => return Ok((value, n + 1)),
            c => {
                value.push(c);
                n += 1;
            }
        }
    }
    Err(ParamError)
}

/// The first parameter (after the first token, when `skip_first`) whose name equals `key`
/// ignoring ASCII case.
pub(crate) fn find_param<'a>(
    params: &'a [Param],
    key: &str,
    skip_first: bool,
) -> Option<&'a Param> {
    let skip = usize::from(skip_first);
    params
        .iter()
        .skip(skip)
        .find(|p| p.name.eq_ignore_ascii_case(key.as_bytes()))
}

/// Parses a decimal integer the way Pushpin's `toInt` does: surrounding whitespace allowed, an
/// optional sign, digits only, and the result must fit an `i32`.
pub(crate) fn parse_int(input: &[u8]) -> Option<i32> {
    let s = trim(input);
    let (negative, digits) = match s.first() {
        Some(b'-') => (true, &s[1..]),
        Some(b'+') => (false, &s[1..]),
        _ => (false, s),
    };
    if digits.is_empty() || !digits.iter().all(u8::is_ascii_digit) {
        return None;
    }
    let mut value: i64 = 0;
    for &d in digits {
        value = value * 10 + i64::from(d - b'0');
        if value > i64::from(i32::MAX) + 1 {
            return None;
        }
    }
    let value = if negative { -value } else { value };
    i32::try_from(value).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(name: &str, value: Option<&str>) -> Param {
        Param {
            name: name.as_bytes().to_vec(),
            value: value.map(|v| v.as_bytes().to_vec()),
        }
    }

    #[test]
    fn trim_strips_ascii_whitespace_only() {
        assert_eq!(trim(b"  a b \t\r\n"), b"a b");
        assert_eq!(trim(b"   "), b"");
        assert_eq!(trim(b""), b"");
        assert_eq!(trim(b"\xc2\xa0x"), b"\xc2\xa0x");
    }

    #[test]
    fn split_respects_quotes_and_empty_elements() {
        assert_eq!(
            split_elements(b"a, b ,c", false),
            vec![&b"a"[..], b"b", b"c"]
        );
        assert_eq!(split_elements(b"a,", false), vec![&b"a"[..]]);
        assert_eq!(split_elements(b"a,,b", false), vec![&b"a"[..], b"", b"b"]);
        assert_eq!(split_elements(b",a", false), vec![&b""[..], b"a"]);
        assert_eq!(split_elements(b"", false), Vec::<&[u8]>::new());
        assert_eq!(
            split_elements(br#"a; x="1,2", b"#, false),
            vec![&br#"a; x="1,2""#[..], b"b"]
        );
        assert_eq!(
            split_elements(br#"a; x="1\",2", b"#, false),
            vec![&br#"a; x="1\",2""#[..], b"b"]
        );
        // Unterminated quote: the rest is one element.
        assert_eq!(
            split_elements(br#"a; x="1,2"#, false),
            vec![&br#"a; x="1,2"#[..]]
        );
    }

    #[test]
    fn split_angle_brackets_protect_commas() {
        assert_eq!(
            split_elements(b"<http://x/?a=1,2>; rel=next, <y>; rel=gone", true),
            vec![&b"<http://x/?a=1,2>; rel=next"[..], b"<y>; rel=gone"]
        );
        assert_eq!(split_elements(b"<a,b>", false), vec![&b"<a"[..], b"b>"]);
        // A `<` without a closing `>` protects nothing.
        assert_eq!(split_elements(b"<a,b", true), vec![&b"<a"[..], b"b"]);
        assert_eq!(
            parse_params(b"<a; rel=next", false, true).unwrap(),
            vec![p("<a", None), p("rel", Some("next"))]
        );
    }

    #[test]
    fn params_first_token_raw() {
        assert_eq!(
            parse_params(b"ch ; prev-id=7; filter=skip-self", false, false).unwrap(),
            vec![
                p("ch", None),
                p("prev-id", Some("7")),
                p("filter", Some("skip-self"))
            ]
        );
        assert_eq!(parse_params(b"", false, false).unwrap(), vec![p("", None)]);
        assert_eq!(
            parse_params(b"a=b", false, false).unwrap(),
            vec![p("a=b", None)]
        );
    }

    #[test]
    fn params_parse_first() {
        assert_eq!(
            parse_params(b"k=v; x", true, false).unwrap(),
            vec![p("k", Some("v")), p("x", None)]
        );
        assert_eq!(parse_params(b"", true, false).unwrap(), vec![]);
        assert_eq!(parse_params(b"k", true, false).unwrap(), vec![p("k", None)]);
        assert_eq!(
            parse_params(b"=v", true, false).unwrap(),
            vec![p("", Some("v"))]
        );
    }

    #[test]
    fn params_quoted_values() {
        assert_eq!(
            parse_params(br#"a; x="q;\"u\\" junk; y = 2 "#, false, false).unwrap(),
            vec![p("a", None), p("x", Some(r#"q;"u\"#)), p("y", Some("2"))]
        );
        assert_eq!(
            parse_params(br#"a; x="open"#, false, false),
            Err(ParamError)
        );
        assert_eq!(parse_params(br#"a; x="\"#, false, false), Err(ParamError));
        assert_eq!(
            parse_params(b"a;;b", false, false).unwrap(),
            vec![p("a", None), p("", None), p("b", None)]
        );
        assert_eq!(
            parse_params(b"a; x=", false, false).unwrap(),
            vec![p("a", None), p("x", Some(""))]
        );
    }

    #[test]
    fn params_angle_first_token() {
        assert_eq!(
            parse_params(b"<http://x/a;b>; rel=next", false, true).unwrap(),
            vec![p("<http://x/a;b>", None), p("rel", Some("next"))]
        );
    }

    #[test]
    fn find_param_is_case_insensitive_and_first_wins() {
        let ps = parse_params(b"t; A=1; a=2; b", false, false).unwrap();
        assert_eq!(
            find_param(&ps, "a", true).unwrap().value.as_deref(),
            Some(&b"1"[..])
        );
        assert!(find_param(&ps, "t", true).is_none());
        assert!(find_param(&ps, "t", false).is_some());
        assert_eq!(find_param(&ps, "b", true).unwrap().value, None);
    }

    #[test]
    fn parse_int_like_qt() {
        assert_eq!(parse_int(b"55"), Some(55));
        assert_eq!(parse_int(b" 7 "), Some(7));
        assert_eq!(parse_int(b"+3"), Some(3));
        assert_eq!(parse_int(b"-1"), Some(-1));
        assert_eq!(parse_int(b"2147483647"), Some(i32::MAX));
        assert_eq!(parse_int(b"-2147483648"), Some(i32::MIN));
        assert_eq!(parse_int(b"2147483648"), None);
        assert_eq!(parse_int(b"99999999999999999999999"), None);
        assert_eq!(parse_int(b""), None);
        assert_eq!(parse_int(b"-"), None);
        assert_eq!(parse_int(b"1.5"), None);
        assert_eq!(parse_int(b"0x10"), None);
        assert_eq!(parse_int(b"1 2"), None);
    }
}
