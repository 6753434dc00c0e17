//! GRIP sessions (Pushpin's `session` feature): a backend names a client's session and how to
//! find it in later requests; tack then tells the backend, on each such request, which session
//! it is and the last message id the session got on each channel.
//!
//! Pure: no I/O, no clock reads (the store takes `now_ms`). The I/O glue, which owns the one
//! process-wide [`SessionStore`] and reads the clock, is `conn::session`.
//!
//! ## On the wire (Pushpin 1.36 with a state server; `/tmp/research/session.md` §1–§4)
//! - Only routes with the `session` flag (`*,session host:port`) detect sessions and store
//!   what a backend response says about them.
//! - A backend response may carry (any `Grip-*` header makes it a GRIP answer; all of them are
//!   removed before the client sees it):
//!   - `Grip-Session-Id: <sid>`: the session of this request ([`parse_response`] takes the
//!     first header's value as it is);
//!   - `Grip-Session-Detect: path-prefix=<p>; sid-ptr=<JSON pointer>[; json-param=<name>]`
//!     (repeated or comma-separated): a detection [`Rule`], bound to the request's host; an
//!     entry without both `path-prefix` and `sid-ptr` is dropped;
//!   - `Grip-Last: <channel>; last-id=<id>`: the session's last id per channel (merged into
//!     what is stored).
//! - A later request on a `session` route whose host equals a rule's and whose path (without
//!   the query) starts with its `path-prefix` (a raw, case-sensitive prefix: `/api` matches
//!   `/apix`) has its session found in its body ([`detect`]): the first
//!   [`DETECT_BODY_MAX`] bytes, as JSON, or one form parameter (`json-param`) percent-decoded
//!   and read as JSON; then the RFC 6901 pointer; the value must be a string. Path, query and
//!   headers are never searched, so a `GET` is never detected.
//! - Such a request, from an untrusted client, reaches the backend with
//!   `Grip-Session-Id: <sid>` and one `Grip-Last: <channel>; last-id=<id>` per stored channel
//!   ([`request_lines`]). An unknown sid is still sent, without `Grip-Last`. A trusted
//!   upstream gets neither (its own `Grip-*` headers pass).
//! - Last ids also advance when a published item with an `id` is delivered to a hold (or a
//!   WebSocket) that belongs to a session: a hold whose own GRIP response carried
//!   `Grip-Session-Id`, or a WebSocket whose backend sent `c:{"type":"session","id":…}`. Only
//!   sessions already stored are updated ([`SessionStore::update_existing`]).
//!
//! ## Where tack differs (each marked "tack:" below)
//! - State is kept in process ([`SessionStore`]); Pushpin needs an external state server, and a
//!   stock install (none configured) never detects anything.
//! - Bounded: at most `sessions_max` sessions (the least recently used is evicted, counted), a
//!   `session_ttl_ms` after its last use a session expires (counted), at most
//!   `session_rules_max` rules (new ones refused beyond, counted and logged), at most
//!   [`CHANNELS_PER_SESSION_MAX`] channels per session (the least recently updated dropped).
//!   Pushpin's state server has no bound and no expiry.
//! - Rules are bound to the client's `Host` (lowercase, no port) both when stored and when
//!   looked up; Pushpin stores the host after `as_host` rewriting, so with `as_host` its rules
//!   never match.
//! - Channel names are kept as published (with the route's `prefix`), and `Grip-Last` from a
//!   backend gets the prefix when stored; the prefix is removed again in the request headers,
//!   so the backend sees channels as it named them (as in tack's other `Grip-Last` headers).
//!   Pushpin mixes the two forms on prefixed routes.

pub mod store;

pub use store::{Removed, SessionStore, StoreLimits};

use crate::grip::params::{find_param, parse_params, split_elements};
use crate::http1::Header;

/// Request body bytes read for detection (Pushpin's `inspectPrefetch`): a longer body is cut
/// here, which normally makes its JSON fail to parse.
pub const DETECT_BODY_MAX: usize = 10_000;

/// Longest session id tack keeps (longer ones are ignored): bounds what one stored session
/// costs. tack: Pushpin has no limit.
pub const SID_BYTES_MAX: usize = 1024;

/// Channels whose last id one session keeps; past it, the least recently updated channel is
/// dropped. tack: Pushpin has no limit.
pub const CHANNELS_PER_SESSION_MAX: usize = 100;

/// A `Grip-Session-Detect` rule: where a session id is in requests to one host.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Rule {
    /// The host the rule applies to: lowercase, no port ([`normalize_domain`]).
    pub domain: String,
    /// A raw prefix of the request path (no query).
    pub path_prefix: String,
    /// An RFC 6901 JSON pointer (starts with `/`, else the rule never matches).
    pub sid_ptr: String,
    /// Read the JSON from this form parameter instead of the whole body.
    pub json_param: Option<String>,
}

impl Rule {
    /// Whether the rule applies to a request for `domain` (normalized) and `path`.
    pub fn applies(&self, domain: &str, path: &str) -> bool {
        let path = path.split_once('?').map_or(path, |(p, _)| p);
        self.domain == domain && path.starts_with(&self.path_prefix)
    }
}

/// What a backend response says about sessions.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct FromResponse {
    /// `Grip-Session-Id` (the first header), if it is a usable id ([`sid_is_usable`]).
    pub sid: Option<String>,
    /// `Grip-Session-Detect` rules, each bound to the request's domain; duplicates removed.
    pub rules: Vec<Rule>,
    /// `Grip-Last` entries (channel, id) in header order; a later entry for a channel replaces
    /// an earlier one.
    pub last_ids: Vec<(String, String)>,
}

impl FromResponse {
    /// Nothing to act on.
    pub fn is_empty(&self) -> bool {
        self.sid.is_none() && self.rules.is_empty() && self.last_ids.is_empty()
    }
}

/// A host as rules are keyed: trimmed, without the port, lowercase (`[v6]` keeps its brackets).
pub fn normalize_domain(host: &str) -> String {
    let host = host.trim();
    let bare = if host.starts_with('[') {
        host.find(']').map_or(host, |end| &host[..=end])
    } else {
        host.split(':').next().unwrap_or(host)
    };
    bare.to_ascii_lowercase()
}

/// A session id tack keeps and sends: non-empty, at most [`SID_BYTES_MAX`] bytes, and safe in
/// a header line (no CR, LF, NUL or other control character).
pub fn sid_is_usable(sid: &str) -> bool {
    !sid.is_empty() && sid.len() <= SID_BYTES_MAX && !sid.bytes().any(|b| b.is_ascii_control())
}

fn utf8(bytes: &[u8]) -> Option<String> {
    std::str::from_utf8(bytes).ok().map(str::to_owned)
}

/// Read the session headers of a backend response to a request for `domain` (normalized).
/// Malformed entries are skipped, never an error: they are hints, and the response goes on.
pub fn parse_response(headers: &[Header], domain: &str) -> FromResponse {
    let mut out = FromResponse::default();
    if let Some(h) = headers.iter().find(|h| h.is("grip-session-id")) {
        out.sid = std::str::from_utf8(&h.value)
            .ok()
            .map(str::trim)
            .filter(|s| sid_is_usable(s))
            .map(str::to_owned);
    }
    for h in headers.iter().filter(|h| h.is("grip-session-detect")) {
        for elem in split_elements(&h.value, false) {
            let Ok(params) = parse_params(elem, true, false) else {
                continue;
            };
            let get = |k: &str| {
                find_param(&params, k, false)
                    .and_then(|p| p.value.as_deref())
                    .and_then(utf8)
            };
            let (Some(path_prefix), Some(sid_ptr)) = (get("path-prefix"), get("sid-ptr")) else {
                continue;
            };
            let rule = Rule {
                domain: domain.to_owned(),
                path_prefix,
                sid_ptr,
                json_param: get("json-param"),
            };
            if !out.rules.contains(&rule) {
                out.rules.push(rule);
            }
        }
    }
    for h in headers.iter().filter(|h| h.is("grip-last")) {
        for elem in split_elements(&h.value, false) {
            let Ok(params) = parse_params(elem, false, false) else {
                continue;
            };
            let Some(channel) = params.first().and_then(|p| utf8(&p.name)) else {
                continue;
            };
            let id = find_param(&params, "last-id", true)
                .and_then(|p| p.value.as_deref())
                .and_then(utf8);
            let Some(id) = id else { continue };
            if channel.is_empty() {
                continue;
            }
            out.last_ids.retain(|(c, _)| *c != channel);
            out.last_ids.push((channel, id));
        }
    }
    debug_assert!(out.rules.iter().all(|r| r.domain == domain));
    debug_assert!(out.last_ids.iter().all(|(c, _)| !c.is_empty()));
    out
}

/// The session id in a request `body` by the first of `rules` that finds a string (only the
/// first [`DETECT_BODY_MAX`] bytes are read). The caller has checked the rules apply.
pub fn detect(rules: &[Rule], body: &[u8]) -> Option<String> {
    let body = &body[..body.len().min(DETECT_BODY_MAX)];
    if body.is_empty() {
        return None;
    }
    rules.iter().find_map(|r| detect_one(r, body))
}

fn detect_one(rule: &Rule, body: &[u8]) -> Option<String> {
    if !rule.sid_ptr.starts_with('/') {
        return None;
    }
    let param;
    let text: &[u8] = match &rule.json_param {
        None => body,
        Some(name) => {
            param = form_value(body, name.as_bytes())?;
            &param
        }
    };
    let v: serde_json::Value = serde_json::from_slice(text).ok()?;
    if !(v.is_object() || v.is_array()) {
        return None;
    }
    let sid = v.pointer(&rule.sid_ptr)?.as_str()?;
    sid_is_usable(sid).then(|| sid.to_owned())
}

/// The first value of form parameter `name` in an `application/x-www-form-urlencoded` body,
/// percent-decoded (names too). As Qt's `QUrlQuery`, which Pushpin uses: `+` is not a space,
/// a pair without `=` has an empty value, and a bad `%` escape is kept as it is.
pub fn form_value(body: &[u8], name: &[u8]) -> Option<Vec<u8>> {
    body.split(|&b| b == b'&').find_map(|pair| {
        let (k, v) = match pair.iter().position(|&b| b == b'=') {
            Some(i) => (&pair[..i], &pair[i + 1..]),
            None => (pair, &b""[..]),
        };
        (percent_decode(k) == name).then(|| percent_decode(v))
    })
}

fn percent_decode(s: &[u8]) -> Vec<u8> {
    let hex = |b: u8| match b {
        b'0'..=b'9' => Some(b - b'0'),
        b'a'..=b'f' => Some(b - b'a' + 10),
        b'A'..=b'F' => Some(b - b'A' + 10),
        _ => None,
    };
    let mut out = Vec::with_capacity(s.len());
    let mut i = 0;
    while i < s.len() {
        if s[i] == b'%' {
            if let (Some(h), Some(l)) = (
                s.get(i + 1).copied().and_then(hex),
                s.get(i + 2).copied().and_then(hex),
            ) {
                out.push(h << 4 | l);
                i += 3;
                continue;
            }
        }
        out.push(s[i]);
        i += 1;
    }
    debug_assert!(out.len() <= s.len());
    out
}

/// The header lines (each ending in CRLF) that tell the backend a request's session:
/// `Grip-Session-Id`, then one `Grip-Last` per channel in `last_ids`, its name without the
/// route's `prefix`. An entry that could break the header (a control character, `,` or `;`)
/// is left out.
pub fn request_lines(
    sid: &str,
    last_ids: &[(String, String)],
    prefix: Option<&str>,
) -> Vec<String> {
    debug_assert!(sid_is_usable(sid));
    let mut out = Vec::with_capacity(1 + last_ids.len());
    out.push(format!("Grip-Session-Id: {sid}\r\n"));
    let safe = |s: &str| !s.is_empty() && crate::publish::parse::is_id_safe(s);
    for (ch, id) in last_ids {
        let ch = match prefix {
            Some(p) if !p.is_empty() => ch.strip_prefix(p).unwrap_or(ch),
            _ => ch,
        };
        if safe(ch) && safe(id) {
            out.push(format!("Grip-Last: {ch}; last-id={id}\r\n"));
        }
    }
    debug_assert!(out
        .iter()
        .all(|l| l.ends_with("\r\n") && !l[..l.len() - 2].contains('\n')));
    out
}

/// `Grip-Last` entries from a backend, with the route's `prefix` put on (as published channel
/// names have it).
pub fn prefixed(last_ids: Vec<(String, String)>, prefix: Option<&str>) -> Vec<(String, String)> {
    match prefix {
        Some(p) if !p.is_empty() => last_ids
            .into_iter()
            .map(|(ch, id)| (format!("{p}{ch}"), id))
            .collect(),
        _ => last_ids,
    }
}

#[cfg(test)]
mod tests;
