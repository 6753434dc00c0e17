//! Single-connection control (tack's addition to Pushpin's HTTP control API): the request
//! bodies of the four endpoints that address held connections by their connection id, and the
//! answers, decided purely. The I/O side (`crate::conncontrol`) runs the operation on every
//! shard and hands back a [`ConnResult`].
//!
//! | Request | Body | Answer (`200`) |
//! |---|---|---|
//! | `POST /connections/publish` | `{"items":[{"connection":ID, "formats":{...}}, ...]}` | `Published`, or `{"message":"Published","ids":[reached]}` |
//! | `POST /connections/close` | `{"ids":[ID,...], "code"?:1000, "reason"?:""}` | `Closed`, or `{"message":"Closed","ids":[closed]}` |
//! | `POST /conncheck` | `{"ids":[ID,...]}` | `{"ids":[still connected]}` (always JSON) |
//! | `POST /refresh` | `{"cid":ID}` or `{"channel":NAME}` | `Refreshed`, or `{"message":"Refreshed","count":N}` |
//!
//! Items of `/connections/publish` are `/publish` items with `connection` in place of
//! `channel` (same formats, same validation, the whole batch rejected on one bad item); `id`
//! and `prev-id` are ignored, since no sequencing applies to one connection. Ids are UUID-shaped
//! strings (see [`ConnectionId`]); a string of another shape names no connection and is simply
//! not reached (it is not an error, as `conncheck` may be asked about anybody's ids). Ids are
//! de-duplicated (first one kept); answers list ids in request order. More than
//! [`CONNECTION_IDS_MAX`] ids (or items) is `400`.

use serde_json::{Map, Value};

use super::control::{ControlOutcome, ControlResponse, ResponseFormat};
use super::item::PublishItem;
use super::parse::{parse_one_item, INVALID_FORMAT_PREFIX, MSG_NOT_JSON, MSG_NOT_OBJECT};
use crate::hold::ConnectionId;

/// Most ids (or items) in one request; the per-shard work and the answer stay small.
pub const CONNECTION_IDS_MAX: usize = 1000;
/// Longest close reason: a close frame's 125 payload bytes minus the 2-byte code.
pub const CLOSE_REASON_MAX: usize = 123;

/// What to do, on every shard, to the connections named.
#[derive(Debug, Clone, PartialEq)]
pub enum ConnOp {
    /// Deliver `items[i]` to connection `ids[i]` (both lists have the same length).
    Publish {
        ids: Vec<ConnectionId>,
        items: Vec<PublishItem>,
    },
    /// End these connections (WebSockets get close frame `code`/`reason`).
    Close {
        ids: Vec<ConnectionId>,
        code: u16,
        reason: String,
    },
    /// Which of these are still connected.
    Check { ids: Vec<ConnectionId> },
    /// Refresh one WebSocket-over-HTTP session (`ids`, 0 or 1 entries) or every WebSocket
    /// session on `channel`.
    Refresh {
        ids: Vec<ConnectionId>,
        channel: Option<String>,
    },
}

impl ConnOp {
    /// The ids the operation names (one per item for `Publish`, possibly repeated).
    pub fn ids(&self) -> &[ConnectionId] {
        match self {
            ConnOp::Publish { ids, .. }
            | ConnOp::Close { ids, .. }
            | ConnOp::Check { ids }
            | ConnOp::Refresh { ids, .. } => ids,
        }
    }

    /// Short name for logs.
    pub fn name(&self) -> &'static str {
        match self {
            ConnOp::Publish { .. } => "publish",
            ConnOp::Close { .. } => "close",
            ConnOp::Check { .. } => "conncheck",
            ConnOp::Refresh { .. } => "refresh",
        }
    }
}

/// An accepted single-connection request: the operation and how to answer.
#[derive(Debug, Clone, PartialEq)]
pub struct ConnRequest {
    pub op: ConnOp,
    pub format: ResponseFormat,
}

/// The gathered outcome over all shards.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ConnResult {
    /// `found[i]`: `op.ids()[i]` was live on some shard (and acted on).
    pub found: Vec<bool>,
    /// Sessions refreshed by a channel refresh (0 for the other operations).
    pub count: u64,
}

/// Which endpoint a (query-less, trailing-slash-less) path is, if any.
pub fn endpoint(path: &str) -> Option<&'static str> {
    match path {
        "/connections/publish" => Some("/connections/publish"),
        "/connections/close" => Some("/connections/close"),
        "/conncheck" => Some("/conncheck"),
        "/refresh" => Some("/refresh"),
        _ => None,
    }
}

/// Parse the body of `endpoint` (one of [`endpoint`]'s answers). `Err` is the `400` text,
/// without the newline.
pub fn parse(endpoint: &str, body: &[u8]) -> Result<ConnOp, String> {
    let doc: Value = serde_json::from_slice(body).map_err(|_| MSG_NOT_JSON.to_string())?;
    let Value::Object(top) = doc else {
        return Err(MSG_NOT_OBJECT.to_string());
    };
    let op = match endpoint {
        "/connections/publish" => parse_publish(top)?,
        "/connections/close" => parse_close(top)?,
        "/conncheck" => ConnOp::Check {
            ids: take_ids(&top)?,
        },
        "/refresh" => parse_refresh(top)?,
        _ => return Err("Not Found".to_string()),
    };
    debug_assert!(op.ids().len() <= CONNECTION_IDS_MAX);
    if let ConnOp::Publish { ids, items } = &op {
        debug_assert_eq!(ids.len(), items.len());
    }
    Ok(op)
}

fn invalid(reason: &str) -> String {
    format!("{INVALID_FORMAT_PREFIX}{reason}")
}

fn too_many() -> String {
    format!("Too many connection ids (at most {CONNECTION_IDS_MAX}).")
}

/// `ids`: a list of strings, at most [`CONNECTION_IDS_MAX`]; unparseable ones dropped,
/// duplicates dropped (first kept).
fn take_ids(top: &Map<String, Value>) -> Result<Vec<ConnectionId>, String> {
    let list = match top.get("ids") {
        None => return Err(invalid("object does not contain 'ids'")),
        Some(Value::Array(list)) => list,
        Some(_) => return Err(invalid("object contains 'ids' with wrong type")),
    };
    if list.len() > CONNECTION_IDS_MAX {
        return Err(too_many());
    }
    let mut out: Vec<ConnectionId> = Vec::with_capacity(list.len());
    for (n, v) in list.iter().enumerate() {
        let Value::String(s) = v else {
            return Err(invalid(&format!(
                "'ids' contains element with wrong type (at ids[{n}])"
            )));
        };
        if let Some(id) = ConnectionId::parse(s) {
            if !out.contains(&id) {
                out.push(id);
            }
        }
    }
    Ok(out)
}

fn parse_publish(mut top: Map<String, Value>) -> Result<ConnOp, String> {
    let items = match top.remove("items") {
        None => return Err(invalid("object does not contain 'items'")),
        Some(Value::Array(items)) => items,
        Some(_) => return Err(invalid("object contains 'items' with wrong type")),
    };
    if items.len() > CONNECTION_IDS_MAX {
        return Err(too_many());
    }
    let mut ids = Vec::with_capacity(items.len());
    let mut out = Vec::with_capacity(items.len());
    for (index, value) in items.into_iter().enumerate() {
        let Value::Object(mut map) = value else {
            return Err(invalid(&format!(
                "publish item object is not an object (at items[{index}])"
            )));
        };
        let conn = match map.remove("connection") {
            Some(Value::String(s)) => s,
            None => {
                return Err(invalid(&format!(
                    "publish item object does not contain 'connection' (at items[{index}])"
                )))
            }
            Some(_) => {
                return Err(invalid(&format!(
                    "publish item object contains 'connection' with wrong type (at items[{index}].connection)"
                )))
            }
        };
        // The item is a `/publish` item addressed by connection: validate it as one.
        map.insert("channel".to_string(), Value::String(conn.clone()));
        let mut item = parse_one_item(index, Value::Object(map)).map_err(|e| e.message)?;
        item.id = None;
        item.prev_id = None;
        // An id of another shape names no connection: keep the batch whole, reach nobody.
        if let Some(id) = ConnectionId::parse(&conn) {
            ids.push(id);
            out.push(item);
        }
    }
    Ok(ConnOp::Publish { ids, items: out })
}

fn parse_close(top: Map<String, Value>) -> Result<ConnOp, String> {
    let ids = take_ids(&top)?;
    let code = match top.get("code") {
        None | Some(Value::Null) => 1000,
        Some(Value::Number(n)) => match n.as_u64().and_then(|c| u16::try_from(c).ok()) {
            Some(c) if crate::ws::close_code_is_valid(c) => c,
            _ => return Err(invalid("object contains 'code' with invalid value")),
        },
        Some(_) => return Err(invalid("object contains 'code' with wrong type")),
    };
    let reason = match top.get("reason") {
        None | Some(Value::Null) => String::new(),
        Some(Value::String(s)) if s.len() <= CLOSE_REASON_MAX => s.clone(),
        Some(Value::String(_)) => {
            return Err(invalid(&format!(
                "object contains 'reason' longer than {CLOSE_REASON_MAX} bytes"
            )))
        }
        Some(_) => return Err(invalid("object contains 'reason' with wrong type")),
    };
    Ok(ConnOp::Close { ids, code, reason })
}

fn parse_refresh(top: Map<String, Value>) -> Result<ConnOp, String> {
    let string = |key: &str| match top.get(key) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) => Ok(Some(s.clone())),
        Some(_) => Err(invalid(&format!("object contains '{key}' with wrong type"))),
    };
    match (string("cid")?, string("channel")?) {
        (Some(cid), None) => Ok(ConnOp::Refresh {
            ids: ConnectionId::parse(&cid).into_iter().collect(),
            channel: None,
        }),
        (None, Some(channel)) if !channel.is_empty() => Ok(ConnOp::Refresh {
            ids: Vec::new(),
            channel: Some(channel),
        }),
        (None, Some(_)) => Err(invalid("object contains 'channel' with invalid value")),
        _ => Err(invalid(
            "object must contain exactly one of 'cid' and 'channel'",
        )),
    }
}

/// A JSON list of the ids found, in request order, without repeats.
fn found_ids_json(op: &ConnOp, result: &ConnResult) -> Value {
    debug_assert_eq!(op.ids().len(), result.found.len());
    let mut seen: Vec<ConnectionId> = Vec::new();
    let list = op
        .ids()
        .iter()
        .zip(&result.found)
        .filter(|(_, &f)| f)
        .filter_map(|(id, _)| {
            if seen.contains(id) {
                None
            } else {
                seen.push(*id);
                Some(Value::String(id.as_str().to_string()))
            }
        })
        .collect();
    Value::Array(list)
}

/// The `200` answer once every shard has reported.
pub fn answer(req: &ConnRequest, result: &ConnResult) -> ControlResponse {
    let mut json = Map::new();
    let text = match &req.op {
        ConnOp::Check { .. } => {
            json.insert("ids".into(), found_ids_json(&req.op, result));
            let body = format!("{}\n", Value::Object(json));
            return ControlResponse::success(ResponseFormat::Json, "", &body, ControlOutcome::None);
        }
        ConnOp::Publish { .. } => {
            json.insert("message".into(), "Published".into());
            json.insert("ids".into(), found_ids_json(&req.op, result));
            "Published\n"
        }
        ConnOp::Close { .. } => {
            json.insert("message".into(), "Closed".into());
            json.insert("ids".into(), found_ids_json(&req.op, result));
            "Closed\n"
        }
        ConnOp::Refresh { .. } => {
            json.insert("message".into(), "Refreshed".into());
            json.insert("count".into(), result.count.into());
            "Refreshed\n"
        }
    };
    let body = format!("{}\n", Value::Object(json));
    ControlResponse::success(req.format, text, &body, ControlOutcome::None)
}

#[cfg(test)]
mod tests {
    use super::*;

    const A: &str = "00000000-0001-4000-8000-000000000001";
    const B: &str = "00000000-0001-4001-8000-000000000002";

    fn id(s: &str) -> ConnectionId {
        ConnectionId::parse(s).unwrap()
    }

    #[test]
    fn conncheck_takes_ids_dropping_repeats_and_foreign_shapes() {
        let body = format!(r#"{{"ids":["{A}","nope","{B}","{A}"]}}"#);
        assert_eq!(
            parse("/conncheck", body.as_bytes()),
            Ok(ConnOp::Check {
                ids: vec![id(A), id(B)]
            })
        );
        assert_eq!(
            parse("/conncheck", br#"{"ids":[]}"#),
            Ok(ConnOp::Check { ids: vec![] })
        );
    }

    #[test]
    fn bad_bodies_get_reasons() {
        let cases: [(&str, &[u8], &str); 9] = [
            ("/conncheck", b"nope", "Body is not valid JSON."),
            ("/conncheck", b"[1]", "Invalid format."),
            (
                "/conncheck",
                b"{}",
                "Invalid format: object does not contain 'ids'",
            ),
            (
                "/conncheck",
                br#"{"ids":"x"}"#,
                "Invalid format: object contains 'ids' with wrong type",
            ),
            (
                "/conncheck",
                br#"{"ids":["x",1]}"#,
                "Invalid format: 'ids' contains element with wrong type (at ids[1])",
            ),
            (
                "/connections/close",
                br#"{"ids":[],"code":1005}"#,
                "Invalid format: object contains 'code' with invalid value",
            ),
            (
                "/refresh",
                br#"{"cid":"x","channel":"y"}"#,
                "Invalid format: object must contain exactly one of 'cid' and 'channel'",
            ),
            (
                "/refresh",
                br#"{}"#,
                "Invalid format: object must contain exactly one of 'cid' and 'channel'",
            ),
            (
                "/connections/publish",
                br#"{"items":[{"formats":{"http-stream":{"content":"x"}}}]}"#,
                "Invalid format: publish item object does not contain 'connection' (at items[0])",
            ),
        ];
        for (ep, body, want) in cases {
            assert_eq!(parse(ep, body), Err(want.to_string()), "{ep} {body:?}");
        }
        let many: Vec<String> = (0..=CONNECTION_IDS_MAX)
            .map(|_| format!("\"{A}\""))
            .collect();
        let body = format!(r#"{{"ids":[{}]}}"#, many.join(","));
        assert_eq!(
            parse("/conncheck", body.as_bytes()),
            Err("Too many connection ids (at most 1000).".to_string())
        );
    }

    #[test]
    fn publish_items_are_publish_items_addressed_by_connection() {
        let body = format!(
            r#"{{"items":[
                {{"connection":"{A}","id":"7","formats":{{"http-stream":{{"content":"hi\n"}}}}}},
                {{"connection":"other","formats":{{"ws-message":{{"content":"x"}}}}}},
                {{"connection":"{B}","ws-message":{{"content":"yo"}}}}
            ]}}"#
        );
        let Ok(ConnOp::Publish { ids, items }) = parse("/connections/publish", body.as_bytes())
        else {
            panic!("parse failed");
        };
        assert_eq!(ids, vec![id(A), id(B)]);
        assert_eq!(items.len(), 2);
        assert_eq!(items[0].id, None, "no sequencing for one connection");
        assert_eq!(
            items[0].http_stream.as_ref().map(|f| f.content.as_ref()),
            Some(&b"hi\n"[..])
        );
        assert_eq!(
            items[1].ws_message.as_ref().map(|f| f.content.as_ref()),
            Some(&b"yo"[..])
        );
        // Item validation is /publish's, whole batch rejected.
        let bad = format!(r#"{{"items":[{{"connection":"{A}","formats":{{}}}}]}}"#);
        assert_eq!(
            parse("/connections/publish", bad.as_bytes()),
            Err("Invalid format: no formats specified (at items[0].formats)".to_string())
        );
    }

    #[test]
    fn close_and_refresh_bodies() {
        let body = format!(r#"{{"ids":["{A}"],"code":4000,"reason":"bye"}}"#);
        assert_eq!(
            parse("/connections/close", body.as_bytes()),
            Ok(ConnOp::Close {
                ids: vec![id(A)],
                code: 4000,
                reason: "bye".into()
            })
        );
        let body = format!(r#"{{"ids":["{A}"]}}"#);
        assert_eq!(
            parse("/connections/close", body.as_bytes()),
            Ok(ConnOp::Close {
                ids: vec![id(A)],
                code: 1000,
                reason: String::new()
            })
        );
        let body = format!(r#"{{"cid":"{A}"}}"#);
        assert_eq!(
            parse("/refresh", body.as_bytes()),
            Ok(ConnOp::Refresh {
                ids: vec![id(A)],
                channel: None
            })
        );
        assert_eq!(
            parse("/refresh", br#"{"channel":"news"}"#),
            Ok(ConnOp::Refresh {
                ids: vec![],
                channel: Some("news".into())
            })
        );
    }

    #[test]
    fn control_routes_the_endpoints() {
        use crate::publish::control::{handle_control, ControlLimits, ControlRequest};
        let req = |method: &'static str, path: &'static str, body: &'static [u8]| ControlRequest {
            method,
            path,
            accept: None,
            content_length: Some(body.len() as u64),
            chunked: false,
            body,
            head_bytes: 64,
        };
        let lim = ControlLimits::default();
        let r = handle_control(&req("POST", "/conncheck/?x=1", br#"{"ids":[]}"#), &lim);
        assert_eq!(r.status, 200);
        assert_eq!(
            r.outcome,
            ControlOutcome::Connections(ConnRequest {
                op: ConnOp::Check { ids: vec![] },
                format: ResponseFormat::Text
            })
        );
        let r = handle_control(&req("GET", "/connections/close", b""), &lim);
        assert_eq!(
            (r.status, r.body.as_str()),
            (405, "Method not allowed: GET.\n")
        );
        let r = handle_control(&req("POST", "/connections/open", b"{}"), &lim);
        assert_eq!(r.status, 404);
        let r = handle_control(&req("POST", "/refresh", b"{}"), &lim);
        assert_eq!(
            (r.status, r.body.as_str()),
            (
                400,
                "Invalid format: object must contain exactly one of 'cid' and 'channel'\n"
            )
        );
        assert_eq!(r.outcome, ControlOutcome::None);
    }

    #[test]
    fn answers_list_found_ids_in_request_order() {
        let op = ConnOp::Publish {
            ids: vec![id(B), id(A), id(B)],
            items: Vec::new(),
        };
        let result = ConnResult {
            found: vec![true, false, true],
            count: 0,
        };
        let json = answer(
            &ConnRequest {
                op: op.clone(),
                format: ResponseFormat::Json,
            },
            &result,
        );
        assert_eq!(json.status, 200);
        assert_eq!(json.content_type, "application/json");
        assert_eq!(
            json.body,
            format!("{{\"ids\":[\"{B}\"],\"message\":\"Published\"}}\n")
        );
        let text = answer(
            &ConnRequest {
                op,
                format: ResponseFormat::Text,
            },
            &result,
        );
        assert_eq!(
            (text.content_type, text.body.as_str()),
            ("text/plain", "Published\n")
        );
        let check = answer(
            &ConnRequest {
                op: ConnOp::Check {
                    ids: vec![id(A), id(B)],
                },
                format: ResponseFormat::Text,
            },
            &ConnResult {
                found: vec![false, true],
                count: 0,
            },
        );
        assert_eq!(check.body, format!("{{\"ids\":[\"{B}\"]}}\n"));
        assert_eq!(
            check.content_type, "application/json",
            "conncheck is always JSON"
        );
        let refresh = answer(
            &ConnRequest {
                op: ConnOp::Refresh {
                    ids: vec![],
                    channel: Some("c".into()),
                },
                format: ResponseFormat::Json,
            },
            &ConnResult {
                found: vec![],
                count: 3,
            },
        );
        assert_eq!(refresh.body, "{\"count\":3,\"message\":\"Refreshed\"}\n");
    }
}
