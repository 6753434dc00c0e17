//! GRIP instruction parsing: turns a backend response that carries `Grip-*` headers and/or an
//! `application/grip-instruct` JSON body into an [`Instruction`] (hold mode, channels, timeouts,
//! keep-alive, meta, links and the response the client eventually gets), and merges published
//! `http-response` items into a held response.
//!
//! Pure: no I/O, no clock. Behaviour, defaults, floors and error messages follow Pushpin's
//! `Instruct::fromResponse` (see `/work/shared/grip-spec.md` §1–§2, §11–§12); the few places
//! where tack is deliberately stricter are marked "tack:" in the item docs.

pub mod filter;
mod json;
mod keepalive;
mod link;
pub(crate) mod params;
mod status;

use std::collections::{HashMap, HashSet};

pub use keepalive::{
    decode_base64_lenient, parse_keep_alive_header, unescape_cstring, DEFAULT_KEEP_ALIVE_TIMEOUT_S,
    MIN_KEEP_ALIVE_TIMEOUT_S,
};
pub use link::{parse_links, LinkBudget, Links, DEFAULT_NEXT_LINK_TIMEOUT_S};
pub use status::reason_phrase;

use params::{find_param, parse_int, parse_params, split_elements, trim};

/// Hold timeout when neither `Grip-Timeout` nor `hold.timeout` is given, in seconds.
pub const DEFAULT_RESPONSE_TIMEOUT_S: u32 = 55;
/// Smallest hold timeout, in seconds: lower values are raised to it (`MINIMUM_RESPONSE_TIMEOUT`).
pub const MIN_RESPONSE_TIMEOUT_S: u32 = 5;
/// Most filters one channel subscription may carry (`MESSAGEFILTERSTACK_SIZE_MAX`).
pub const FILTERS_PER_CHANNEL_MAX: usize = 5;

/// The media type that marks a JSON instruction body.
pub const INSTRUCT_CONTENT_TYPE: &str = "application/grip-instruct";

/// The `Grip-Feature` value tack advertises on forwarded requests: Pushpin 1.41's list (1.36's
/// plus `link:gone`), each entry implemented (a unit test ties the filters to
/// [`filter::Filter::ALL`]).
pub const GRIP_FEATURES: &str = "status, session, link:next, link:gone, filter:skip-self, \
filter:skip-users, filter:require-sub, filter:build-id, filter:var-subst";

/// Response headers never copied into a held response: hop-by-hop headers and `Content-Length`
/// (the framing of the eventual response is the caller's).
const HOP_BY_HOP: [&str; 8] = [
    "Connection",
    "Keep-Alive",
    "Transfer-Encoding",
    "Content-Length",
    "Proxy-Connection",
    "TE",
    "Trailer",
    "Upgrade",
];

/// One response header as received from the backend.
pub use crate::http1::Header;

/// How the client connection is held.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HoldMode {
    /// Long-poll: one response, on publish or on timeout.
    Response,
    /// HTTP streaming / SSE: the response head and initial body go out at once, published
    /// content is appended.
    Stream,
}

/// One channel subscription of a hold.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChannelSub {
    /// The channel name, with the route prefix applied when it comes from [`parse_instruction`]
    /// (never empty).
    pub name: String,
    /// `prev-id`: asks for reliable delivery. An empty prev-id counts as none.
    pub prev_id: Option<String>,
    /// Filter names in order, at most [`FILTERS_PER_CHANNEL_MAX`]. Not checked against the
    /// known filters here.
    pub filters: Vec<String>,
}

/// When keep-alive data is sent on a stream hold.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeepAliveMode {
    /// After `timeout_s` without any write (the timer re-arms on every write).
    Idle,
    /// Every `timeout_s`, whatever else is written.
    Interval,
}

/// Keep-alive of a stream hold.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeepAlive {
    /// The bytes to send (never empty).
    pub data: Vec<u8>,
    /// Period in seconds, at least [`MIN_KEEP_ALIVE_TIMEOUT_S`]. (Pushpin subtracts 0–999 ms of
    /// jitter from each period; that is the caller's job.)
    pub timeout_s: u32,
    pub mode: KeepAliveMode,
}

/// A `Grip-Link` target.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Link {
    /// As written by the backend; may be relative to the request URL.
    pub uri: String,
    /// `rel=next`: the refetch timeout of a stream hold, always `Some` (default
    /// [`DEFAULT_NEXT_LINK_TIMEOUT_S`]). `rel=gone`: `None`.
    pub timeout_s: Option<u32>,
}

/// The response the client gets on timeout (response hold) or at once (stream hold: head and
/// initial body).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HeldResponse {
    /// 0–999.
    pub code: u16,
    /// Never empty: the standard phrase ([`reason_phrase`]) when none was given.
    pub reason: String,
    /// `Grip-*` removed, the `Grip-Expose-Headers` filter applied, hop-by-hop headers and
    /// `Content-Length` removed.
    pub headers: Vec<(String, Vec<u8>)>,
    pub body: Vec<u8>,
}

/// A parsed GRIP instruction.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Instruction {
    /// `None`: no hold (e.g. only a `Grip-Link: rel=next` chain, or a JSON instruct without
    /// `hold`).
    pub hold: Option<HoldMode>,
    /// Unique names (a repeated channel keeps its first position and its last parameters), at
    /// most `channel_max`.
    pub channels: Vec<ChannelSub>,
    /// Response-hold timeout in seconds: default 55, at least 5.
    pub timeout_s: u32,
    pub keep_alive: Option<KeepAlive>,
    /// Subscription meta from `Grip-Set-Meta` and `hold.meta` (unique keys, last value wins,
    /// first-seen order).
    pub meta: Vec<(String, String)>,
    pub next: Option<Link>,
    pub gone: Option<Link>,
    pub response: HeldResponse,
    /// Distinct channels beyond `channel_max` that were dropped (Pushpin drops them silently).
    pub channels_dropped: usize,
    /// The hold's filter state, when a channel names a known filter (boxed: most holds have
    /// none). The response body of a stream or no-hold answer has been through `build-id`.
    pub filters: Option<Box<filter::HoldFilters>>,
}

/// Why a backend response is not a valid GRIP instruction. The message follows Pushpin's.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GripError(pub String);

impl GripError {
    fn new(msg: &str) -> Self {
        GripError(msg.to_owned())
    }
}

impl std::fmt::Display for GripError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for GripError {}

/// A published `http-response` item, as far as the held response merge needs it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PublishedResponse {
    pub code: Option<u16>,
    pub reason: Option<String>,
    pub headers: Vec<(String, Vec<u8>)>,
    pub body: Vec<u8>,
}

fn starts_with_ignore_case(s: &str, prefix: &str) -> bool {
    s.len() >= prefix.len() && s.as_bytes()[..prefix.len()].eq_ignore_ascii_case(prefix.as_bytes())
}

fn is_grip_header(name: &str) -> bool {
    starts_with_ignore_case(name, "Grip-")
}

fn is_hop_by_hop(name: &str) -> bool {
    HOP_BY_HOP.iter().any(|h| h.eq_ignore_ascii_case(name))
}

/// An RFC 9110 token (header name).
pub(crate) fn is_valid_header_name(name: &str) -> bool {
    !name.is_empty()
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b))
}

/// A header value that can be written on one line: no CR, LF or NUL.
pub(crate) fn is_valid_header_value(value: &[u8]) -> bool {
    !value.iter().any(|&b| matches!(b, b'\r' | b'\n' | 0))
}

/// A reason phrase that can be written in a status line: tab, space, visible ASCII and
/// non-ASCII bytes only.
pub(crate) fn is_valid_reason(reason: &[u8]) -> bool {
    reason
        .iter()
        .all(|&b| b == b'\t' || b == b' ' || b.is_ascii_graphic() || b >= 0x80)
}

/// The first header named `name` (ASCII case-insensitive).
fn first_header<'a>(headers: &'a [Header], name: &str) -> Option<&'a [u8]> {
    headers
        .iter()
        .find(|h| h.name.eq_ignore_ascii_case(name))
        .map(|h| h.value.as_slice())
}

/// Every header named `name`, in order.
fn all_headers<'a>(headers: &'a [Header], name: &'a str) -> impl Iterator<Item = &'a [u8]> + 'a {
    headers
        .iter()
        .filter(move |h| h.name.eq_ignore_ascii_case(name))
        .map(|h| h.value.as_slice())
}

/// True when the first `Content-Type` header's media type is `application/grip-instruct`
/// (ASCII case-insensitive, parameters ignored). tack: Pushpin compares case-sensitively.
fn is_instruct_content_type(headers: &[Header]) -> bool {
    first_header(headers, "Content-Type")
        .is_some_and(|v| crate::http1::media_type_is(v, INSTRUCT_CONTENT_TYPE))
}

/// Whether the body of a backend answer whose instruction (parsed from its headers alone) is
/// `instruction` may stream through to the client unparsed, in any size (Pushpin's fallback
/// over its 100 kB buffer): a stream hold, or a `Grip-Link` chain without a hold, whose body
/// is not a JSON instruct and needs no `build-id`.
pub fn body_streams(instruction: &Instruction, headers: &[Header]) -> bool {
    let streams = instruction.hold == Some(HoldMode::Stream)
        || (instruction.hold.is_none() && instruction.next.is_some());
    streams
        && !is_instruct_content_type(headers)
        && !instruction
            .filters
            .as_ref()
            .is_some_and(|f| f.has_build_id())
}

/// True when a backend response is a GRIP instruction: any `Grip-*` header, or Content-Type
/// `application/grip-instruct` (media type compared case-insensitively, parameters ignored).
pub fn is_grip(headers: &[Header]) -> bool {
    headers.iter().any(|h| is_grip_header(&h.name)) || is_instruct_content_type(headers)
}

/// Checks the filter count of a parsed channel.
pub(crate) fn check_channel(c: &ChannelSub) -> Result<(), GripError> {
    debug_assert!(!c.name.is_empty());
    if c.filters.len() > FILTERS_PER_CHANNEL_MAX {
        return Err(GripError(format!(
            "too many filters for channel '{}'",
            c.name
        )));
    }
    Ok(())
}

fn parse_channel_value(value: &[u8], out: &mut Vec<ChannelSub>) -> Result<(), GripError> {
    let failed = || GripError::new("failed to parse Grip-Channel");
    for elem in split_elements(value, false) {
        let params = parse_params(elem, false, false).map_err(|_| failed())?;
        let name = params
            .first()
            .map(|p| p.name.as_slice())
            .unwrap_or_default();
        if name.is_empty() {
            return Err(failed());
        }
        let prev_id = find_param(&params, "prev-id", true)
            .and_then(|p| p.value.as_deref())
            .filter(|v| !v.is_empty())
            .map(|v| String::from_utf8_lossy(v).into_owned());
        // As in Pushpin, `filter` is matched case-sensitively (`prev-id` is not).
        let filters = params[1..]
            .iter()
            .filter(|p| p.name == b"filter")
            .map(|p| String::from_utf8_lossy(p.value.as_deref().unwrap_or_default()).into_owned())
            .collect();
        let c = ChannelSub {
            name: String::from_utf8_lossy(name).into_owned(),
            prev_id,
            filters,
        };
        check_channel(&c)?;
        out.push(c);
    }
    Ok(())
}

/// Parses the value list of a `Grip-Channel`-style header: comma separated elements
/// `name[; prev-id=<id>][; filter=<f>]...`, values optionally quoted.
///
/// Errors: an empty name ("failed to parse Grip-Channel"; tack: Pushpin accepts `a,,b` as an
/// empty channel), a malformed quoted value (same message; tack: Pushpin skips the element),
/// more than [`FILTERS_PER_CHANNEL_MAX`] filters ("too many filters for channel 'x'").
pub fn parse_channel_header(value: &str) -> Result<Vec<ChannelSub>, GripError> {
    let mut out = Vec::new();
    parse_channel_value(value.as_bytes(), &mut out)?;
    Ok(out)
}

/// Parses a `Grip-Timeout` (or keep-alive/link timeout) value: a non-negative `i32`.
fn parse_seconds(value: &[u8], unparsable: &str, negative: &str) -> Result<u32, GripError> {
    let t = parse_int(value).ok_or_else(|| GripError::new(unparsable))?;
    u32::try_from(t).map_err(|_| GripError::new(negative))
}

/// Parses `Grip-Status: <code>[ <reason>]`. Returns the code and the (possibly empty) reason.
fn parse_status(value: &[u8]) -> Result<(u16, Vec<u8>), GripError> {
    let invalid = || GripError::new("Grip-Status contains invalid status code");
    let (code, reason) = match value.iter().position(|&b| b == b' ') {
        Some(at) => (&value[..at], &value[at + 1..]),
        None => (value, &b""[..]),
    };
    let code = parse_int(code)
        .and_then(|c| u16::try_from(c).ok())
        .filter(|c| *c <= 999)
        .ok_or_else(invalid)?;
    if !is_valid_reason(reason) {
        return Err(GripError::new("Grip-Status contains invalid reason"));
    }
    Ok((code, reason.to_vec()))
}

/// Adds `Grip-Set-Meta` pairs (`k=v, k2=v2`; only each element's first parameter counts).
fn parse_set_meta(value: &[u8], meta: &mut Vec<(String, String)>) -> Result<(), GripError> {
    for elem in split_elements(value, false) {
        let params = parse_params(elem, true, false)
            .map_err(|_| GripError::new("failed to parse Grip-Set-Meta"))?;
        let Some(first) = params.first() else {
            return Err(GripError::new("Grip-Set-Meta cannot be empty"));
        };
        meta.push((
            String::from_utf8_lossy(&first.name).into_owned(),
            String::from_utf8_lossy(first.value.as_deref().unwrap_or_default()).into_owned(),
        ));
    }
    Ok(())
}

/// Collapses repeated keys: first-seen position, last value.
fn dedup_meta(meta: Vec<(String, String)>) -> Vec<(String, String)> {
    let mut index: HashMap<String, usize> = HashMap::new();
    let mut out: Vec<(String, String)> = Vec::with_capacity(meta.len());
    for (k, v) in meta {
        match index.get(&k) {
            Some(&i) => out[i].1 = v,
            None => {
                index.insert(k.clone(), out.len());
                out.push((k, v));
            }
        }
    }
    debug_assert_eq!(index.len(), out.len());
    out
}

/// Applies the route prefix, collapses repeated names (first position, last parameters) and
/// keeps at most `channel_max` channels. Returns the channels and how many distinct names were
/// dropped.
fn finish_channels(
    channels: Vec<ChannelSub>,
    prefix: Option<&str>,
    channel_max: usize,
) -> (Vec<ChannelSub>, usize) {
    let prefix = prefix.unwrap_or_default();
    let mut index: HashMap<String, usize> = HashMap::new();
    let mut out: Vec<ChannelSub> = Vec::with_capacity(channels.len().min(channel_max));
    let mut dropped: HashSet<String> = HashSet::new();
    for mut c in channels {
        c.name.insert_str(0, prefix);
        if let Some(&i) = index.get(&c.name) {
            out[i] = c;
        } else if out.len() < channel_max {
            index.insert(c.name.clone(), out.len());
            out.push(c);
        } else {
            dropped.insert(c.name);
        }
    }
    debug_assert!(out.len() <= channel_max && index.len() == out.len());
    debug_assert!(dropped.iter().all(|d| !index.contains_key(d)));
    (out, dropped.len())
}

/// The backend's own headers as the held response keeps them.
fn held_headers(headers: &[Header], expose: &[&[u8]]) -> Vec<(String, Vec<u8>)> {
    headers
        .iter()
        .filter(|h| !is_grip_header(&h.name) && !is_hop_by_hop(&h.name))
        .filter(|h| {
            expose.is_empty()
                || expose
                    .iter()
                    .any(|e| e.eq_ignore_ascii_case(h.name.as_bytes()))
        })
        .map(|h| (h.name.clone(), h.value.clone()))
        .collect()
}

/// Parses a backend response (status line, headers, full body as buffered) into an
/// instruction. `prefix`: the route's channel prefix. `channel_max`:
/// `connection_subscription_max`.
///
/// Header instructions are read first (`Grip-Hold`, `Grip-Channel`, `Grip-Timeout`,
/// `Grip-Expose-Headers`, `Grip-Keep-Alive`, `Grip-Set-Meta`, `Grip-Status`, `Grip-Link`; for
/// single-valued ones the first header counts). Then, when the Content-Type is
/// `application/grip-instruct`, the JSON body: its `hold` replaces the header hold mode, adds
/// channels and meta, and overrides the timeout and keep-alive; the real response's headers and
/// body are discarded in favour of its `response` object.
pub fn parse_instruction(
    code: u16,
    reason: &str,
    headers: &[Header],
    body: &[u8],
    prefix: Option<&str>,
    channel_max: usize,
) -> Result<Instruction, GripError> {
    let mut hold = match first_header(headers, "Grip-Hold").map(trim) {
        None => None,
        Some(b"response") => Some(HoldMode::Response),
        Some(b"stream") => Some(HoldMode::Stream),
        Some(_) => {
            return Err(GripError::new(
                "Grip-Hold must be set to either 'response' or 'stream'",
            ))
        }
    };

    let mut channels = Vec::new();
    for value in all_headers(headers, "Grip-Channel") {
        parse_channel_value(value, &mut channels)?;
    }

    let mut timeout_s = match first_header(headers, "Grip-Timeout") {
        None => None,
        Some(v) => Some(parse_seconds(
            v,
            "failed to parse Grip-Timeout",
            "Grip-Timeout has invalid value",
        )?),
    };

    let expose: Vec<&[u8]> = all_headers(headers, "Grip-Expose-Headers")
        .flat_map(|v| split_elements(v, false))
        .collect();

    let header_keep_alive = match first_header(headers, "Grip-Keep-Alive") {
        None => None,
        Some(v) => parse_keep_alive_header(v)?,
    };
    let keep_alive_mode = header_keep_alive
        .as_ref()
        .map_or(KeepAliveMode::Idle, |k| k.mode);
    let mut keep_alive = header_keep_alive.map(|k| (k.data, k.timeout_s));

    let mut meta = Vec::new();
    for value in all_headers(headers, "Grip-Set-Meta") {
        parse_set_meta(value, &mut meta)?;
    }

    let mut res_code = code;
    let mut res_reason: Vec<u8> = reason.as_bytes().to_vec();
    if let Some(v) = first_header(headers, "Grip-Status").filter(|v| !v.is_empty()) {
        (res_code, res_reason) = parse_status(v)?;
    }

    let links = parse_links(all_headers(headers, "Grip-Link"))?;

    let mut res_headers = held_headers(headers, &expose);
    let mut res_body = body.to_vec();

    if is_instruct_content_type(headers) {
        if code != 200 {
            return Err(GripError::new(
                "response code for application/grip-instruct content must be 200",
            ));
        }
        let doc = json::parse_json_instruct(body)?;
        if let Some(h) = doc.hold {
            hold = Some(h.mode);
            channels.extend(h.channels);
            if h.timeout_s.is_some() {
                timeout_s = h.timeout_s;
            }
            if let Some(ka) = h.keep_alive {
                let data = ka
                    .data
                    .or_else(|| keep_alive.take().map(|(d, _)| d))
                    .unwrap_or_default();
                keep_alive = Some((data, ka.timeout_s));
            }
            meta.extend(h.meta);
        }
        res_headers.clear();
        res_body.clear();
        if let Some(r) = doc.response {
            if let Some(c) = r.code {
                res_code = c;
                res_reason.clear();
            }
            if let Some(reason) = r.reason {
                res_reason = reason.into_bytes();
            }
            res_headers = r
                .headers
                .into_iter()
                .filter(|(n, _)| !is_grip_header(n) && !is_hop_by_hop(n))
                .collect();
            res_body = r.body;
        }
    }

    // tack: Pushpin accepts any code 0–999 and writes it as it is; the client must get valid
    // HTTP (a 1xx or out-of-range status, or a body after 204/304, desynchronises it).
    if !crate::http1::is_final_status(res_code) {
        return Err(GripError(format!(
            "response code {res_code} is not a final status (200-599)"
        )));
    }
    let streams = hold == Some(HoldMode::Stream) || (hold.is_none() && links.next.is_some());
    if streams && !crate::http1::status_has_body(res_code) {
        return Err(GripError(format!(
            "response code {res_code} carries no body, so it cannot start a stream"
        )));
    }
    let reason = if res_reason.is_empty() {
        reason_phrase(res_code).to_owned()
    } else {
        String::from_utf8_lossy(&res_reason).into_owned()
    };
    let (channels, channels_dropped) = finish_channels(channels, prefix, channel_max);
    let meta = dedup_meta(meta);
    let filters = filter::HoldFilters::needed(&channels).then(|| {
        Box::new(filter::HoldFilters::new(
            &channels,
            prefix.unwrap_or_default(),
            &meta,
        ))
    });
    // Initial bodies go through `build-id` (Pushpin: `%%` becomes `%`); a long-poll's timeout
    // body does not.
    if let (Some(f), false) = (&filters, hold == Some(HoldMode::Response)) {
        if let Some(body) = f.initial_body(&res_body).map_err(GripError)? {
            res_body = body;
        }
    }
    let instruction = Instruction {
        hold,
        channels,
        timeout_s: timeout_s
            .unwrap_or(DEFAULT_RESPONSE_TIMEOUT_S)
            .max(MIN_RESPONSE_TIMEOUT_S),
        keep_alive: keep_alive
            .and_then(|(data, t)| keepalive::keep_alive(data, t, keep_alive_mode)),
        meta,
        next: links.next,
        gone: links.gone,
        response: HeldResponse {
            code: res_code,
            reason,
            headers: res_headers,
            body: res_body,
        },
        channels_dropped,
        filters,
    };
    debug_assert!(instruction.timeout_s >= MIN_RESPONSE_TIMEOUT_S);
    debug_assert!(!instruction.response.reason.is_empty());
    debug_assert!(instruction.channels.iter().all(|c| !c.name.is_empty()));
    Ok(instruction)
}

/// A published `http-response` `body-patch` applied to the held response's original body
/// (RFC 6902, by the `json-patch` crate, the maintained implementation serde_json users
/// share). As in Pushpin: the body must be a JSON object or array; the result is written
/// compact with object keys sorted (Pushpin's Qt JSON writer sorts them too), and a trailing
/// newline of the original is kept. The error is the text tack logs; the client gets 502.
pub fn patch_body(original: &[u8], patch: &serde_json::Value) -> Result<Vec<u8>, String> {
    let mut doc: serde_json::Value = serde_json::from_slice(original)
        .map_err(|e| format!("held response body is not JSON: {e}"))?;
    if !(doc.is_object() || doc.is_array()) {
        return Err("held response body is not a JSON object or array".into());
    }
    let ops: json_patch::Patch = serde_json::from_value(patch.clone())
        .map_err(|e| format!("body-patch is not a JSON Patch: {e}"))?;
    json_patch::patch(&mut doc, &ops).map_err(|e| format!("body-patch failed: {e}"))?;
    let mut out = serde_json::to_vec(&sort_keys(doc)).map_err(|e| e.to_string())?;
    if original.ends_with(b"\n") {
        out.push(b'\n');
    }
    Ok(out)
}

/// The value with every object's keys in sorted order (whatever order the map type keeps).
fn sort_keys(v: serde_json::Value) -> serde_json::Value {
    match v {
        serde_json::Value::Object(m) => {
            let mut pairs: Vec<(String, serde_json::Value)> = m.into_iter().collect();
            pairs.sort_by(|a, b| a.0.cmp(&b.0));
            serde_json::Value::Object(pairs.into_iter().map(|(k, v)| (k, sort_keys(v))).collect())
        }
        serde_json::Value::Array(a) => {
            serde_json::Value::Array(a.into_iter().map(sort_keys).collect())
        }
        other => other,
    }
}

/// Merges a published `http-response` into the held response, per Pushpin: the held headers
/// are the base, published headers replace same-named ones (case-insensitive), a published
/// `Grip-Expose-Headers` removes the listed names from the result, other published `Grip-*`
/// headers are dropped. The code defaults to 200 and the reason to the standard phrase for the
/// code; the body is the published one.
///
/// `Content-Length` and hop-by-hop headers are removed (the caller frames the response), and so
/// are published headers that could not be written safely (bad name, CR/LF/NUL in the value).
pub fn merge_published_response(
    held: &HeldResponse,
    published: &PublishedResponse,
) -> HeldResponse {
    let expose: Vec<&[u8]> = published
        .headers
        .iter()
        .filter(|(n, _)| n.eq_ignore_ascii_case("Grip-Expose-Headers"))
        .flat_map(|(_, v)| split_elements(v, false))
        .collect();
    let pub_headers: Vec<&(String, Vec<u8>)> = published
        .headers
        .iter()
        .filter(|(n, v)| !is_grip_header(n) && is_valid_header_name(n) && is_valid_header_value(v))
        .collect();

    let mut headers: Vec<(String, Vec<u8>)> = held
        .headers
        .iter()
        .filter(|(n, _)| !pub_headers.iter().any(|(p, _)| p.eq_ignore_ascii_case(n)))
        .cloned()
        .collect();
    headers.extend(pub_headers.into_iter().cloned());
    headers.retain(|(n, _)| {
        !is_hop_by_hop(n) && !expose.iter().any(|e| e.eq_ignore_ascii_case(n.as_bytes()))
    });

    let code = published.code.unwrap_or(200);
    let reason = match &published.reason {
        Some(r) if !r.is_empty() && is_valid_reason(r.as_bytes()) => r.clone(),
        _ => reason_phrase(code).to_owned(),
    };
    let merged = HeldResponse {
        code,
        reason,
        headers,
        body: published.body.clone(),
    };
    debug_assert!(!merged.reason.is_empty());
    debug_assert!(merged
        .headers
        .iter()
        .all(|(n, _)| !is_grip_header(n) && !is_hop_by_hop(n)));
    merged
}

#[cfg(test)]
mod tests;
