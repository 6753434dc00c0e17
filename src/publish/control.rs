//! The HTTP control API (`push_in_http_addr`, default 127.0.0.1:5561), decided purely: the I/O
//! side hands over a parsed request and writes back the [`ControlResponse`].
//!
//! | Request | Response |
//! |---|---|
//! | head over `max_headers_bytes` | `400` `Request header too large.` |
//! | chunked, or no `Content-Length` on a method other than GET/HEAD/DELETE | `411` `Request requires Content-Length.` |
//! | `Content-Length` (or body) over `max_body_bytes` | **`413`** `Request body too large.` |
//! | more body bytes than `Content-Length` | `400` `Request body exceeded Content-Length.` |
//! | `Accept` that allows neither text nor JSON | `406` `Not Acceptable. Supported formats are text/plain and application/json.` |
//! | any method on `/` | `200` `Pushpin API` |
//! | `POST /publish` | `200` `Published`, or `{"message":"Published"}`; `400` with the parse error |
//! | `POST /recover` | `200` `Updated`, or `{"message":"Updated"}` |
//! | `POST /connections/publish`, `/connections/close`, `/conncheck`, `/refresh` | see [`super::connections`]; `400` with the reason |
//! | other method on any of these paths | `405`, `Allow: POST`, `Method not allowed: GET.` |
//! | anything else | `404` `Not Found` |
//!
//! Every body is the text above plus `"\n"` (Pushpin's convention, JSON bodies included).
//! Error bodies are always text/plain whatever `Accept` says, as in Pushpin. The checks run in
//! the order of the table, so a request for an unknown path with a bad `Accept` gets 406.
//!
//! Deliberate differences from Pushpin 1.36:
//! - a body over the limit gets `413 Payload Too Large` (Pushpin `main` answers `400` with the
//!   same text, and 1.36 did not enforce the limit at all);
//! - `Transfer-Encoding: chunked` is refused with 411 even when `Content-Length` is also present
//!   (Pushpin then trusts `Content-Length`; tack never reads a body two ways);
//! - a query string is ignored when matching the path (`/publish?x=1` is `/publish`; Pushpin
//!   gives 404);
//! - `Accept` negotiation honours `q` (highest wins, ties go to the earlier entry, `q=0`
//!   excludes), matches case-insensitively, and treats an empty `Accept` as absent. Pushpin
//!   ignores `q`; its current code lets the last recognised entry win (older code took the
//!   first), so only lists mixing text and JSON without `q` can differ.
//!
//! The root text stays `Pushpin API` so that health checks written for Pushpin keep passing.

use super::connections::{self, ConnRequest};
use super::item::PublishItem;
use super::parse::parse_publish;

/// Default for `push_in_http_max_headers_size`.
pub const MAX_HEADERS_BYTES_DEFAULT: usize = 10_000;
/// Default for `push_in_http_max_body_size`.
pub const MAX_BODY_BYTES_DEFAULT: usize = 1_000_000;

/// Body of `GET /` (Pushpin 1.26+).
pub const TEXT_ROOT: &str = "Pushpin API\n";
pub const TEXT_PUBLISHED: &str = "Published\n";
pub const JSON_PUBLISHED: &str = "{\"message\":\"Published\"}\n";
pub const TEXT_UPDATED: &str = "Updated\n";
pub const JSON_UPDATED: &str = "{\"message\":\"Updated\"}\n";
pub const TEXT_NOT_FOUND: &str = "Not Found\n";
pub const TEXT_NOT_ACCEPTABLE: &str =
    "Not Acceptable. Supported formats are text/plain and application/json.\n";
pub const TEXT_LENGTH_REQUIRED: &str = "Request requires Content-Length.\n";
pub const TEXT_HEADER_TOO_LARGE: &str = "Request header too large.\n";
pub const TEXT_BODY_TOO_LARGE: &str = "Request body too large.\n";
pub const TEXT_BODY_EXCEEDED: &str = "Request body exceeded Content-Length.\n";
/// For the I/O side: an unparseable `Content-Length`.
pub const TEXT_BAD_CONTENT_LENGTH: &str = "Bad Content-Length.\n";
/// For the I/O side: a request head that does not parse.
pub const TEXT_BAD_HEADER: &str = "Failed to parse request header.\n";

const CONTENT_TYPE_TEXT: &str = "text/plain";
const CONTENT_TYPE_JSON: &str = "application/json";
/// Longest method name echoed in a 405 body; real methods are far shorter.
const METHOD_ECHO_MAX: usize = 32;

/// A parsed control request, as the I/O side sees it.
#[derive(Debug, Clone, Copy)]
pub struct ControlRequest<'a> {
    pub method: &'a str,
    /// Request target; may include `?query`.
    pub path: &'a str,
    /// The `Accept` header; several `Accept` headers joined with `", "`.
    pub accept: Option<&'a str>,
    /// Parsed `Content-Length` (the I/O side answers [`ControlResponse::bad_content_length`]
    /// when it does not parse).
    pub content_length: Option<u64>,
    /// Whether `Transfer-Encoding` was present (tack reads no chunked bodies).
    pub chunked: bool,
    pub body: &'a [u8],
    /// Size of the request head in bytes, request line to the blank line included.
    pub head_bytes: usize,
}

/// Size limits of the control server.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ControlLimits {
    /// `push_in_http_max_headers_size`.
    pub max_headers_bytes: usize,
    /// `push_in_http_max_body_size`.
    pub max_body_bytes: usize,
}

impl Default for ControlLimits {
    fn default() -> Self {
        ControlLimits {
            max_headers_bytes: MAX_HEADERS_BYTES_DEFAULT,
            max_body_bytes: MAX_BODY_BYTES_DEFAULT,
        }
    }
}

/// What the server must do after writing the response.
#[derive(Debug, Clone, PartialEq)]
pub enum ControlOutcome {
    /// Hand these items, in order, to the publish pipeline.
    Publish(Vec<PublishItem>),
    /// Run recovery (grip-spec §6.4).
    Recover,
    /// Run a single-connection operation on every shard, then answer with
    /// [`connections::answer`] (the response carried with this outcome is a placeholder).
    Connections(ConnRequest),
    None,
}

/// The response to write. The I/O side adds `Connection: close` and `Content-Length` (or uses
/// [`ControlResponse::to_http_bytes`], which does).
#[derive(Debug, Clone, PartialEq)]
pub struct ControlResponse {
    pub status: u16,
    pub reason: &'static str,
    pub content_type: &'static str,
    /// Extra headers, e.g. `Allow: POST`.
    pub headers: Vec<(&'static str, String)>,
    pub body: String,
    pub outcome: ControlOutcome,
}

impl ControlResponse {
    fn text(status: u16, reason: &'static str, body: String) -> Self {
        debug_assert!(body.ends_with('\n'));
        debug_assert!((100..=999).contains(&status));
        ControlResponse {
            status,
            reason,
            content_type: CONTENT_TYPE_TEXT,
            headers: Vec::new(),
            body,
            outcome: ControlOutcome::None,
        }
    }

    fn bad_request(body: String) -> Self {
        Self::text(400, "Bad Request", body)
    }

    /// `400` for a `Content-Length` that does not parse.
    pub fn bad_content_length() -> Self {
        Self::bad_request(TEXT_BAD_CONTENT_LENGTH.to_string())
    }

    /// `400` for a request head that does not parse.
    pub fn bad_header() -> Self {
        Self::bad_request(TEXT_BAD_HEADER.to_string())
    }

    /// `400` for a head over `max_headers_bytes`.
    pub fn header_too_large() -> Self {
        Self::bad_request(TEXT_HEADER_TOO_LARGE.to_string())
    }

    fn body_too_large() -> Self {
        Self::text(413, "Payload Too Large", TEXT_BODY_TOO_LARGE.to_string())
    }

    pub(super) fn success(
        format: ResponseFormat,
        text: &str,
        json: &str,
        outcome: ControlOutcome,
    ) -> Self {
        let (content_type, body) = match format {
            ResponseFormat::Text => (CONTENT_TYPE_TEXT, text),
            ResponseFormat::Json => (CONTENT_TYPE_JSON, json),
        };
        ControlResponse {
            status: 200,
            reason: "OK",
            content_type,
            headers: Vec::new(),
            body: body.to_string(),
            outcome,
        }
    }

    /// Render the whole response: status line, extra headers, `Content-Type`,
    /// `Connection: close`, `Content-Length`, blank line, and the body unless `include_body` is
    /// false (HEAD). `http10` selects the `HTTP/1.0` status line.
    pub fn to_http_bytes(&self, http10: bool, include_body: bool) -> Vec<u8> {
        let version = if http10 { "HTTP/1.0" } else { "HTTP/1.1" };
        let mut head = format!("{version} {} {}\r\n", self.status, self.reason);
        for (name, value) in &self.headers {
            head.push_str(name);
            head.push_str(": ");
            head.push_str(value);
            head.push_str("\r\n");
        }
        head.push_str("Content-Type: ");
        head.push_str(self.content_type);
        head.push_str("\r\nConnection: close\r\nContent-Length: ");
        head.push_str(&self.body.len().to_string());
        head.push_str("\r\n\r\n");
        let mut out = head.into_bytes();
        if include_body {
            out.extend_from_slice(self.body.as_bytes());
        }
        debug_assert!(out.starts_with(b"HTTP/1."));
        out
    }
}

/// The representation the client asked for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ResponseFormat {
    Text,
    Json,
}

/// Pick the success representation from `Accept`; `None` means 406.
///
/// `text/plain`, `text/*`, `*/*` and `*` mean text; `application/json` and `application/*`
/// mean JSON; other ranges are skipped. The recognised entry with the highest `q` wins, ties
/// going to the earlier one; `q=0` entries are skipped. An absent or blank header means text.
pub fn negotiate(accept: Option<&str>) -> Option<ResponseFormat> {
    let Some(accept) = accept.filter(|a| !a.trim().is_empty()) else {
        return Some(ResponseFormat::Text);
    };
    // q in thousandths, so comparisons are exact.
    let mut best: Option<(u16, ResponseFormat)> = None;
    for entry in accept.split(',') {
        let mut parts = entry.split(';');
        let range = parts.next().unwrap_or("").trim();
        let format = if range.eq_ignore_ascii_case("text/plain")
            || range.eq_ignore_ascii_case("text/*")
            || range == "*/*"
            || range == "*"
        {
            ResponseFormat::Text
        } else if range.eq_ignore_ascii_case("application/json")
            || range.eq_ignore_ascii_case("application/*")
        {
            ResponseFormat::Json
        } else {
            continue;
        };
        let q = parts
            .filter_map(|p| p.split_once('='))
            .find(|(k, _)| k.trim().eq_ignore_ascii_case("q"))
            .map_or(1000, |(_, v)| parse_q(v.trim()));
        if q == 0 {
            continue;
        }
        if best.is_none_or(|(best_q, _)| q > best_q) {
            best = Some((q, format));
        }
    }
    best.map(|(_, format)| format)
}

/// A `q` value in thousandths, clamped to 0..=1000; unparseable means 1.
fn parse_q(v: &str) -> u16 {
    match v.parse::<f64>() {
        Ok(q) if q.is_finite() => (q.clamp(0.0, 1.0) * 1000.0).round() as u16,
        _ => 1000,
    }
}

/// Whether the control server should refuse before reading a body, from the head alone:
/// head too large (400), no usable length (411), declared body too large (413). `None` means
/// "read `content_length` bytes (or none) and call [`handle_control`]".
///
/// The I/O side should still drain or half-close politely after an early answer: closing with
/// unread bytes in the socket makes the kernel send RST, which can destroy the response before
/// the client reads it.
pub fn precheck(
    method: &str,
    path: &str,
    content_length: Option<u64>,
    chunked: bool,
    head_bytes: usize,
    limits: &ControlLimits,
) -> Option<ControlResponse> {
    debug_assert!(limits.max_headers_bytes > 0);
    let _ = path; // Pushpin reads the body before routing; so do we.
    if head_bytes > limits.max_headers_bytes {
        return Some(ControlResponse::header_too_large());
    }
    let method_assumes_body = !matches!(method, "GET" | "HEAD" | "DELETE");
    if chunked || (content_length.is_none() && method_assumes_body) {
        return Some(ControlResponse::text(
            411,
            "Length Required",
            TEXT_LENGTH_REQUIRED.to_string(),
        ));
    }
    if content_length.is_some_and(|n| n > limits.max_body_bytes as u64) {
        return Some(ControlResponse::body_too_large());
    }
    None
}

/// Decide the answer to one control request (see the module table).
pub fn handle_control(req: &ControlRequest, limits: &ControlLimits) -> ControlResponse {
    if let Some(early) = precheck(
        req.method,
        req.path,
        req.content_length,
        req.chunked,
        req.head_bytes,
        limits,
    ) {
        return early;
    }
    if req.body.len() > limits.max_body_bytes {
        return ControlResponse::body_too_large();
    }
    if req
        .content_length
        .is_some_and(|n| req.body.len() as u64 > n)
        || (req.content_length.is_none() && !req.body.is_empty())
    {
        return ControlResponse::bad_request(TEXT_BODY_EXCEEDED.to_string());
    }

    let Some(format) = negotiate(req.accept) else {
        return ControlResponse::text(406, "Not Acceptable", TEXT_NOT_ACCEPTABLE.to_string());
    };

    let path = route_path(req.path);
    let response = match path {
        "/" => ControlResponse::text(200, "OK", TEXT_ROOT.to_string()),
        "/publish" | "/recover" if req.method != "POST" => method_not_allowed(req.method),
        "/publish" => match parse_publish(req.body) {
            Ok(items) => ControlResponse::success(
                format,
                TEXT_PUBLISHED,
                JSON_PUBLISHED,
                ControlOutcome::Publish(items),
            ),
            Err(e) => ControlResponse::bad_request(format!("{}\n", e.message)),
        },
        "/recover" => {
            ControlResponse::success(format, TEXT_UPDATED, JSON_UPDATED, ControlOutcome::Recover)
        }
        p => match connections::endpoint(p) {
            Some(_) if req.method != "POST" => method_not_allowed(req.method),
            Some(ep) => match connections::parse(ep, req.body) {
                Ok(op) => ControlResponse::success(
                    format,
                    "",
                    "",
                    ControlOutcome::Connections(ConnRequest { op, format }),
                ),
                Err(reason) => ControlResponse::bad_request(format!("{reason}\n")),
            },
            None => ControlResponse::text(404, "Not Found", TEXT_NOT_FOUND.to_string()),
        },
    };
    debug_assert!(
        response.body.ends_with('\n') || matches!(response.outcome, ControlOutcome::Connections(_))
    );
    debug_assert!(
        response.status == 200 || matches!(response.outcome, ControlOutcome::None),
        "only a 200 carries work"
    );
    response
}

/// The path used for routing: query removed, then one trailing `/` removed unless the path
/// is just `/`.
fn route_path(target: &str) -> &str {
    let path = target.split_once('?').map_or(target, |(p, _)| p);
    match path.strip_suffix('/') {
        Some(stripped) if !stripped.is_empty() => stripped,
        _ => path,
    }
}

fn method_not_allowed(method: &str) -> ControlResponse {
    let echoed: String = method
        .chars()
        .take(METHOD_ECHO_MAX)
        .map(|c| if c.is_control() { '?' } else { c })
        .collect();
    let mut response = ControlResponse::text(
        405,
        "Method Not Allowed",
        format!("Method not allowed: {echoed}.\n"),
    );
    response.headers.push(("Allow", "POST".to_string()));
    response
}
