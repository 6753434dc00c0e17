//! Unit tests for the publish model, parser, control API and chunk pre-render.

use bytes::Bytes;

use super::control::*;
use super::*;

// ---------- helpers ----------

fn parse_ok(body: &str) -> Vec<PublishItem> {
    match parse_publish(body.as_bytes()) {
        Ok(items) => items,
        Err(e) => panic!("expected success for {body}: {e}"),
    }
}

fn parse_err(body: &str) -> PublishError {
    match parse_publish(body.as_bytes()) {
        Ok(items) => panic!("expected an error for {body}, got {items:?}"),
        Err(e) => e,
    }
}

/// Parse a single item given as JSON object text.
fn one(item: &str) -> PublishItem {
    let mut items = parse_ok(&format!(r#"{{"items":[{item}]}}"#));
    assert_eq!(items.len(), 1);
    items.remove(0)
}

fn one_err(item: &str) -> PublishError {
    parse_err(&format!(r#"{{"items":[{item}]}}"#))
}

fn req<'a>(method: &'a str, path: &'a str, body: &'a [u8]) -> ControlRequest<'a> {
    ControlRequest {
        method,
        path,
        accept: None,
        content_length: Some(body.len() as u64),
        chunked: false,
        body,
        head_bytes: 100,
    }
}

fn handle(r: &ControlRequest) -> ControlResponse {
    handle_control(r, &ControlLimits::default())
}

const STREAM_ITEM: &str = r#"{"channel":"c","formats":{"http-stream":{"content":"hi\n"}}}"#;

// ---------- top-level body errors ----------

#[test]
fn body_not_json() {
    let e = parse_err("{not json");
    assert_eq!(e.message, "Body is not valid JSON.");
    assert_eq!((e.item, e.field), (None, None));
    assert_eq!(parse_err("").message, "Body is not valid JSON.");
    assert_eq!(parse_err("{} trailing").message, "Body is not valid JSON.");
    assert_eq!(
        parse_publish(b"\xff\xfe{}").unwrap_err().message,
        "Body is not valid JSON."
    );
}

#[test]
fn body_not_object() {
    for body in ["[]", "1", "\"x\"", "null", "true"] {
        assert_eq!(parse_err(body).message, "Invalid format.", "{body}");
    }
}

#[test]
fn items_missing_or_wrong_type() {
    assert_eq!(
        parse_err("{}").message,
        "Invalid format: object does not contain 'items'"
    );
    for body in [r#"{"items":{}}"#, r#"{"items":"x"}"#, r#"{"items":null}"#] {
        assert_eq!(
            parse_err(body).message,
            "Invalid format: object contains 'items' with wrong type"
        );
    }
}

#[test]
fn empty_items_is_ok() {
    assert!(parse_ok(r#"{"items":[]}"#).is_empty());
}

// ---------- item fields ----------

#[test]
fn item_not_object() {
    let e = parse_err(r#"{"items":[1]}"#);
    assert_eq!(
        e.message,
        "Invalid format: publish item object is not an object (at items[0])"
    );
    assert_eq!((e.item, e.field), (Some(0), None));
}

#[test]
fn channel_required_and_typed() {
    let e = one_err(r#"{"formats":{"http-stream":{"content":"x"}}}"#);
    assert_eq!(
        e.message,
        "Invalid format: publish item object does not contain 'channel' (at items[0].channel)"
    );
    assert_eq!(e.field.as_deref(), Some("channel"));
    let e = one_err(r#"{"channel":5,"formats":{"http-stream":{"content":"x"}}}"#);
    assert_eq!(
        e.message,
        "Invalid format: publish item object contains 'channel' with wrong type (at items[0].channel)"
    );
    let e = one_err(r#"{"channel":null,"formats":{"http-stream":{"content":"x"}}}"#);
    assert!(
        e.message.contains("'channel' with wrong type"),
        "{}",
        e.message
    );
}

#[test]
fn id_prev_id() {
    let item = one(r#"{"channel":"c","id":"2","prev-id":"1","http-stream":{"content":"x"}}"#);
    assert_eq!(item.channel, "c");
    assert_eq!(item.id.as_deref(), Some("2"));
    assert_eq!(item.prev_id.as_deref(), Some("1"));
    let item = one(r#"{"channel":"c","id":null,"http-stream":{"content":"x"}}"#);
    assert_eq!((item.id, item.prev_id), (None, None));
    let e = one_err(r#"{"channel":"c","id":3,"http-stream":{"content":"x"}}"#);
    assert_eq!(
        e.message,
        "Invalid format: publish item object contains 'id' with wrong type (at items[0].id)"
    );
    let e = one_err(r#"{"channel":"c","prev-id":[],"http-stream":{"content":"x"}}"#);
    assert_eq!(e.field.as_deref(), Some("prev-id"));
    assert!(e.message.contains("contains 'prev-id' with wrong type"));
}

#[test]
fn no_seq() {
    assert!(!one(STREAM_ITEM).no_seq);
    assert!(one(r#"{"channel":"c","no-seq":true,"http-stream":{"content":"x"}}"#).no_seq);
    assert!(!one(r#"{"channel":"c","no-seq":false,"http-stream":{"content":"x"}}"#).no_seq);
    let e = one_err(r#"{"channel":"c","no-seq":"true","http-stream":{"content":"x"}}"#);
    assert_eq!(
        e.message,
        "Invalid format: publish item object contains 'no-seq' with wrong type (at items[0].no-seq)"
    );
}

#[test]
fn meta() {
    let item =
        one(r#"{"channel":"c","meta":{"sender":"u1","a":"b"},"http-stream":{"content":"x"}}"#);
    assert_eq!(
        item.meta,
        vec![
            ("a".to_string(), "b".to_string()),
            ("sender".to_string(), "u1".to_string())
        ]
    );
    assert_eq!(item.meta_get("sender"), Some("u1"));
    assert_eq!(item.meta_get("nope"), None);
    let e = one_err(r#"{"channel":"c","meta":{"k":1},"http-stream":{"content":"x"}}"#);
    assert_eq!(
        e.message,
        "Invalid format: 'meta' contains 'k' with wrong type (at items[0].meta.k)"
    );
    let e = one_err(r#"{"channel":"c","meta":["k"],"http-stream":{"content":"x"}}"#);
    assert_eq!(
        e.message,
        "Invalid format: publish item object contains 'meta' with wrong type (at items[0].meta)"
    );
}

#[test]
fn size() {
    assert_eq!(
        one(r#"{"channel":"c","size":42,"http-stream":{"content":"x"}}"#).size,
        Some(42)
    );
    assert_eq!(
        one(r#"{"channel":"c","size":"7","http-stream":{"content":"x"}}"#).size,
        Some(7)
    );
    assert_eq!(
        one(r#"{"channel":"c","size":8.0,"http-stream":{"content":"x"}}"#).size,
        Some(8)
    );
    let e = one_err(r#"{"channel":"c","size":-1,"http-stream":{"content":"x"}}"#);
    assert_eq!(
        e.message,
        "Invalid format: publish item object contains 'size' with invalid value (at items[0].size)"
    );
    let e = one_err(r#"{"channel":"c","size":"big","http-stream":{"content":"x"}}"#);
    assert!(
        e.message.contains("'size' with wrong type"),
        "{}",
        e.message
    );
    let e = one_err(r#"{"channel":"c","size":1.5,"http-stream":{"content":"x"}}"#);
    assert!(
        e.message.contains("'size' with wrong type"),
        "{}",
        e.message
    );
    let e = one_err(r#"{"channel":"c","size":true,"http-stream":{"content":"x"}}"#);
    assert!(
        e.message.contains("'size' with wrong type"),
        "{}",
        e.message
    );
    let e = one_err(r#"{"channel":"c","size":18446744073709551615,"http-stream":{"content":"x"}}"#);
    assert!(
        e.message.contains("'size' with invalid value"),
        "{}",
        e.message
    );
}

// ---------- formats placement ----------

#[test]
fn formats_top_level_and_nested_are_equivalent() {
    let nested = one(
        r#"{"channel":"c","formats":{"http-stream":{"content":"a"},"ws-message":{"content":"b"},"http-response":{"body":"c"}}}"#,
    );
    let flat = one(
        r#"{"channel":"c","http-stream":{"content":"a"},"ws-message":{"content":"b"},"http-response":{"body":"c"}}"#,
    );
    assert_eq!(nested, flat);
    assert_eq!(
        nested.http_stream.as_ref().map(|f| f.content.clone()),
        Some(Bytes::from("a"))
    );
    assert_eq!(
        nested.ws_message.as_ref().map(|f| f.content.clone()),
        Some(Bytes::from("b"))
    );
    assert_eq!(
        nested.http_response.as_ref().map(|f| f.body.clone()),
        Some(Bytes::from("c"))
    );
}

#[test]
fn formats_object_wins_over_top_level_keys() {
    let item = one(
        r#"{"channel":"c","formats":{"http-stream":{"content":"a"}},"ws-message":{"content":"b"}}"#,
    );
    assert!(item.http_stream.is_some());
    assert!(item.ws_message.is_none());
}

#[test]
fn no_formats() {
    for item in [
        r#"{"channel":"c"}"#,
        r#"{"channel":"c","formats":{}}"#,
        r#"{"channel":"c","formats":{"other":{}}}"#,
        r#"{"channel":"c","formats":null}"#,
    ] {
        let e = one_err(item);
        assert_eq!(
            e.message, "Invalid format: no formats specified (at items[0].formats)",
            "{item}"
        );
    }
    let e = one_err(r#"{"channel":"c","formats":[]}"#);
    assert_eq!(
        e.message,
        "Invalid format: publish item object contains 'formats' with wrong type (at items[0].formats)"
    );
}

#[test]
fn format_not_object() {
    let e = one_err(r#"{"channel":"c","formats":{"http-stream":"x"}}"#);
    assert_eq!(
        e.message,
        "Invalid format: 'http-stream' is not an object (at items[0].formats.http-stream)"
    );
    let e = one_err(r#"{"channel":"c","ws-message":[]}"#);
    assert_eq!(
        e.message,
        "Invalid format: 'ws-message' is not an object (at items[0].ws-message)"
    );
}

// ---------- batch rejection ----------

#[test]
fn batch_rejected_when_item_3_invalid() {
    let body = format!(
        r#"{{"items":[{STREAM_ITEM},{STREAM_ITEM},{STREAM_ITEM},{{"channel":"c","http-stream":{{}}}},{STREAM_ITEM}]}}"#
    );
    let e = parse_err(&body);
    assert_eq!(e.item, Some(3));
    assert_eq!(e.field.as_deref(), Some("http-stream"));
    assert_eq!(
        e.message,
        "Invalid format: 'http-stream' does not contain 'content' or 'content-bin' (at items[3].http-stream)"
    );
    let r = handle(&req("POST", "/publish", body.as_bytes()));
    assert_eq!(r.status, 400);
    assert_eq!(r.outcome, ControlOutcome::None);
    assert_eq!(r.body, format!("{}\n", e.message));
}

// ---------- actions ----------

#[test]
fn action_values() {
    for (text, action) in [
        ("send", Action::Send),
        ("hint", Action::Hint),
        ("close", Action::Close),
        ("refresh", Action::Refresh),
    ] {
        let item = one(&format!(
            r#"{{"channel":"c","http-stream":{{"action":"{text}","content":"x"}},"http-response":{{"action":"{text}","body":"y"}},"ws-message":{{"action":"{text}","content":"z"}}}}"#
        ));
        assert_eq!(item.http_stream.as_ref().map(|f| f.action), Some(action));
        assert_eq!(item.http_response.as_ref().map(|f| f.action), Some(action));
        assert_eq!(item.ws_message.as_ref().map(|f| f.action), Some(action));
        assert_eq!(action.as_str(), text);
    }
    // Default is send.
    assert_eq!(
        one(STREAM_ITEM).http_stream.map(|f| f.action),
        Some(Action::Send)
    );
}

#[test]
fn action_invalid_keeps_pushpin_prefix() {
    for format in ["http-stream", "http-response", "ws-message"] {
        let e = one_err(&format!(
            r#"{{"channel":"c","{format}":{{"action":"explode"}}}}"#
        ));
        assert!(e.message.starts_with("Invalid format: "), "{}", e.message);
        assert_eq!(
            e.message,
            format!("Invalid format: '{format}' contains 'action' with unknown value (at items[0].{format}.action)")
        );
        let e = one_err(&format!(r#"{{"channel":"c","{format}":{{"action":1}}}}"#));
        assert_eq!(
            e.message,
            format!("Invalid format: '{format}' contains 'action' with wrong type (at items[0].{format}.action)")
        );
    }
}

#[test]
fn non_send_actions_need_no_payload() {
    let item = one(
        r#"{"channel":"c","http-stream":{"action":"close"},"http-response":{"action":"hint","body":5}}"#,
    );
    let stream = item.http_stream.expect("stream");
    assert_eq!((stream.action, stream.content.len()), (Action::Close, 0));
    let resp = item.http_response.expect("response");
    assert_eq!(resp.action, Action::Hint);
    assert_eq!(resp.code, None);
    assert!(resp.body.is_empty());
}

// ---------- http-stream ----------

#[test]
fn stream_content_and_content_bin() {
    let item = one(r#"{"channel":"c","http-stream":{"content":"héllo"}}"#);
    assert_eq!(
        item.http_stream.map(|f| f.content),
        Some(Bytes::from("héllo"))
    );
    let item = one(r#"{"channel":"c","http-stream":{"content-bin":"AAEC/w=="}}"#);
    assert_eq!(
        item.http_stream.map(|f| f.content),
        Some(Bytes::from_static(&[0, 1, 2, 255]))
    );
    // Unpadded and wrapped base64 are accepted.
    let item = one(r#"{"channel":"c","http-stream":{"content-bin":"aGVs\nbG8"}}"#);
    assert_eq!(
        item.http_stream.map(|f| f.content),
        Some(Bytes::from("hello"))
    );
    // content-bin wins over content, as in Pushpin.
    let item = one(r#"{"channel":"c","http-stream":{"content":"a","content-bin":"Yg=="}}"#);
    assert_eq!(item.http_stream.map(|f| f.content), Some(Bytes::from("b")));
    // Empty content is valid.
    let item = one(r#"{"channel":"c","http-stream":{"content":""}}"#);
    assert_eq!(item.http_stream.map(|f| f.content), Some(Bytes::new()));
}

#[test]
fn stream_content_errors() {
    let e = one_err(r#"{"channel":"c","http-stream":{"content-bin":"@@@"}}"#);
    assert_eq!(
        e.message,
        "Invalid format: 'http-stream' contains 'content-bin' with invalid value: not valid base64 (at items[0].http-stream.content-bin)"
    );
    assert_eq!(e.field.as_deref(), Some("http-stream.content-bin"));
    let e = one_err(r#"{"channel":"c","formats":{"http-stream":{"content-bin":"a-_b"}}}"#);
    assert_eq!(e.field.as_deref(), Some("formats.http-stream.content-bin"));
    let e = one_err(r#"{"channel":"c","http-stream":{"content":1}}"#);
    assert_eq!(
        e.message,
        "Invalid format: 'http-stream' contains 'content' with wrong type (at items[0].http-stream.content)"
    );
    let e = one_err(r#"{"channel":"c","http-stream":{"content-bin":7}}"#);
    assert!(
        e.message.contains("'content-bin' with wrong type"),
        "{}",
        e.message
    );
}

#[test]
fn content_filters() {
    let item = one(
        r#"{"channel":"c","http-stream":{"content":"x","content-filters":["var-subst","build-id"]}}"#,
    );
    assert_eq!(
        item.http_stream.and_then(|f| f.content_filters),
        Some(vec!["var-subst".to_string(), "build-id".to_string()])
    );
    let item = one(r#"{"channel":"c","ws-message":{"content":"x","content-filters":[]}}"#);
    assert_eq!(
        item.ws_message.and_then(|f| f.content_filters),
        Some(vec![])
    );
    assert_eq!(
        one(STREAM_ITEM).http_stream.and_then(|f| f.content_filters),
        None
    );
    let e = one_err(r#"{"channel":"c","http-response":{"body":"x","content-filters":"a"}}"#);
    assert_eq!(
        e.message,
        "Invalid format: 'http-response' contains 'content-filters' with wrong type (at items[0].http-response.content-filters)"
    );
    let e = one_err(r#"{"channel":"c","http-stream":{"content":"x","content-filters":["a",1]}}"#);
    assert_eq!(
        e.message,
        "Invalid format: content-filters contains element with wrong type (at items[0].http-stream.content-filters[1])"
    );
}

// ---------- http-response ----------

#[test]
fn response_defaults() {
    let f = one(r#"{"channel":"c","http-response":{"body":"hi"}}"#)
        .http_response
        .expect("format");
    assert_eq!(f.action, Action::Send);
    assert_eq!(f.code, Some(200));
    assert_eq!(f.reason, None);
    assert!(f.headers.is_empty());
    assert_eq!(f.body, Bytes::from("hi"));
    assert_eq!(f.body_patch, None);
}

#[test]
fn response_code_reason() {
    let f =
        one(r#"{"channel":"c","http-response":{"code":404,"reason":"Gone Fishing","body":""}}"#)
            .http_response
            .expect("format");
    assert_eq!(
        (f.code, f.reason.as_deref()),
        (Some(404), Some("Gone Fishing"))
    );
    let f = one(r#"{"channel":"c","http-response":{"code":"201","reason":"","body":""}}"#)
        .http_response
        .expect("format");
    assert_eq!((f.code, f.reason), (Some(201), None));
    // tack: 1xx and codes outside 200-599 are refused (Pushpin takes 0-999).
    for code in ["-1", "1000", "70000", "0", "99", "100", "101", "600", "999"] {
        let e = one_err(&format!(
            r#"{{"channel":"c","http-response":{{"code":{code},"body":""}}}}"#
        ));
        assert_eq!(
            e.message,
            "Invalid format: 'http-response' contains 'code' with invalid value: not a final status code (200-599) (at items[0].http-response.code)",
            "{code}"
        );
    }
    let e = one_err(r#"{"channel":"c","http-response":{"code":"abc","body":""}}"#);
    assert_eq!(
        e.message,
        "Invalid format: 'http-response' contains 'code' with wrong type (at items[0].http-response.code)"
    );
    let e = one_err(r#"{"channel":"c","http-response":{"reason":"a\r\nX-Evil: 1","body":""}}"#);
    assert_eq!(e.field.as_deref(), Some("http-response.reason"));
    assert!(
        e.message.contains("'reason' with invalid value"),
        "{}",
        e.message
    );
    let e = one_err(r#"{"channel":"c","http-response":{"reason":3,"body":""}}"#);
    assert!(
        e.message.contains("'reason' with wrong type"),
        "{}",
        e.message
    );
}

#[test]
fn response_headers_object_and_list() {
    let f = one(r#"{"channel":"c","http-response":{"headers":{"Content-Type":"text/plain","X-A":"b"},"body":""}}"#)
        .http_response
        .expect("format");
    assert_eq!(
        f.headers,
        vec![
            ("Content-Type".to_string(), Bytes::from("text/plain")),
            ("X-A".to_string(), Bytes::from("b"))
        ]
    );
    let f = one(r#"{"channel":"c","http-response":{"headers":[["X-B","1"],["X-A","2"],["X-B","3"]],"body":""}}"#)
        .http_response
        .expect("format");
    assert_eq!(
        f.headers,
        vec![
            ("X-B".to_string(), Bytes::from("1")),
            ("X-A".to_string(), Bytes::from("2")),
            ("X-B".to_string(), Bytes::from("3"))
        ]
    );
}

#[test]
fn response_header_errors() {
    let cases = [
        (
            r#""x""#,
            "'http-response' contains 'headers' with wrong type",
            "http-response.headers",
        ),
        (
            r#"[1]"#,
            "headers contains element with wrong type",
            "http-response.headers[0]",
        ),
        (
            r#"[["a"]]"#,
            "headers contains list with wrong number of elements",
            "http-response.headers[0]",
        ),
        (
            r#"[["a","b","c"]]"#,
            "headers contains list with wrong number of elements",
            "http-response.headers[0]",
        ),
        (
            r#"[["a","b"],[1,"b"]]"#,
            "header contains name element with wrong type",
            "http-response.headers[1]",
        ),
        (
            r#"[["a",2]]"#,
            "header contains value element with wrong type",
            "http-response.headers[0]",
        ),
        (
            r#"{"X-A":1}"#,
            "headers contains 'X-A' with wrong type",
            "http-response.headers.X-A",
        ),
        (
            r#"{"Bad Name":"v"}"#,
            "headers contains 'Bad Name' with invalid name",
            "http-response.headers.Bad Name",
        ),
        (
            r#"[["X-A","v\r\nInjected: 1"]]"#,
            "headers contains 'X-A' with invalid value",
            "http-response.headers[0]",
        ),
        (
            r#"[["","v"]]"#,
            "headers contains '' with invalid name",
            "http-response.headers[0]",
        ),
    ];
    for (headers, reason, field) in cases {
        let e = one_err(&format!(
            r#"{{"channel":"c","http-response":{{"headers":{headers},"body":""}}}}"#
        ));
        assert_eq!(
            e.message,
            format!("Invalid format: {reason} (at items[0].{field})"),
            "{headers}"
        );
        assert_eq!(e.field.as_deref(), Some(field));
    }
}

#[test]
fn response_body_variants() {
    let f = one(r#"{"channel":"c","http-response":{"body-bin":"AP8="}}"#)
        .http_response
        .expect("format");
    assert_eq!(f.body, Bytes::from_static(&[0, 255]));
    // body-bin wins over body.
    let f = one(r#"{"channel":"c","http-response":{"body":"t","body-bin":"Yg=="}}"#)
        .http_response
        .expect("format");
    assert_eq!(f.body, Bytes::from("b"));
    let f = one(r#"{"channel":"c","http-response":{"body-patch":[{"op":"replace","path":"/a","value":1}]}}"#)
        .http_response
        .expect("format");
    assert!(f.body.is_empty());
    assert_eq!(
        f.body_patch,
        Some(serde_json::json!([{"op":"replace","path":"/a","value":1}]))
    );
    let e = one_err(r#"{"channel":"c","http-response":{"body-patch":{}}}"#);
    assert_eq!(
        e.message,
        "Invalid format: 'http-response' contains 'body-patch' with wrong type (at items[0].http-response.body-patch)"
    );
    let e = one_err(r#"{"channel":"c","http-response":{"code":200}}"#);
    assert_eq!(
        e.message,
        "Invalid format: 'http-response' does not contain 'body', 'body-bin', or 'body-patch' (at items[0].http-response)"
    );
    let e = one_err(r#"{"channel":"c","http-response":{"body":{}}}"#);
    assert!(
        e.message.contains("'body' with wrong type"),
        "{}",
        e.message
    );
    let e = one_err(r#"{"channel":"c","http-response":{"body-bin":"!!"}}"#);
    assert_eq!(e.field.as_deref(), Some("http-response.body-bin"));
    assert!(e.message.contains("not valid base64"), "{}", e.message);
}

// ---------- ws-message ----------

#[test]
fn ws_type_inference() {
    let f = one(r#"{"channel":"c","ws-message":{"content":"hi"}}"#)
        .ws_message
        .expect("ws");
    assert_eq!((f.kind, f.content), (WsType::Text, Bytes::from("hi")));
    let f = one(r#"{"channel":"c","ws-message":{"content-bin":"AQI="}}"#)
        .ws_message
        .expect("ws");
    assert_eq!(
        (f.kind, f.content),
        (WsType::Binary, Bytes::from_static(&[1, 2]))
    );
    let f = one(r#"{"channel":"c","ws-message":{"type":"text","content-bin":"aGk="}}"#)
        .ws_message
        .expect("ws");
    assert_eq!((f.kind, f.content), (WsType::Text, Bytes::from("hi")));
    let f = one(r#"{"channel":"c","ws-message":{"type":"binary","content":"hi"}}"#)
        .ws_message
        .expect("ws");
    assert_eq!(f.kind, WsType::Binary);
    let f = one(r#"{"channel":"c","ws-message":{"type":"ping"}}"#)
        .ws_message
        .expect("ws");
    assert_eq!((f.kind, f.content.len()), (WsType::Ping, 0));
    let f = one(r#"{"channel":"c","ws-message":{"type":"pong","content":"p"}}"#)
        .ws_message
        .expect("ws");
    assert_eq!((f.kind, f.content), (WsType::Pong, Bytes::from("p")));
}

#[test]
fn ws_errors() {
    let e = one_err(r#"{"channel":"c","ws-message":{"type":"blob","content":"x"}}"#);
    assert_eq!(
        e.message,
        "Invalid format: 'ws-message' contains 'type' with unknown value (at items[0].ws-message.type)"
    );
    for ty in ["", r#""type":"text","#, r#""type":"binary","#] {
        let e = one_err(&format!(r#"{{"channel":"c","ws-message":{{{ty}"x":1}}}}"#));
        assert_eq!(
            e.message,
            "Invalid format: 'ws-message' does not contain 'content' or 'content-bin' (at items[0].ws-message)"
        );
    }
    let e = one_err(r#"{"channel":"c","ws-message":{"content-bin":1}}"#);
    assert!(
        e.message.contains("'content-bin' with wrong type"),
        "{}",
        e.message
    );
    let e = one_err(r#"{"channel":"c","ws-message":{"content-bin":"%%%"}}"#);
    assert_eq!(e.field.as_deref(), Some("ws-message.content-bin"));
    let long = "p".repeat(126);
    let e = one_err(&format!(
        r#"{{"channel":"c","ws-message":{{"type":"ping","content":"{long}"}}}}"#
    ));
    assert!(
        e.message.contains("ping/pong payload over 125 bytes"),
        "{}",
        e.message
    );
    let ok = "p".repeat(125);
    let f = one(&format!(
        r#"{{"channel":"c","ws-message":{{"type":"ping","content":"{ok}"}}}}"#
    ))
    .ws_message
    .expect("ws");
    assert_eq!(f.content.len(), 125);
}

#[test]
fn ws_close() {
    let f = one(r#"{"channel":"c","ws-message":{"action":"close","code":4000,"reason":"bye"}}"#)
        .ws_message
        .expect("ws");
    assert_eq!(f.action, Action::Close);
    assert_eq!(
        (f.close_code, f.close_reason.as_deref()),
        (Some(4000), Some("bye"))
    );
    assert!(f.content.is_empty());
    let f = one(r#"{"channel":"c","ws-message":{"action":"close"}}"#)
        .ws_message
        .expect("ws");
    assert_eq!((f.close_code, f.close_reason), (None, None));
    // RFC 6455 §7.4: 1005 is "no code"; codes that may not be sent are refused.
    let f = one(r#"{"channel":"c","ws-message":{"action":"close","code":1005}}"#)
        .ws_message
        .expect("ws");
    assert_eq!(f.close_code, Some(1005));
    for code in ["-1", "0", "999", "1004", "1006", "1015", "2999", "5000"] {
        let e = one_err(&format!(
            r#"{{"channel":"c","ws-message":{{"action":"close","code":{code}}}}}"#
        ));
        assert_eq!(
            e.message,
            "Invalid format: 'ws-message' contains 'code' with invalid value: not a close code that may be sent (1000-1003, 1007-1014, 3000-4999, or 1005 for none) (at items[0].ws-message.code)",
            "{code}"
        );
    }
    // A text message must be UTF-8, whichever field carries it (tack: Pushpin sends it).
    let e = one_err(r#"{"channel":"c","ws-message":{"type":"text","content-bin":"/w=="}}"#);
    assert_eq!(
        e.message,
        "Invalid format: 'ws-message' contains 'content-bin' with invalid value: a text message must be UTF-8 (at items[0].ws-message.content-bin)"
    );
    let f = one(r#"{"channel":"c","ws-message":{"type":"text","content-bin":"aGk="}}"#)
        .ws_message
        .expect("ws");
    assert_eq!(f.content.as_ref(), b"hi");
    let e = one_err(r#"{"channel":"c","ws-message":{"action":"close","code":65536}}"#);
    assert!(e.message.contains("'code' with invalid value"));
    let e = one_err(r#"{"channel":"c","ws-message":{"action":"close","code":"x"}}"#);
    assert!(e.message.contains("'code' with wrong type"));
    // A long reason is cut at a UTF-8 boundary to fit a close frame.
    let reason = "é".repeat(100); // 200 bytes
    let f = one(&format!(
        r#"{{"channel":"c","ws-message":{{"action":"close","code":1000,"reason":"{reason}"}}}}"#
    ))
    .ws_message
    .expect("ws");
    let got = f.close_reason.expect("reason");
    assert_eq!(got.len(), 122);
    assert!(reason.starts_with(&got));
}

#[test]
fn hostile_keys_are_bounded_in_errors() {
    let key = format!("{}\n", "k".repeat(500));
    let body = serde_json::json!({"items":[{"channel":"c","meta":{key: 1},"http-stream":{"content":"x"}}]});
    let e = parse_publish(body.to_string().as_bytes()).unwrap_err();
    assert!(e.message.len() < 250, "{}", e.message.len());
    assert!(!e.message.contains('\n'));
}

#[test]
fn null_means_absent_for_optional_fields() {
    let item = one(
        r#"{"channel":"c","meta":null,"size":null,"no-seq":null,"http-stream":{"action":null,"content":"x","content-bin":null}}"#,
    );
    assert!(item.meta.is_empty());
    assert_eq!(item.size, None);
    assert!(!item.no_seq);
    assert_eq!(item.http_stream.map(|f| f.content), Some(Bytes::from("x")));
}

// ---------- pre-render ----------

#[test]
fn prerender() {
    assert_eq!(prerender_chunk(&Bytes::new()), None);
    assert_eq!(
        prerender_chunk(&Bytes::from("hello\n")),
        Some(Bytes::from("6\r\nhello\n\r\n"))
    );
    let big = Bytes::from(vec![b'a'; 300]);
    let chunk = prerender_chunk(&big).expect("chunk");
    assert!(chunk.starts_with(b"12c\r\naaa"));
    assert!(chunk.ends_with(b"a\r\n"));
    assert_eq!(chunk.len(), 5 + 300 + 2);
}

// ---------- control API ----------

#[test]
fn root() {
    for method in ["GET", "POST", "PUT"] {
        let r = handle(&req(method, "/", b""));
        assert_eq!(
            (r.status, r.reason, r.content_type),
            (200, "OK", "text/plain")
        );
        assert_eq!(r.body, "Pushpin API\n");
        assert_eq!(r.outcome, ControlOutcome::None);
    }
    // Root text ignores Accept: JSON (as Pushpin).
    let mut r = req("GET", "/", b"");
    r.accept = Some("application/json");
    assert_eq!(handle(&r).body, "Pushpin API\n");
}

#[test]
fn publish_success_text_and_json() {
    let body = format!(r#"{{"items":[{STREAM_ITEM}]}}"#);
    for path in ["/publish", "/publish/", "/publish?x=1"] {
        let r = handle(&req("POST", path, body.as_bytes()));
        assert_eq!(
            (r.status, r.reason, r.content_type),
            (200, "OK", "text/plain"),
            "{path}"
        );
        assert_eq!(r.body, "Published\n");
        assert!(r.headers.is_empty());
        match &r.outcome {
            ControlOutcome::Publish(items) => assert_eq!(items.len(), 1),
            other => panic!("unexpected outcome {other:?}"),
        }
    }
    let mut r = req("POST", "/publish", body.as_bytes());
    r.accept = Some("application/json");
    let resp = handle(&r);
    assert_eq!((resp.status, resp.content_type), (200, "application/json"));
    assert_eq!(resp.body, "{\"message\":\"Published\"}\n");
}

#[test]
fn publish_errors_are_400_text() {
    let cases: [(&[u8], &str); 4] = [
        (b"nope", "Body is not valid JSON.\n"),
        (b"[]", "Invalid format.\n"),
        (b"{}", "Invalid format: object does not contain 'items'\n"),
        (
            b"{\"items\":1}",
            "Invalid format: object contains 'items' with wrong type\n",
        ),
    ];
    for (body, text) in cases {
        let mut r = req("POST", "/publish", body);
        r.accept = Some("application/json");
        let resp = handle(&r);
        assert_eq!(
            (resp.status, resp.reason, resp.content_type),
            (400, "Bad Request", "text/plain")
        );
        assert_eq!(resp.body, text);
        assert_eq!(resp.outcome, ControlOutcome::None);
    }
}

#[test]
fn recover() {
    let r = handle(&req("POST", "/recover", b""));
    assert_eq!((r.status, r.content_type), (200, "text/plain"));
    assert_eq!(r.body, "Updated\n");
    assert_eq!(r.outcome, ControlOutcome::Recover);
    let mut q = req("POST", "/recover/", b"");
    q.accept = Some("application/*");
    let r = handle(&q);
    assert_eq!(
        (r.content_type, r.body.as_str()),
        ("application/json", "{\"message\":\"Updated\"}\n")
    );
    assert_eq!(r.outcome, ControlOutcome::Recover);
}

#[test]
fn method_not_allowed() {
    for (method, path) in [
        ("GET", "/publish"),
        ("PUT", "/publish/"),
        ("DELETE", "/recover"),
    ] {
        let r = handle(&req(method, path, b""));
        assert_eq!(
            (r.status, r.reason, r.content_type),
            (405, "Method Not Allowed", "text/plain")
        );
        assert_eq!(r.headers, vec![("Allow", "POST".to_string())]);
        assert_eq!(r.body, format!("Method not allowed: {method}.\n"));
        assert_eq!(r.outcome, ControlOutcome::None);
    }
}

#[test]
fn not_found() {
    for path in ["/nope", "/publish//", "/publishx", "", "/recover/x"] {
        let r = handle(&req("POST", path, b"{}"));
        assert_eq!((r.status, r.reason), (404, "Not Found"), "{path:?}");
        assert_eq!(r.body, "Not Found\n");
    }
}

#[test]
fn not_acceptable() {
    for accept in [
        "text/html",
        "image/png, application/xml",
        "application/json;q=0, text/plain;q=0",
    ] {
        let mut r = req("POST", "/publish", b"{\"items\":[]}");
        r.accept = Some(accept);
        let resp = handle(&r);
        assert_eq!(
            (resp.status, resp.reason, resp.content_type),
            (406, "Not Acceptable", "text/plain"),
            "{accept}"
        );
        assert_eq!(
            resp.body,
            "Not Acceptable. Supported formats are text/plain and application/json.\n"
        );
        assert_eq!(resp.outcome, ControlOutcome::None);
    }
    // Checked before routing, as in Pushpin.
    let mut r = req("GET", "/nope", b"");
    r.accept = Some("text/html");
    assert_eq!(handle(&r).status, 406);
}

#[test]
fn accept_negotiation() {
    use ResponseFormat::{Json, Text};
    let cases: [(Option<&str>, Option<ResponseFormat>); 18] = [
        (None, Some(Text)),
        (Some(""), Some(Text)),
        (Some("   "), Some(Text)),
        (Some("text/plain"), Some(Text)),
        (Some("text/*"), Some(Text)),
        (Some("*/*"), Some(Text)),
        (Some("*"), Some(Text)),
        (Some("application/json"), Some(Json)),
        (Some("application/*"), Some(Json)),
        (Some("Application/JSON; charset=utf-8"), Some(Json)),
        (Some("text/html, application/json"), Some(Json)),
        (Some("application/json, text/plain"), Some(Json)),
        (Some("text/plain, application/json"), Some(Text)),
        (Some("text/plain;q=0.5, application/json"), Some(Json)),
        (Some("application/json;q=0.9, */*;q=0.8"), Some(Json)),
        (Some("*/*;q=0.8, application/json;q=0.9"), Some(Json)),
        (Some("application/json;q=0, text/plain"), Some(Text)),
        (Some("text/html"), None),
    ];
    for (accept, expected) in cases {
        assert_eq!(negotiate(accept), expected, "{accept:?}");
    }
    assert_eq!(negotiate(Some("application/json;q=abc")), Some(Json));
    assert_eq!(
        negotiate(Some("text/plain;q=0.001, application/json;q=0.0001")),
        Some(Text)
    );
}

#[test]
fn length_required() {
    let limits = ControlLimits::default();
    for (method, cl, chunked) in [
        ("POST", None, false),
        ("POST", None, true),
        ("POST", Some(2), true),
        ("GET", None, true),
        ("PUT", None, false),
    ] {
        let r = precheck(method, "/publish", cl, chunked, 10, &limits).expect("refused");
        assert_eq!(
            (r.status, r.reason, r.content_type),
            (411, "Length Required", "text/plain")
        );
        assert_eq!(r.body, "Request requires Content-Length.\n");
    }
    // GET, HEAD and DELETE need no Content-Length.
    for method in ["GET", "HEAD", "DELETE"] {
        assert_eq!(precheck(method, "/", None, false, 10, &limits), None);
    }
    assert_eq!(
        precheck("POST", "/publish", Some(0), false, 10, &limits),
        None
    );
    // The same through handle_control: an empty POST /recover without Content-Length.
    let mut r = req("POST", "/recover", b"");
    r.content_length = None;
    assert_eq!(handle(&r).status, 411);
}

#[test]
fn body_too_large_is_413() {
    let limits = ControlLimits {
        max_headers_bytes: 100,
        max_body_bytes: 10,
    };
    let r = precheck("POST", "/publish", Some(11), false, 10, &limits).expect("refused");
    assert_eq!(
        (r.status, r.reason, r.content_type),
        (413, "Payload Too Large", "text/plain")
    );
    assert_eq!(r.body, "Request body too large.\n");
    assert_eq!(
        precheck("POST", "/publish", Some(10), false, 10, &limits),
        None
    );
    // A body longer than the limit handed over anyway is refused too.
    let body = [b' '; 11];
    let mut q = req("POST", "/publish", &body);
    q.content_length = Some(5);
    assert_eq!(handle_control(&q, &limits).status, 413);
    // Default limit: 1,000,000.
    let d = ControlLimits::default();
    assert_eq!((d.max_headers_bytes, d.max_body_bytes), (10_000, 1_000_000));
    assert!(precheck("POST", "/publish", Some(1_000_001), false, 10, &d).is_some());
    assert!(precheck("POST", "/publish", Some(1_000_000), false, 10, &d).is_none());
}

#[test]
fn header_too_large() {
    let limits = ControlLimits::default();
    let r = precheck("POST", "/publish", Some(1), false, 10_001, &limits).expect("refused");
    assert_eq!(
        (r.status, r.reason, r.content_type),
        (400, "Bad Request", "text/plain")
    );
    assert_eq!(r.body, "Request header too large.\n");
    assert!(precheck("POST", "/publish", Some(1), false, 10_000, &limits).is_none());
    let mut q = req("GET", "/", b"");
    q.head_bytes = 20_000;
    assert_eq!(handle(&q).body, "Request header too large.\n");
}

#[test]
fn body_exceeding_content_length() {
    let mut q = req("POST", "/publish", b"{\"items\":[]}");
    q.content_length = Some(3);
    let r = handle(&q);
    assert_eq!(
        (r.status, r.body.as_str()),
        (400, "Request body exceeded Content-Length.\n")
    );
}

#[test]
fn io_side_helpers() {
    let r = ControlResponse::bad_content_length();
    assert_eq!((r.status, r.body.as_str()), (400, "Bad Content-Length.\n"));
    let r = ControlResponse::bad_header();
    assert_eq!(
        (r.status, r.body.as_str()),
        (400, "Failed to parse request header.\n")
    );
}

#[test]
fn render_response() {
    let r = handle(&req("GET", "/publish", b""));
    let bytes = r.to_http_bytes(false, true);
    assert_eq!(
        std::str::from_utf8(&bytes).expect("utf8"),
        "HTTP/1.1 405 Method Not Allowed\r\nAllow: POST\r\nContent-Type: text/plain\r\nConnection: close\r\nContent-Length: 25\r\n\r\nMethod not allowed: GET.\n"
    );
    let r = handle(&req("HEAD", "/", b""));
    assert_eq!(
        std::str::from_utf8(&r.to_http_bytes(true, false)).expect("utf8"),
        "HTTP/1.0 200 OK\r\nContent-Type: text/plain\r\nConnection: close\r\nContent-Length: 12\r\n\r\n"
    );
}

// ---------- fuzz-style robustness ----------

/// xorshift64*: deterministic, dependency-free.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
}

const SEEDS: [&str; 6] = [
    r#"{"items":[{"channel":"c","id":"1","prev-id":"0","meta":{"sender":"u"},"size":3,"no-seq":true,"formats":{"http-stream":{"content":"x","content-filters":["a"]},"http-response":{"code":200,"reason":"OK","headers":[["A","b"]],"body-bin":"AAE="},"ws-message":{"type":"binary","content-bin":"AAE="}}}]}"#,
    r#"{"items":[{"channel":"c","http-response":{"headers":{"X":"y"},"body-patch":[{"op":"add","path":"/a","value":1}]}}]}"#,
    r#"{"items":[{"channel":"c","ws-message":{"action":"close","code":1000,"reason":"bye"}},{"channel":"d","http-stream":{"action":"hint"}}]}"#,
    r#"{"items":[{"channel":"c","ws-message":{"type":"ping","content":"p"}}]}"#,
    r#"{"items":[]}"#,
    r#"{"items":[{"channel":"c","http-stream":{"content-bin":"aGVsbG8="}}]}"#,
];

const TOKENS: [&[u8]; 16] = [
    b"{",
    b"}",
    b"[",
    b"]",
    b",",
    b":",
    b"\"",
    b"null",
    b"true",
    b"-1",
    b"1e400",
    b"\"content-bin\"",
    b"\"action\"",
    b"\\u0000",
    b"\xff",
    b"\"formats\"",
];

fn mutate(rng: &mut Rng, input: &[u8]) -> Vec<u8> {
    let mut out = input.to_vec();
    for _ in 0..=rng.below(4) {
        let at = if out.is_empty() {
            0
        } else {
            rng.below(out.len() + 1)
        };
        match rng.below(5) {
            0 if !out.is_empty() => {
                let end = (at + rng.below(8)).min(out.len());
                out.drain(at.min(end)..end);
            }
            1 => {
                let token = TOKENS[rng.below(TOKENS.len())];
                out.splice(at..at, token.iter().copied());
            }
            2 if at < out.len() => out[at] = rng.next() as u8,
            3 if at < out.len() => {
                let end = (at + rng.below(16)).min(out.len());
                let copy = out[at..end].to_vec();
                out.splice(at..at, copy);
            }
            _ => out.truncate(at),
        }
    }
    out
}

#[test]
fn fuzz_mutated_bodies_never_panic() {
    let seed: u64 = std::env::var("TACK_FUZZ_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(0x7ac4_5eed);
    let iterations: usize = std::env::var("TACK_FUZZ_ITERS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(20_000);
    let mut rng = Rng(seed | 1);
    let limits = ControlLimits::default();
    let (mut ok, mut err) = (0usize, 0usize);
    for step in 0..iterations {
        let base = SEEDS[rng.below(SEEDS.len())].as_bytes();
        let body = mutate(&mut rng, base);
        let result = std::panic::catch_unwind(|| {
            let parsed = parse_publish(&body);
            let resp = handle_control(
                &ControlRequest {
                    method: "POST",
                    path: "/publish",
                    accept: Some("application/json"),
                    content_length: Some(body.len() as u64),
                    chunked: false,
                    body: &body,
                    head_bytes: 80,
                },
                &limits,
            );
            (parsed, resp)
        });
        let Ok((parsed, resp)) = result else {
            panic!(
                "panic at seed {seed} step {step}: {:?}",
                String::from_utf8_lossy(&body)
            );
        };
        match parsed {
            Ok(items) => {
                ok += 1;
                assert_eq!(resp.status, 200);
                assert!(items.iter().all(PublishItem::has_format));
                assert_eq!(resp.outcome, ControlOutcome::Publish(items));
            }
            Err(e) => {
                err += 1;
                assert_eq!(resp.status, 400);
                assert_eq!(resp.body, format!("{}\n", e.message));
                assert!(
                    e.item.is_none() || e.message.starts_with("Invalid format: "),
                    "{}",
                    e.message
                );
            }
        }
    }
    // The mutations must exercise both outcomes, or the loop proves little.
    assert!(
        ok > iterations / 100 && err > iterations / 100,
        "ok={ok} err={err}"
    );
}

#[test]
fn deeply_nested_json_is_an_error_not_a_crash() {
    let body = format!(
        "{{\"items\":{}{}}}",
        "[".repeat(100_000),
        "]".repeat(100_000)
    );
    assert_eq!(parse_err(&body).message, "Body is not valid JSON.");
}

/// A random JSON value built from the schema's own keys, so the validator (not just the JSON
/// parser) sees type confusion at every field.
fn random_value(rng: &mut Rng, depth: usize) -> serde_json::Value {
    use serde_json::Value;
    const KEYS: [&str; 27] = [
        "channel",
        "id",
        "prev-id",
        "formats",
        "meta",
        "size",
        "no-seq",
        "http-response",
        "http-stream",
        "ws-message",
        "action",
        "code",
        "reason",
        "headers",
        "body",
        "body-bin",
        "body-patch",
        "content",
        "content-bin",
        "content-filters",
        "type",
        "items",
        "send",
        "close",
        "hint",
        "text",
        "ping",
    ];
    let leaf = |rng: &mut Rng| -> Value {
        match rng.below(9) {
            0 => Value::Null,
            1 => Value::Bool(rng.below(2) == 0),
            2 => serde_json::json!(rng.next() as i64 % 2000 - 500),
            3 => serde_json::json!(rng.below(1000) as f64 / 7.0),
            4 => Value::String("aGVsbG8=".to_string()),
            5 => Value::String("\r\n".to_string()),
            6 => Value::String("x".repeat(rng.below(200))),
            _ => Value::String(KEYS[rng.below(KEYS.len())].to_string()),
        }
    };
    if depth == 0 {
        return leaf(rng);
    }
    match rng.below(4) {
        0 => leaf(rng),
        1 => Value::Array(
            (0..rng.below(4))
                .map(|_| random_value(rng, depth - 1))
                .collect(),
        ),
        _ => Value::Object(
            (0..rng.below(6))
                .map(|_| {
                    (
                        KEYS[rng.below(KEYS.len())].to_string(),
                        random_value(rng, depth - 1),
                    )
                })
                .collect(),
        ),
    }
}

#[test]
fn fuzz_structured_items_never_panic() {
    let mut rng = Rng(0x5eed_1234_abcd_0001);
    let mut ok = 0usize;
    for step in 0..20_000 {
        let mut item = random_value(&mut rng, 4);
        // Bias towards items that get past the first checks.
        if let serde_json::Value::Object(map) = &mut item {
            if rng.below(2) == 0 {
                map.insert("channel".into(), "c".into());
            }
        }
        let body = serde_json::json!({ "items": [item] }).to_string();
        let result = std::panic::catch_unwind(|| parse_publish(body.as_bytes()));
        match result {
            Ok(Ok(items)) => {
                ok += 1;
                assert!(items.iter().all(PublishItem::has_format), "step {step}");
            }
            Ok(Err(e)) => assert!(
                e.message.starts_with("Invalid format: "),
                "step {step}: {}",
                e.message
            ),
            Err(_) => panic!("panic at step {step}: {body}"),
        }
    }
    assert!(ok > 0, "no valid item was generated");
}

#[test]
fn ids_that_could_break_a_grip_last_header_are_refused() {
    for (field, bad) in [
        ("id", r#""5\r\nX-Evil: 1""#),
        ("id", r#""a;b""#),
        ("prev-id", r#""a,b""#),
        ("prev-id", r#""\u0000""#),
    ] {
        let e = one_err(&format!(
            r#"{{"channel":"c","{field}":{bad},"formats":{{"http-stream":{{"content":"x"}}}}}}"#
        ));
        assert_eq!(
            e.message,
            format!(
                "Invalid format: '{field}' contains a control character, ',' or ';' (at items[0].{field})"
            ),
            "{bad}"
        );
    }
    let ok = one(
        r#"{"channel":"c","id":"msg-7 é","prev-id":"msg-6","formats":{"http-stream":{"content":"x"}}}"#,
    );
    assert_eq!(ok.id.as_deref(), Some("msg-7 é"));
}
