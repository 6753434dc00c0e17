//! The GRIP WebSocket extension (grip-spec §7.1–7.2): the backend's `Sec-WebSocket-Extensions:
//! grip[; message-prefix=…]` answer, classification of backend messages (`c:` control messages,
//! prefixed messages to deliver, the rest dropped), and control message JSON parsing.
//!
//! Behaviour follows Pushpin's `wsproxysession.cpp` and `wscontrolmessage.cpp`, except that an
//! unknown control `type` parses to [`ControlMessage::Unknown`] (the caller logs and ignores it,
//! which is what Pushpin ends up doing).

use bytes::Bytes;
use serde_json::{Map, Value};

use super::handshake::{parse_extension, split_extension_list};
use super::WsMsgType;
use crate::grip::{decode_base64_lenient, DEFAULT_KEEP_ALIVE_TIMEOUT_S};

/// The extension token tack offers to backends.
pub const GRIP_EXTENSION: &str = "grip";
/// Message prefix when the backend's `grip` extension gives none.
pub const DEFAULT_MESSAGE_PREFIX: &str = "m:";
/// Prefix of a control message in a backend text frame.
pub const CONTROL_PREFIX: &[u8] = b"c:";
/// Delay of `send-delayed` when no `timeout` is given, in seconds.
pub const DEFAULT_SEND_DELAYED_TIMEOUT_S: u32 = 1;

/// If the backend accepted the `grip` extension (in these `Sec-WebSocket-Extensions` response
/// values), its message prefix: the `message-prefix` parameter (`""` when given empty or
/// without a value, which turns prefixing off), else `m:`. `None`: not GRIP mode.
pub fn grip_extension_prefix(response_ext_values: &[&str]) -> Option<String> {
    let ext = response_ext_values
        .iter()
        .flat_map(|v| split_extension_list(v))
        .filter_map(parse_extension)
        .find(|e| e.name.eq_ignore_ascii_case(GRIP_EXTENSION))?;
    let prefix = ext
        .params
        .iter()
        .find(|(n, _)| n.eq_ignore_ascii_case("message-prefix"))
        .map(|(_, v)| v.clone().unwrap_or_default());
    Some(prefix.unwrap_or_else(|| DEFAULT_MESSAGE_PREFIX.to_owned()))
}

/// What to do with a backend data message in GRIP mode.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum GripMessage<'a> {
    /// Send this (prefix stripped) to the client, with the message's own type.
    Deliver(&'a [u8]),
    /// A control message to act on.
    Control(ControlMessage),
    /// A `c:` message whose JSON is invalid: ignore it (log the reason at debug level).
    Invalid(String),
    /// Unprefixed, or a fragmented control message: drop it silently.
    Drop,
}

/// Classifies a single-frame backend text message: see [`classify_message`].
pub fn classify<'a>(payload: &'a [u8], prefix: &str) -> GripMessage<'a> {
    classify_message(payload, prefix, true, false)
}

/// Classifies a backend message in GRIP mode: a text message starting `c:` is a control
/// message (dropped if it came in several frames); any message starting with `prefix` is
/// delivered with the prefix stripped; anything else is dropped.
pub fn classify_message<'a>(
    payload: &'a [u8],
    prefix: &str,
    is_text: bool,
    fragmented: bool,
) -> GripMessage<'a> {
    if is_text {
        if let Some(json) = payload.strip_prefix(CONTROL_PREFIX) {
            if fragmented {
                return GripMessage::Drop;
            }
            return match parse_control(json) {
                Ok(c) => GripMessage::Control(c),
                Err(e) => GripMessage::Invalid(e),
            };
        }
    }
    match payload.strip_prefix(prefix.as_bytes()) {
        Some(rest) => GripMessage::Deliver(rest),
        None => GripMessage::Drop,
    }
}

/// A parsed `c:` control message (grip-spec §7.2).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ControlMessage {
    /// Subscribe to `channel` (non-empty) with these filters (the handler enforces the limit).
    /// `prev_id` (tack's reliable WebSockets, not in Pushpin): the id of the last message the
    /// client has on this channel; `None` when absent, null or empty (Pushpin behaviour).
    Subscribe {
        channel: String,
        filters: Vec<String>,
        prev_id: Option<String>,
    },
    /// Unsubscribe from `channel` (non-empty).
    Unsubscribe { channel: String },
    /// Close the backend WebSocket, keep the client.
    Detach,
    /// Set (`Some`) or clear (`None`) the session id.
    Session { id: Option<String> },
    /// Set (`Some`) or remove (`None`) a meta value; `name` is non-empty.
    SetMeta { name: String, value: Option<String> },
    /// Keep-alive message: `content: None` turns keep-alive off. `timeout_s` is as given
    /// (default 55; the handler applies any floor). `mode_interval`: `mode` was `interval`.
    KeepAlive {
        content: Option<Bytes>,
        message_type: WsMsgType,
        timeout_s: u32,
        mode_interval: bool,
    },
    /// Send `content` after `timeout_s` (default 1) unless `flush-delayed` comes first.
    SendDelayed {
        content: Option<Bytes>,
        message_type: WsMsgType,
        timeout_s: u32,
    },
    /// Send any delayed message now.
    FlushDelayed,
    /// An unknown `type`, to be logged and ignored.
    Unknown(String),
}

/// An optional string field: absent or null → `None`, other types → error.
fn opt_string(obj: &Map<String, Value>, key: &str) -> Result<Option<String>, String> {
    match obj.get(key) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) => Ok(Some(s.clone())),
        Some(_) => Err(format!(
            "grip control object contains '{key}' with wrong type"
        )),
    }
}

/// A required non-empty string field.
fn required_string(obj: &Map<String, Value>, key: &str) -> Result<String, String> {
    match opt_string(obj, key)? {
        Some(s) if !s.is_empty() => Ok(s),
        Some(_) => Err(format!(
            "grip control object contains '{key}' with invalid value"
        )),
        None => Err(format!("grip control object does not contain '{key}'")),
    }
}

/// `timeout`: an integer (numbers are truncated, numeric strings accepted, like Qt's int
/// conversion), ≥ 0.
fn timeout(v: &Value) -> Result<u32, String> {
    let t = match v {
        Value::Number(n) => n.as_i64().or_else(|| n.as_f64().map(|f| f as i64)),
        Value::String(s) => Some(s.trim().parse::<i64>().unwrap_or(0)),
        Value::Bool(b) => Some(i64::from(*b)),
        _ => None,
    }
    .ok_or_else(|| "grip control object contains 'timeout' with wrong type".to_owned())?;
    if t < 0 {
        return Err("grip control object contains 'timeout' with invalid value".to_owned());
    }
    Ok(u32::try_from(t).unwrap_or(u32::MAX))
}

/// The content, message type and timeout of `keep-alive` / `send-delayed`.
fn delayed_message(
    obj: &Map<String, Value>,
    default_timeout: u32,
) -> Result<(Option<Bytes>, WsMsgType, u32), String> {
    // Quirk kept from Pushpin: the type defaults to text before content-bin is looked at, so
    // content-bin without message-type is sent as a text frame.
    let message_type = match opt_string(obj, "message-type")?.as_deref() {
        None | Some("text") => WsMsgType::Text,
        Some("binary") => WsMsgType::Binary,
        Some("ping") => WsMsgType::Ping,
        Some("pong") => WsMsgType::Pong,
        Some(_) => {
            return Err("grip control object contains 'message-type' with unknown value".into())
        }
    };
    let content = if let Some(v) = obj.get("content-bin") {
        let Value::String(s) = v else {
            return Err("grip control object contains 'content-bin' with wrong type".into());
        };
        Some(Bytes::from(decode_base64_lenient(s.as_bytes())))
    } else if let Some(v) = obj.get("content") {
        let Value::String(s) = v else {
            return Err("grip control object contains 'content' with wrong type".into());
        };
        Some(Bytes::copy_from_slice(s.as_bytes()))
    } else {
        None
    };
    let timeout_s = match (&content, obj.get("timeout")) {
        (Some(_), Some(v)) => timeout(v)?,
        _ => default_timeout,
    };
    Ok((content, message_type, timeout_s))
}

/// The text message tack sends a reliable WebSocket backend (one that subscribed `channel`
/// with a `prev-id`) when it finds a gap: `c:{"type":"recover","channel":…,"last-id":…}`,
/// where `last-id` is the id of the last message the client has on the channel.
pub fn recover_message(channel: &str, last_id: &str) -> String {
    // A JSON string of a `&str` cannot fail to serialize.
    let quote = |s: &str| serde_json::to_string(s).unwrap_or_else(|_| "\"\"".to_owned());
    format!(
        r#"c:{{"type":"recover","channel":{},"last-id":{}}}"#,
        quote(channel),
        quote(last_id)
    )
}

/// Parses control message JSON (after `c:`). Errors carry Pushpin-like messages for a debug
/// log; the message is then ignored.
pub fn parse_control(json: &[u8]) -> Result<ControlMessage, String> {
    let v: Value = serde_json::from_slice(json)
        .map_err(|e| format!("grip control packet is not JSON: {e}"))?;
    let Value::Object(obj) = v else {
        return Err("grip control packet is not an object".into());
    };
    let Some(ty) = opt_string(&obj, "type")? else {
        return Err("grip control object does not contain 'type'".into());
    };
    Ok(match ty.as_str() {
        "subscribe" => {
            let channel = required_string(&obj, "channel")?;
            let filters = match obj.get("filters") {
                None | Some(Value::Null) => Vec::new(),
                Some(Value::Array(a)) => a
                    .iter()
                    .map(|f| f.as_str().map(str::to_owned))
                    .collect::<Option<Vec<_>>>()
                    .ok_or("filters contains value with wrong type")?,
                Some(_) => {
                    return Err("grip control object contains 'filters' with wrong type".into())
                }
            };
            let prev_id = opt_string(&obj, "prev-id")?.filter(|p| !p.is_empty());
            ControlMessage::Subscribe {
                channel,
                filters,
                prev_id,
            }
        }
        "unsubscribe" => ControlMessage::Unsubscribe {
            channel: required_string(&obj, "channel")?,
        },
        "detach" => ControlMessage::Detach,
        "session" => ControlMessage::Session {
            id: opt_string(&obj, "id")?,
        },
        "set-meta" => ControlMessage::SetMeta {
            name: required_string(&obj, "name")?,
            value: opt_string(&obj, "value")?,
        },
        "keep-alive" => {
            let (content, message_type, timeout_s) =
                delayed_message(&obj, DEFAULT_KEEP_ALIVE_TIMEOUT_S)?;
            let mode_interval = opt_string(&obj, "mode")?.as_deref() == Some("interval");
            ControlMessage::KeepAlive {
                content,
                message_type,
                timeout_s,
                mode_interval,
            }
        }
        "send-delayed" => {
            let (content, message_type, timeout_s) =
                delayed_message(&obj, DEFAULT_SEND_DELAYED_TIMEOUT_S)?;
            ControlMessage::SendDelayed {
                content,
                message_type,
                timeout_s,
            }
        }
        "flush-delayed" => ControlMessage::FlushDelayed,
        _ => ControlMessage::Unknown(ty),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn extension_prefix() {
        assert_eq!(grip_extension_prefix(&[]), None);
        assert_eq!(grip_extension_prefix(&["permessage-deflate"]), None);
        assert_eq!(grip_extension_prefix(&["grip"]), Some("m:".into()));
        assert_eq!(
            grip_extension_prefix(&["foo, grip; message-prefix=\"\""]),
            Some("".into())
        );
        assert_eq!(
            grip_extension_prefix(&["foo", "grip; message-prefix=x-"]),
            Some("x-".into())
        );
        assert_eq!(
            grip_extension_prefix(&["GRIP; Message-Prefix=\"a,b\""]),
            Some("a,b".into())
        );
        assert_eq!(
            grip_extension_prefix(&["grip; message-prefix"]),
            Some("".into())
        );
        assert_eq!(
            grip_extension_prefix(&["grip; message-prefix=\"open"]),
            None
        );
    }

    #[test]
    fn classification() {
        assert_eq!(classify(b"m:hello", "m:"), GripMessage::Deliver(b"hello"));
        assert_eq!(classify(b"m:", "m:"), GripMessage::Deliver(b""));
        assert_eq!(classify(b"hello", "m:"), GripMessage::Drop);
        assert_eq!(classify(b"hello", ""), GripMessage::Deliver(b"hello"));
        assert_eq!(
            classify(br#"c:{"type":"detach"}"#, "m:"),
            GripMessage::Control(ControlMessage::Detach)
        );
        assert_eq!(
            classify(br#"c:{"type":"detach"}"#, ""),
            GripMessage::Control(ControlMessage::Detach)
        );
        assert!(matches!(
            classify(b"c:{nope", "m:"),
            GripMessage::Invalid(_)
        ));
        // Fragmented control messages are dropped; binary c: is an ordinary message.
        assert_eq!(
            classify_message(br#"c:{"type":"detach"}"#, "m:", true, true),
            GripMessage::Drop
        );
        assert_eq!(
            classify_message(b"c:x", "m:", false, false),
            GripMessage::Drop
        );
        assert_eq!(
            classify_message(b"c:x", "", false, false),
            GripMessage::Deliver(b"c:x")
        );
        assert_eq!(
            classify_message(b"m:\x00\xff", "m:", false, true),
            GripMessage::Deliver(b"\x00\xff")
        );
    }

    fn parse(s: &str) -> Result<ControlMessage, String> {
        parse_control(s.as_bytes())
    }

    #[test]
    fn control_messages() {
        assert_eq!(
            parse(r#"{"type":"subscribe","channel":"c1","filters":["skip-self"]}"#),
            Ok(ControlMessage::Subscribe {
                channel: "c1".into(),
                filters: vec!["skip-self".into()],
                prev_id: None,
            })
        );
        assert_eq!(
            parse(r#"{"type":"subscribe","channel":"c1"}"#),
            Ok(ControlMessage::Subscribe {
                channel: "c1".into(),
                filters: vec![],
                prev_id: None,
            })
        );
        assert_eq!(
            parse(r#"{"type":"unsubscribe","channel":"c1"}"#),
            Ok(ControlMessage::Unsubscribe {
                channel: "c1".into()
            })
        );
        assert_eq!(
            parse(r#"{"type":"session","id":"s"}"#),
            Ok(ControlMessage::Session {
                id: Some("s".into())
            })
        );
        assert_eq!(
            parse(r#"{"type":"session"}"#),
            Ok(ControlMessage::Session { id: None })
        );
        assert_eq!(
            parse(r#"{"type":"set-meta","name":"user","value":"bob"}"#),
            Ok(ControlMessage::SetMeta {
                name: "user".into(),
                value: Some("bob".into())
            })
        );
        assert_eq!(
            parse(r#"{"type":"set-meta","name":"user"}"#),
            Ok(ControlMessage::SetMeta {
                name: "user".into(),
                value: None
            })
        );
        assert_eq!(
            parse(r#"{"type":"flush-delayed"}"#),
            Ok(ControlMessage::FlushDelayed)
        );
        assert_eq!(
            parse(r#"{"type":"bogus"}"#),
            Ok(ControlMessage::Unknown("bogus".into()))
        );
    }

    #[test]
    fn subscribe_prev_id() {
        assert_eq!(
            parse(r#"{"type":"subscribe","channel":"ch","prev-id":"5"}"#),
            Ok(ControlMessage::Subscribe {
                channel: "ch".into(),
                filters: vec![],
                prev_id: Some("5".into()),
            })
        );
        // Empty or null: no tracking (Pushpin behaviour).
        for json in [
            r#"{"type":"subscribe","channel":"ch","prev-id":""}"#,
            r#"{"type":"subscribe","channel":"ch","prev-id":null}"#,
        ] {
            assert_eq!(
                parse(json),
                Ok(ControlMessage::Subscribe {
                    channel: "ch".into(),
                    filters: vec![],
                    prev_id: None,
                }),
                "{json}"
            );
        }
        assert!(parse(r#"{"type":"subscribe","channel":"ch","prev-id":5}"#).is_err());
    }

    #[test]
    fn recover_message_json() {
        assert_eq!(
            recover_message("ch", "2"),
            r#"c:{"type":"recover","channel":"ch","last-id":"2"}"#
        );
        // Names are JSON-escaped, and the message parses back as an unknown control type.
        let m = recover_message("a\"b", "x\ny");
        assert_eq!(
            m,
            r#"c:{"type":"recover","channel":"a\"b","last-id":"x\ny"}"#
        );
        assert_eq!(
            classify(m.as_bytes(), "m:"),
            GripMessage::Control(ControlMessage::Unknown("recover".into()))
        );
    }

    #[test]
    fn keep_alive_and_delayed() {
        assert_eq!(
            parse(r#"{"type":"keep-alive","content":"ka"}"#),
            Ok(ControlMessage::KeepAlive {
                content: Some(Bytes::from_static(b"ka")),
                message_type: WsMsgType::Text,
                timeout_s: 55,
                mode_interval: false
            })
        );
        assert_eq!(
            parse(
                r#"{"type":"keep-alive","content-bin":"AAE=","message-type":"ping","timeout":30,"mode":"interval"}"#
            ),
            Ok(ControlMessage::KeepAlive {
                content: Some(Bytes::from_static(&[0, 1])),
                message_type: WsMsgType::Ping,
                timeout_s: 30,
                mode_interval: true
            })
        );
        // Quirk: content-bin without message-type stays text.
        assert_eq!(
            parse(r#"{"type":"keep-alive","content-bin":"aGk="}"#),
            Ok(ControlMessage::KeepAlive {
                content: Some(Bytes::from_static(b"hi")),
                message_type: WsMsgType::Text,
                timeout_s: 55,
                mode_interval: false
            })
        );
        // No content: keep-alive off (timeout ignored).
        assert_eq!(
            parse(r#"{"type":"keep-alive","timeout":"junk"}"#),
            Ok(ControlMessage::KeepAlive {
                content: None,
                message_type: WsMsgType::Text,
                timeout_s: 55,
                mode_interval: false
            })
        );
        assert_eq!(
            parse(r#"{"type":"send-delayed","content":"x","message-type":"binary"}"#),
            Ok(ControlMessage::SendDelayed {
                content: Some(Bytes::from_static(b"x")),
                message_type: WsMsgType::Binary,
                timeout_s: 1
            })
        );
        assert_eq!(
            parse(r#"{"type":"send-delayed","content":"x","timeout":"7"}"#),
            Ok(ControlMessage::SendDelayed {
                content: Some(Bytes::from_static(b"x")),
                message_type: WsMsgType::Text,
                timeout_s: 7
            })
        );
        assert_eq!(
            parse(r#"{"type":"send-delayed","content":"x","timeout":2.9}"#),
            Ok(ControlMessage::SendDelayed {
                content: Some(Bytes::from_static(b"x")),
                message_type: WsMsgType::Text,
                timeout_s: 2
            })
        );
    }

    #[test]
    fn control_errors() {
        for bad in [
            "",
            "[]",
            "{}",
            r#"{"type":5}"#,
            r#"{"type":"subscribe"}"#,
            r#"{"type":"subscribe","channel":""}"#,
            r#"{"type":"subscribe","channel":3}"#,
            r#"{"type":"subscribe","channel":"c","filters":"x"}"#,
            r#"{"type":"subscribe","channel":"c","filters":[1]}"#,
            r#"{"type":"unsubscribe"}"#,
            r#"{"type":"session","id":1}"#,
            r#"{"type":"set-meta","name":""}"#,
            r#"{"type":"set-meta","name":"n","value":1}"#,
            r#"{"type":"keep-alive","content":1}"#,
            r#"{"type":"keep-alive","content-bin":1}"#,
            r#"{"type":"keep-alive","content":"x","message-type":"close"}"#,
            r#"{"type":"keep-alive","content":"x","timeout":-1}"#,
            r#"{"type":"keep-alive","content":"x","timeout":[]}"#,
            r#"{"type":"keep-alive","content":"x","mode":1}"#,
        ] {
            assert!(parse(bad).is_err(), "{bad}");
        }
    }
}
