//! `{"items":[...]}` → `Vec<PublishItem>`: validation with Pushpin's error texts.
//!
//! The whole batch is validated before anything is returned, so one bad item rejects all of
//! them (grip-spec §11.4). Error messages keep Pushpin 1.36's wording (`publishitem.cpp`,
//! `publishformat.cpp`, paraphrased by the spec and checked against its texts) and tack appends
//! where the problem is, as ` (at items[N].field)`, with N counted from 0. Clients that match on
//! Pushpin's prefix, or even on its whole reason, keep matching.
//!
//! Deliberate differences from Pushpin (all make tack stricter only where Pushpin would emit
//! broken output, or more lenient where Pushpin's behaviour is accidental):
//! - an unknown `action` says `'<format>' contains 'action' with unknown value` where Pushpin
//!   leaves the reason empty (`Invalid format: `); the prefix is the same;
//! - invalid base64 in `body-bin` / `content-bin` is an error (Pushpin's decoder skips bad
//!   characters); ASCII whitespace inside base64 is still ignored, and padding is optional;
//! - header names must be HTTP tokens and header values and `reason` may not contain CR, LF or
//!   NUL (response splitting); ping/pong content is limited to 125 bytes; a close `reason` is cut
//!   to 123 bytes at a UTF-8 boundary (both are WebSocket control-frame limits);
//! - integers (`code`, `size`) may be JSON integers, integral floats, or decimal strings; a
//!   non-numeric string is "wrong type" (Pushpin silently reads it as 0); booleans are rejected;
//! - JSON `null` for an optional field means "absent" (as Pushpin built on Qt 5 behaves).

use std::borrow::Cow;

use base64::alphabet;
use base64::engine::{DecodePaddingMode, GeneralPurpose, GeneralPurposeConfig};
use base64::Engine as _;
use bytes::Bytes;
use serde_json::{Map, Value};

use super::item::{
    Action, HttpResponseFormat, HttpStreamFormat, PublishItem, WsMessageFormat, WsType,
};
use super::PublishError;

/// Pushpin's prefix for every item-level error; clients match on it.
pub const INVALID_FORMAT_PREFIX: &str = "Invalid format: ";
/// Body that does not parse as JSON (any JSON value is accepted by the parser first).
pub const MSG_NOT_JSON: &str = "Body is not valid JSON.";
/// JSON that is not an object.
pub const MSG_NOT_OBJECT: &str = "Invalid format.";
/// Object without `items`.
pub const MSG_NO_ITEMS: &str = "Invalid format: object does not contain 'items'";
/// `items` that is not a list.
pub const MSG_ITEMS_TYPE: &str = "Invalid format: object contains 'items' with wrong type";

/// WebSocket control frames carry at most 125 payload bytes (RFC 6455 §5.5).
const WS_CONTROL_PAYLOAD_MAX: usize = 125;
/// A close frame's reason shares those 125 bytes with the 2-byte code.
const WS_CLOSE_REASON_MAX: usize = WS_CONTROL_PAYLOAD_MAX - 2;
/// User-supplied keys (header names, meta keys) quoted in error texts are cut to this many
/// characters so a hostile publisher cannot make the error response large.
const QUOTED_KEY_MAX: usize = 64;

/// Standard alphabet; padding optional; lenient about the unused trailing bits, as most
/// decoders (and Qt's) are.
const BASE64: GeneralPurpose = GeneralPurpose::new(
    &alphabet::STANDARD,
    GeneralPurposeConfig::new()
        .with_decode_padding_mode(DecodePaddingMode::Indifferent)
        .with_decode_allow_trailing_bits(true),
);

/// An item-level failure: the Pushpin-style reason and the field path inside the item.
#[derive(Debug)]
struct Fail {
    field: Option<String>,
    reason: String,
}

/// Parse a publish request body `{"items":[...]}`.
///
/// Formats may sit under `formats` or directly on the item. On success every item has been
/// fully validated; on failure nothing is returned and the error says which item and field.
pub fn parse_publish(body: &[u8]) -> Result<Vec<PublishItem>, PublishError> {
    let doc: Value = serde_json::from_slice(body).map_err(|_| PublishError::top(MSG_NOT_JSON))?;
    let Value::Object(mut top) = doc else {
        return Err(PublishError::top(MSG_NOT_OBJECT));
    };
    let items = match top.remove("items") {
        None => return Err(PublishError::top(MSG_NO_ITEMS)),
        Some(Value::Array(items)) => items,
        Some(_) => return Err(PublishError::top(MSG_ITEMS_TYPE)),
    };

    let count = items.len();
    let mut out = Vec::with_capacity(count);
    for (index, value) in items.into_iter().enumerate() {
        match parse_item(value) {
            Ok(item) => {
                debug_assert!(item.has_format());
                out.push(item);
            }
            Err(fail) => return Err(item_error(index, fail)),
        }
    }
    debug_assert_eq!(out.len(), count);
    Ok(out)
}

/// Parse and validate one item (the value at `items[index]`) with the errors of
/// [`parse_publish`]; for request bodies that carry items in another envelope.
pub(crate) fn parse_one_item(index: usize, value: Value) -> Result<PublishItem, PublishError> {
    parse_item(value).map_err(|fail| item_error(index, fail))
}

fn item_error(index: usize, fail: Fail) -> PublishError {
    let message = match &fail.field {
        Some(field) => format!(
            "{INVALID_FORMAT_PREFIX}{} (at items[{index}].{field})",
            fail.reason
        ),
        None => format!("{INVALID_FORMAT_PREFIX}{} (at items[{index}])", fail.reason),
    };
    debug_assert!(message.starts_with(INVALID_FORMAT_PREFIX));
    PublishError {
        item: Some(index),
        field: fail.field,
        message,
    }
}

/// A JSON object being read, with Pushpin's name for it (`pn`, used in reasons) and the field
/// path from the item root (`base`, used in locations).
struct Obj {
    map: Map<String, Value>,
    pn: &'static str,
    base: String,
}

/// What is wrong with a value read as an integer.
enum IntError {
    WrongType,
    OutOfRange,
}

impl Obj {
    fn path(&self, key: &str) -> String {
        if self.base.is_empty() {
            key.to_string()
        } else {
            format!("{}.{key}", self.base)
        }
    }

    fn fail(&self, key: &str, reason: String) -> Fail {
        Fail {
            field: Some(self.path(key)),
            reason,
        }
    }

    fn wrong_type(&self, key: &str) -> Fail {
        self.fail(key, format!("{} contains '{key}' with wrong type", self.pn))
    }

    fn invalid_value(&self, key: &str, detail: &str) -> Fail {
        let mut reason = format!("{} contains '{key}' with invalid value", self.pn);
        if !detail.is_empty() {
            reason.push_str(": ");
            reason.push_str(detail);
        }
        self.fail(key, reason)
    }

    /// Remove `key`; JSON null counts as absent.
    fn take(&mut self, key: &str) -> Option<Value> {
        match self.map.remove(key) {
            None | Some(Value::Null) => None,
            Some(v) => Some(v),
        }
    }

    fn take_str(&mut self, key: &str) -> Result<Option<String>, Fail> {
        match self.take(key) {
            None => Ok(None),
            Some(Value::String(s)) => Ok(Some(s)),
            Some(_) => Err(self.wrong_type(key)),
        }
    }

    /// A required string: absent is "does not contain", null or another type is "wrong type".
    fn take_required_str(&mut self, key: &str) -> Result<String, Fail> {
        match self.map.remove(key) {
            None => Err(self.fail(key, format!("{} does not contain '{key}'", self.pn))),
            Some(Value::String(s)) => Ok(s),
            Some(_) => Err(self.wrong_type(key)),
        }
    }

    fn take_int(&mut self, key: &str) -> Result<Option<i64>, Fail> {
        match self.take(key) {
            None => Ok(None),
            Some(v) => match value_to_int(&v) {
                Ok(n) => Ok(Some(n)),
                Err(IntError::WrongType) => Err(self.wrong_type(key)),
                Err(IntError::OutOfRange) => Err(self.invalid_value(key, "")),
            },
        }
    }

    /// `content-filters`: a list of strings, or absent.
    fn take_filters(&mut self) -> Result<Option<Vec<String>>, Fail> {
        const KEY: &str = "content-filters";
        let list = match self.take(KEY) {
            None => return Ok(None),
            Some(Value::Array(list)) => list,
            Some(_) => return Err(self.wrong_type(KEY)),
        };
        let mut out = Vec::with_capacity(list.len());
        for (n, v) in list.into_iter().enumerate() {
            match v {
                Value::String(s) => out.push(s),
                _ => {
                    return Err(Fail {
                        field: Some(format!("{}[{n}]", self.path(KEY))),
                        reason: "content-filters contains element with wrong type".to_string(),
                    })
                }
            }
        }
        Ok(Some(out))
    }

    /// A base64 string field, decoded.
    fn take_base64(&mut self, key: &str) -> Result<Option<Bytes>, Fail> {
        match self.take_str(key)? {
            None => Ok(None),
            Some(s) => match decode_base64(&s) {
                Some(bytes) => Ok(Some(Bytes::from(bytes))),
                None => Err(self.invalid_value(key, "not valid base64")),
            },
        }
    }

    /// A string payload field, moved into `Bytes` without copying.
    fn take_text(&mut self, key: &str) -> Result<Option<Bytes>, Fail> {
        Ok(self.take_str(key)?.map(Bytes::from))
    }

    fn take_action(&mut self) -> Result<Action, Fail> {
        const KEY: &str = "action";
        match self.take_str(KEY)?.as_deref() {
            None | Some("send") => Ok(Action::Send),
            Some("hint") => Ok(Action::Hint),
            Some("close") => Ok(Action::Close),
            Some("refresh") => Ok(Action::Refresh),
            Some(_) => Err(self.fail(
                KEY,
                format!("{} contains '{KEY}' with unknown value", self.pn),
            )),
        }
    }
}

fn value_to_int(v: &Value) -> Result<i64, IntError> {
    match v {
        Value::Number(n) => {
            if let Some(i) = n.as_i64() {
                Ok(i)
            } else if n.is_u64() {
                Err(IntError::OutOfRange)
            } else {
                let f = n.as_f64().ok_or(IntError::WrongType)?;
                if f.fract() != 0.0 {
                    Err(IntError::WrongType)
                } else if f.abs() >= 9.0e15 {
                    Err(IntError::OutOfRange)
                } else {
                    // Integral and well inside i64: the cast is exact.
                    Ok(f as i64)
                }
            }
        }
        Value::String(s) => s.trim().parse::<i64>().map_err(|_| IntError::WrongType),
        _ => Err(IntError::WrongType),
    }
}

fn decode_base64(s: &str) -> Option<Vec<u8>> {
    if s.bytes().any(|b| b.is_ascii_whitespace()) {
        let compact: Vec<u8> = s.bytes().filter(|b| !b.is_ascii_whitespace()).collect();
        BASE64.decode(compact).ok()
    } else {
        BASE64.decode(s).ok()
    }
}

/// A user-supplied key as quoted in an error: bounded length, control characters replaced.
fn quoted(key: &str) -> Cow<'_, str> {
    let clean = key.chars().count() <= QUOTED_KEY_MAX && !key.chars().any(char::is_control);
    if clean {
        Cow::Borrowed(key)
    } else {
        Cow::Owned(
            key.chars()
                .take(QUOTED_KEY_MAX)
                .map(|c| if c.is_control() { '?' } else { c })
                .collect(),
        )
    }
}

/// RFC 9110 `tchar`.
fn is_token_byte(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b)
}

fn is_header_name(name: &str) -> bool {
    !name.is_empty() && name.bytes().all(is_token_byte)
}

/// Values and reason phrases end up on a header or status line: no line breaks, no NUL.
fn is_line_safe(value: &str) -> bool {
    !value.bytes().any(|b| b == b'\r' || b == b'\n' || b == 0)
}

/// A message id tack can put in a `Grip-Last` header: no control characters, no `,` or `;`.
pub fn is_id_safe(id: &str) -> bool {
    !id.bytes()
        .any(|b| b.is_ascii_control() || b == b',' || b == b';')
}

fn parse_item(value: Value) -> Result<PublishItem, Fail> {
    let Value::Object(map) = value else {
        return Err(Fail {
            field: None,
            reason: "publish item object is not an object".to_string(),
        });
    };
    let mut item = Obj {
        map,
        pn: "publish item object",
        base: String::new(),
    };

    let channel = item.take_required_str("channel")?;
    let id = item.take_str("id")?;
    let prev_id = item.take_str("prev-id")?;
    // Ids travel in `Grip-Last: <channel>; last-id=<id>` headers: nothing that could break the
    // line or its syntax.
    for (key, v) in [("id", &id), ("prev-id", &prev_id)] {
        if v.as_deref().is_some_and(|v| !is_id_safe(v)) {
            return Err(item.fail(
                key,
                format!("'{key}' contains a control character, ',' or ';'"),
            ));
        }
    }

    // Formats: under "formats" if present (then keys on the item are ignored), else on the item.
    let mut formats = match item.take("formats") {
        Some(Value::Object(map)) => Obj {
            map,
            pn: "formats",
            base: "formats".to_string(),
        },
        Some(_) => return Err(item.wrong_type("formats")),
        None => {
            let mut map = Map::new();
            for key in ["http-response", "http-stream", "ws-message"] {
                if let Some(v) = item.map.remove(key) {
                    map.insert(key.to_string(), v);
                }
            }
            Obj {
                map,
                pn: "formats",
                base: String::new(),
            }
        }
    };
    let known = ["http-response", "http-stream", "ws-message"];
    if !known.iter().any(|k| formats.map.contains_key(*k)) {
        return Err(Fail {
            field: Some("formats".to_string()),
            reason: "no formats specified".to_string(),
        });
    }

    let http_response = match formats.map.remove("http-response") {
        Some(v) => Some(parse_http_response(format_obj(
            &formats,
            "http-response",
            "'http-response'",
            v,
        )?)?),
        None => None,
    };
    let http_stream = match formats.map.remove("http-stream") {
        Some(v) => Some(parse_http_stream(format_obj(
            &formats,
            "http-stream",
            "'http-stream'",
            v,
        )?)?),
        None => None,
    };
    let ws_message = match formats.map.remove("ws-message") {
        Some(v) => Some(parse_ws_message(format_obj(
            &formats,
            "ws-message",
            "'ws-message'",
            v,
        )?)?),
        None => None,
    };

    let meta = match item.take("meta") {
        None => Vec::new(),
        Some(Value::Object(map)) => {
            let mut meta = Vec::with_capacity(map.len());
            for (key, v) in map {
                match v {
                    Value::String(s) => meta.push((key, s)),
                    _ => {
                        return Err(Fail {
                            reason: format!("'meta' contains '{}' with wrong type", quoted(&key)),
                            field: Some(format!("meta.{}", quoted(&key))),
                        })
                    }
                }
            }
            meta.sort_by(|a, b| a.0.cmp(&b.0));
            meta
        }
        Some(_) => return Err(item.wrong_type("meta")),
    };

    let size = match item.take_int("size")? {
        None => None,
        Some(n) => match u64::try_from(n) {
            Ok(n) => Some(n),
            Err(_) => return Err(item.invalid_value("size", "")),
        },
    };

    let no_seq = match item.take("no-seq") {
        None => false,
        Some(Value::Bool(b)) => b,
        Some(_) => return Err(item.wrong_type("no-seq")),
    };

    let out = PublishItem {
        channel,
        id,
        prev_id,
        no_seq,
        meta,
        size,
        http_response,
        http_stream,
        ws_message,
    };
    debug_assert!(out.has_format());
    debug_assert!(out.meta.windows(2).all(|w| w[0].0 <= w[1].0));
    Ok(out)
}

/// Check that a format value is an object and wrap it for reading.
fn format_obj(formats: &Obj, key: &str, pn: &'static str, value: Value) -> Result<Obj, Fail> {
    match value {
        Value::Object(map) => Ok(Obj {
            map,
            pn,
            base: formats.path(key),
        }),
        _ => Err(Fail {
            field: Some(formats.path(key)),
            reason: format!("{pn} is not an object"),
        }),
    }
}

fn parse_http_response(mut f: Obj) -> Result<HttpResponseFormat, Fail> {
    let action = f.take_action()?;
    let mut out = HttpResponseFormat {
        action,
        code: None,
        reason: None,
        headers: Vec::new(),
        body: Bytes::new(),
        body_patch: None,
        content_filters: None,
    };
    if action != Action::Send {
        return Ok(out);
    }

    let code = match f.take_int("code")? {
        None => 200,
        Some(n) => match u16::try_from(n) {
            Ok(c) if crate::http1::is_final_status(c) => c,
            // tack: Pushpin takes 0–999; a 1xx or out-of-range code is not a response a
            // client can be given.
            _ => return Err(f.invalid_value("code", "not a final status code (200-599)")),
        },
    };
    out.code = Some(code);

    if let Some(reason) = f.take_str("reason")? {
        if !is_line_safe(&reason) {
            return Err(f.invalid_value("reason", "line break or NUL"));
        }
        if !reason.is_empty() {
            out.reason = Some(reason);
        }
    }

    match f.take("headers") {
        None => {}
        Some(Value::Array(list)) => {
            let base = f.path("headers");
            out.headers.reserve(list.len());
            for (n, entry) in list.into_iter().enumerate() {
                let at = |reason: &str| Fail {
                    field: Some(format!("{base}[{n}]")),
                    reason: reason.to_string(),
                };
                let Value::Array(pair) = entry else {
                    return Err(at("headers contains element with wrong type"));
                };
                let pair: Result<[Value; 2], _> = pair.try_into();
                let Ok([name, value]) = pair else {
                    return Err(at("headers contains list with wrong number of elements"));
                };
                let Value::String(name) = name else {
                    return Err(at("header contains name element with wrong type"));
                };
                let Value::String(value) = value else {
                    return Err(at("header contains value element with wrong type"));
                };
                out.headers
                    .push(check_header(name, value, &|reason| at(&reason))?);
            }
        }
        Some(Value::Object(map)) => {
            let base = f.path("headers");
            out.headers.reserve(map.len());
            for (name, value) in map {
                let at = |reason: String| Fail {
                    field: Some(format!("{base}.{}", quoted(&name))),
                    reason,
                };
                let Value::String(value) = value else {
                    return Err(at(format!(
                        "headers contains '{}' with wrong type",
                        quoted(&name)
                    )));
                };
                let header = check_header(name.clone(), value, &at)?;
                out.headers.push(header);
            }
        }
        Some(_) => return Err(f.wrong_type("headers")),
    }

    out.content_filters = f.take_filters()?;

    // Precedence as in Pushpin: body-bin, then body, then body-patch.
    if let Some(body) = f.take_base64("body-bin")? {
        out.body = body;
    } else if let Some(body) = f.take_text("body")? {
        out.body = body;
    } else {
        match f.take("body-patch") {
            Some(patch @ Value::Array(_)) => out.body_patch = Some(patch),
            Some(_) => return Err(f.wrong_type("body-patch")),
            None => {
                return Err(Fail {
                    field: Some(f.base.clone()),
                    reason: format!(
                        "{} does not contain 'body', 'body-bin', or 'body-patch'",
                        f.pn
                    ),
                })
            }
        }
    }
    debug_assert!(out.body_patch.is_none() || out.body.is_empty());
    debug_assert!(out.code.is_some_and(crate::http1::is_final_status));
    Ok(out)
}

/// Validate one published header; `at` builds the located failure.
fn check_header(
    name: String,
    value: String,
    at: &dyn Fn(String) -> Fail,
) -> Result<(String, Bytes), Fail> {
    if !is_header_name(&name) {
        return Err(at(format!(
            "headers contains '{}' with invalid name",
            quoted(&name)
        )));
    }
    if !is_line_safe(&value) {
        return Err(at(format!(
            "headers contains '{}' with invalid value",
            quoted(&name)
        )));
    }
    Ok((name, Bytes::from(value)))
}

fn parse_http_stream(mut f: Obj) -> Result<HttpStreamFormat, Fail> {
    let action = f.take_action()?;
    let mut out = HttpStreamFormat {
        action,
        content: Bytes::new(),
        content_filters: None,
    };
    if action != Action::Send {
        return Ok(out);
    }
    out.content_filters = f.take_filters()?;
    if let Some(content) = f.take_base64("content-bin")? {
        out.content = content;
    } else if let Some(content) = f.take_text("content")? {
        out.content = content;
    } else {
        return Err(Fail {
            field: Some(f.base.clone()),
            reason: format!("{} does not contain 'content' or 'content-bin'", f.pn),
        });
    }
    Ok(out)
}

fn parse_ws_message(mut f: Obj) -> Result<WsMessageFormat, Fail> {
    let action = f.take_action()?;
    let mut out = WsMessageFormat {
        action,
        kind: WsType::Text,
        content: Bytes::new(),
        close_code: None,
        close_reason: None,
        content_filters: None,
    };
    match action {
        Action::Send => {
            let explicit = match f.take_str("type")?.as_deref() {
                None => None,
                Some("text") => Some(WsType::Text),
                Some("binary") => Some(WsType::Binary),
                Some("ping") => Some(WsType::Ping),
                Some("pong") => Some(WsType::Pong),
                Some(_) => {
                    return Err(f.fail(
                        "type",
                        format!("{} contains 'type' with unknown value", f.pn),
                    ))
                }
            };
            out.content_filters = f.take_filters()?;
            if let Some(content) = f.take_base64("content-bin")? {
                out.content = content;
                out.kind = explicit.unwrap_or(WsType::Binary);
            } else if let Some(content) = f.take_text("content")? {
                out.content = content;
                out.kind = explicit.unwrap_or(WsType::Text);
            } else {
                match explicit {
                    Some(kind @ (WsType::Ping | WsType::Pong)) => out.kind = kind,
                    _ => {
                        return Err(Fail {
                            field: Some(f.base.clone()),
                            reason: format!("{} does not contain 'content' or 'content-bin'", f.pn),
                        })
                    }
                }
            }
            // tack: Pushpin sends such bytes as a text frame, which the client must fail
            // with 1007 (RFC 6455 §8.1).
            if out.kind == WsType::Text && std::str::from_utf8(&out.content).is_err() {
                return Err(f.invalid_value("content-bin", "a text message must be UTF-8"));
            }
            if matches!(out.kind, WsType::Ping | WsType::Pong)
                && out.content.len() > WS_CONTROL_PAYLOAD_MAX
            {
                return Err(Fail {
                    field: Some(f.base.clone()),
                    reason: format!(
                        "{} contains 'content' with invalid value: ping/pong payload over {WS_CONTROL_PAYLOAD_MAX} bytes",
                        f.pn
                    ),
                });
            }
        }
        Action::Close => {
            if let Some(code) = f.take_int("code")? {
                // RFC 6455 §7.4: 1005 means "no code" (a close frame without one); 1006,
                // 1015 and unassigned codes may not appear on the wire. tack: Pushpin
                // sends whatever code it is given.
                match u16::try_from(code) {
                    Ok(code)
                        if crate::ws::close_code_is_valid(code)
                            || code == crate::ws::close_code::NO_STATUS =>
                    {
                        out.close_code = Some(code)
                    }
                    _ => {
                        return Err(f.invalid_value(
                            "code",
                            "not a close code that may be sent (1000-1003, 1007-1014, 3000-4999, or 1005 for none)",
                        ))
                    }
                }
            }
            if let Some(mut reason) = f.take_str("reason")? {
                if reason.len() > WS_CLOSE_REASON_MAX {
                    let mut cut = WS_CLOSE_REASON_MAX;
                    while !reason.is_char_boundary(cut) {
                        cut -= 1;
                    }
                    reason.truncate(cut);
                }
                if !reason.is_empty() {
                    out.close_reason = Some(reason);
                }
            }
            debug_assert!(out
                .close_reason
                .as_ref()
                .is_none_or(|r| r.len() <= WS_CLOSE_REASON_MAX));
        }
        Action::Hint | Action::Refresh => {}
    }
    Ok(out)
}
