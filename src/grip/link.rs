//! `Grip-Link` header parsing: `<uri>; rel=next[; timeout=<s>]` and `<uri>; rel=gone`.

use super::params::{find_param, parse_int, parse_params, split_elements};
use super::{GripError, Link};

/// Next-link refetch timeout of a stream hold when `rel=next` gives none, in seconds.
pub const DEFAULT_NEXT_LINK_TIMEOUT_S: u32 = 120;

/// Links found in the `Grip-Link` headers. The last `next` and the last `gone` link win.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Links {
    /// `rel=next`; `timeout_s` is always `Some` (default [`DEFAULT_NEXT_LINK_TIMEOUT_S`]).
    pub next: Option<Link>,
    /// `rel=gone`; `timeout_s` is always `None`.
    pub gone: Option<Link>,
}

/// Parses every `Grip-Link` header value (each may hold a comma separated list). Elements
/// without any parameter and other `rel` values are ignored, as Pushpin does. The URI is kept
/// as written (it may be relative to the request URL; the caller resolves it).
pub fn parse_links<'a>(values: impl IntoIterator<Item = &'a [u8]>) -> Result<Links, GripError> {
    let mut links = Links::default();
    for value in values {
        for elem in split_elements(value, true) {
            let params = parse_params(elem, false, true)
                .map_err(|_| GripError::new("failed to parse Grip-Link value"))?;
            if params.len() < 2 {
                continue;
            }
            let uri = parse_uri(&params[0].name)?;
            let rel = find_param(&params, "rel", true).and_then(|p| p.value.as_deref());
            match rel {
                Some(b"next") => {
                    let timeout_s = match find_param(&params, "timeout", true) {
                        Some(p) => {
                            let t = parse_int(p.value.as_deref().unwrap_or_default()).ok_or_else(
                                || GripError::new("failed to parse Grip-Link timeout value"),
                            )?;
                            u32::try_from(t).map_err(|_| {
                                GripError::new("Grip-Link timeout has invalid value")
                            })?
                        }
                        None => DEFAULT_NEXT_LINK_TIMEOUT_S,
                    };
                    links.next = Some(Link {
                        uri,
                        timeout_s: Some(timeout_s),
                    });
                }
                Some(b"gone") => {
                    links.gone = Some(Link {
                        uri,
                        timeout_s: None,
                    })
                }
                _ => {}
            }
        }
    }
    Ok(links)
}

/// Checks `<uri>` and returns the URI. It must be non-empty, printable ASCII without spaces
/// (an encoded URI reference; this also keeps CR/LF out of next-link requests).
fn parse_uri(token: &[u8]) -> Result<String, GripError> {
    let inner = match token {
        [b'<', inner @ .., b'>'] if !inner.is_empty() => inner,
        _ => return Err(GripError::new("failed to parse Grip-Link value")),
    };
    if !inner.iter().all(|&b| b.is_ascii_graphic())
        || inner.contains(&b'<')
        || inner.contains(&b'>')
    {
        return Err(GripError::new("Grip-Link contains invalid link"));
    }
    // All bytes are ASCII, so this cannot fail.
    let uri = String::from_utf8(inner.to_vec())
        .map_err(|_| GripError::new("Grip-Link contains invalid link"))?;
    debug_assert!(!uri.is_empty());
    Ok(uri)
}

/// One connection's budget of next-link fetches: a token bucket of `rate` fetches a second
/// with a burst of as many, so that a backend answering each link with another cannot make
/// tack fetch as fast as round trips allow (Pushpin's chains have no brake but the client).
/// A replay of a few pages (django-eventstream pages 100 events) goes at full speed; past the
/// burst, fetches are spaced `1000 / rate` ms apart. Pure: the clock is passed in.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LinkBudget {
    /// Tokens in thousandths (so a refill of less than one whole token per call adds up).
    milli: u64,
    last_ms: u64,
    rate: u32,
}

impl LinkBudget {
    /// A full bucket at `now_ms`; `rate` (≥ 1) fetches a second.
    pub fn new(rate: u32, now_ms: u64) -> Self {
        let rate = rate.max(1);
        LinkBudget {
            milli: u64::from(rate) * 1000,
            last_ms: now_ms,
            rate,
        }
    }

    /// Take one fetch at `now_ms`: how many ms to wait before it (0: at once). The wait is
    /// charged in advance, so calls in a row are spaced evenly.
    pub fn take(&mut self, now_ms: u64) -> u64 {
        let cap = u64::from(self.rate) * 1000;
        let elapsed = now_ms.saturating_sub(self.last_ms);
        self.milli = (self.milli + elapsed * u64::from(self.rate)).min(cap);
        self.last_ms = self.last_ms.max(now_ms);
        if self.milli >= 1000 {
            self.milli -= 1000;
            return 0;
        }
        // Not enough: wait until one whole token has accrued, and spend it then.
        let short = 1000 - self.milli;
        let wait = short.div_ceil(u64::from(self.rate));
        self.milli = 0;
        self.last_ms += wait;
        debug_assert!((1..=1000).contains(&wait));
        wait
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn links(values: &[&str]) -> Result<Links, GripError> {
        parse_links(values.iter().map(|v| v.as_bytes()))
    }

    fn next(uri: &str, t: u32) -> Option<Link> {
        Some(Link {
            uri: uri.into(),
            timeout_s: Some(t),
        })
    }

    fn gone(uri: &str) -> Option<Link> {
        Some(Link {
            uri: uri.into(),
            timeout_s: None,
        })
    }

    #[test]
    fn next_with_and_without_timeout() {
        assert_eq!(
            links(&["</stream/?after=5>; rel=next"]).unwrap(),
            Links {
                next: next("/stream/?after=5", 120),
                gone: None
            }
        );
        assert_eq!(
            links(&["<http://b/x>; rel=next; timeout=30"]).unwrap().next,
            next("http://b/x", 30)
        );
        assert_eq!(
            links(&["<a>; rel=next; timeout=0"]).unwrap().next,
            next("a", 0)
        );
    }

    #[test]
    fn gone_and_multiple_headers_and_lists() {
        assert_eq!(
            links(&[
                "</n>; rel=next, </g>; rel=gone",
                "</n2>; rel=next; timeout=9"
            ])
            .unwrap(),
            Links {
                next: next("/n2", 9),
                gone: gone("/g")
            }
        );
        assert_eq!(
            links(&[r#"</g>; rel="gone""#]).unwrap(),
            Links {
                next: None,
                gone: gone("/g")
            }
        );
    }

    #[test]
    fn other_rels_and_bare_elements_ignored() {
        assert_eq!(
            links(&["</p>; rel=prev", "</x>", "garbage", "</y>; REL=self"]).unwrap(),
            Links::default()
        );
        assert_eq!(links(&["</n>; rel=NEXT"]).unwrap(), Links::default());
        assert_eq!(links(&[]).unwrap(), Links::default());
    }

    #[test]
    fn uri_with_comma_and_semicolon() {
        assert_eq!(
            links(&["</a;b?c=1,2>; rel=next"]).unwrap().next,
            next("/a;b?c=1,2", 120)
        );
    }

    #[test]
    fn errors() {
        let value = GripError::new("failed to parse Grip-Link value");
        assert_eq!(links(&["/x; rel=next"]), Err(value.clone()));
        assert_eq!(links(&["<>; rel=next"]), Err(value.clone()));
        assert_eq!(links(&["<x; rel=next"]), Err(value.clone()));
        assert_eq!(links(&[r#"<x>; rel="next"#]), Err(value));
        // Even links with an ignored rel must be well formed (as in Pushpin).
        assert_eq!(
            links(&["/p; rel=prev"]),
            Err(GripError::new("failed to parse Grip-Link value"))
        );
        assert_eq!(
            links(&["<a b>; rel=next"]),
            Err(GripError::new("Grip-Link contains invalid link"))
        );
        assert_eq!(
            links(&["<a\r\nX: y>; rel=next"]),
            Err(GripError::new("Grip-Link contains invalid link"))
        );
        assert_eq!(
            links(&["<a>; rel=next; timeout=soon"]),
            Err(GripError::new("failed to parse Grip-Link timeout value"))
        );
        assert_eq!(
            links(&["<a>; rel=next; timeout"]),
            Err(GripError::new("failed to parse Grip-Link timeout value"))
        );
        assert_eq!(
            links(&["<a>; rel=next; timeout=-1"]),
            Err(GripError::new("Grip-Link timeout has invalid value"))
        );
        // A bad timeout on a gone link is not looked at.
        assert_eq!(
            links(&["<a>; rel=gone; timeout=x"]).unwrap().gone,
            gone("a")
        );
    }

    #[test]
    fn link_budget_allows_a_burst_then_spaces_fetches() {
        let mut b = super::LinkBudget::new(10, 1_000);
        for _ in 0..10 {
            assert_eq!(b.take(1_000), 0);
        }
        // The eleventh in the same millisecond waits one refill (100 ms at 10/s), the next
        // another 100 ms after that.
        assert_eq!(b.take(1_000), 100);
        assert_eq!(b.take(1_100), 100);
        // After a quiet second the burst is back.
        let mut waited = 0;
        for _ in 0..10 {
            waited += b.take(3_000);
        }
        assert_eq!(waited, 0);
        assert_eq!(
            super::LinkBudget::new(0, 0).take(0),
            0,
            "rate 0 is treated as 1"
        );
    }
}
