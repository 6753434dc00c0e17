//! The JSON instruction body (`Content-Type: application/grip-instruct`): `hold` and `response`.
//!
//! This only decodes and type-checks the document; `super::parse_instruction` merges it with the
//! header instructions. Error messages follow Pushpin's wording (`"<parent> contains '<key>' with
//! wrong type"`, `"<parent> does not contain '<key>'"`, ...).

use serde_json::{Map, Value};

use super::keepalive::{decode_base64_lenient, DEFAULT_KEEP_ALIVE_TIMEOUT_S};
use super::{check_channel, GripError, HoldMode};
use super::{is_valid_header_name, is_valid_header_value, is_valid_reason, ChannelSub};

/// A decoded instruction document.
#[derive(Debug, Default, PartialEq, Eq)]
pub(crate) struct JsonInstruct {
    pub hold: Option<JsonHold>,
    pub response: Option<JsonResponse>,
}

/// The `hold` object.
#[derive(Debug, PartialEq, Eq)]
pub(crate) struct JsonHold {
    pub mode: HoldMode,
    /// Without the route prefix.
    pub channels: Vec<ChannelSub>,
    pub timeout_s: Option<u32>,
    pub keep_alive: Option<JsonKeepAlive>,
    /// In key order (JSON objects are read sorted by key).
    pub meta: Vec<(String, String)>,
}

/// The `hold.keep-alive` object. `data` is `None` when neither `content` nor `content-bin` is
/// given (the header's data, if any, then stays); the timeout is always set.
#[derive(Debug, PartialEq, Eq)]
pub(crate) struct JsonKeepAlive {
    pub data: Option<Vec<u8>>,
    pub timeout_s: u32,
}

/// The `response` object.
#[derive(Debug, Default, PartialEq, Eq)]
pub(crate) struct JsonResponse {
    pub code: Option<u16>,
    /// Only a non-empty reason is kept.
    pub reason: Option<String>,
    pub headers: Vec<(String, Vec<u8>)>,
    pub body: Vec<u8>,
}

fn err(msg: impl Into<String>) -> GripError {
    GripError(msg.into())
}

fn wrong_type(parent: &str, key: &str) -> GripError {
    err(format!("{parent} contains '{key}' with wrong type"))
}

fn invalid_value(parent: &str, key: &str) -> GripError {
    err(format!("{parent} contains '{key}' with invalid value"))
}

/// An optional string member: absent or `null` is `None`, a non-string is an error.
fn opt_string<'a>(
    obj: &'a Map<String, Value>,
    parent: &str,
    key: &str,
) -> Result<Option<&'a str>, GripError> {
    match obj.get(key) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) => Ok(Some(s)),
        Some(_) => Err(wrong_type(parent, key)),
    }
}

/// An optional integer member. Integral floats count; values beyond `i64` saturate so that the
/// caller's range check reports them as invalid. `null` and non-numbers are of the wrong type.
fn opt_int(obj: &Map<String, Value>, parent: &str, key: &str) -> Result<Option<i64>, GripError> {
    let Some(v) = obj.get(key) else {
        return Ok(None);
    };
    let Value::Number(n) = v else {
        return Err(wrong_type(parent, key));
    };
    if let Some(i) = n.as_i64() {
        return Ok(Some(i));
    }
    if n.as_u64().is_some() {
        return Ok(Some(i64::MAX));
    }
    match n.as_f64() {
        Some(f) if f.is_finite() && f.fract() == 0.0 => {
            // `as` saturates for out-of-range floats.
            Ok(Some(f as i64))
        }
        _ => Err(wrong_type(parent, key)),
    }
}

/// An optional object member: absent or `null` is `None`, a non-object is an error.
fn opt_object<'a>(
    obj: &'a Map<String, Value>,
    parent: &str,
    key: &str,
) -> Result<Option<&'a Map<String, Value>>, GripError> {
    match obj.get(key) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::Object(m)) => Ok(Some(m)),
        Some(_) => Err(wrong_type(parent, key)),
    }
}

/// Decodes an instruction body.
pub(crate) fn parse_json_instruct(body: &[u8]) -> Result<JsonInstruct, GripError> {
    let doc: Value = serde_json::from_slice(body)
        .map_err(|_| err("failed to parse application/grip-instruct content as JSON"))?;
    let Value::Object(top) = doc else {
        return Err(err("instruct must be an object"));
    };
    let hold = match top.get("hold") {
        None => None,
        Some(Value::Object(h)) => Some(parse_hold(h)?),
        Some(_) => return Err(err("instruct contains 'hold' with wrong type")),
    };
    let response = match top.get("response") {
        None => None,
        Some(Value::Object(r)) => Some(parse_response(r)?),
        Some(_) => return Err(err("instruct contains 'response' with wrong type")),
    };
    Ok(JsonInstruct { hold, response })
}

fn parse_hold(h: &Map<String, Value>) -> Result<JsonHold, GripError> {
    let mode = match opt_string(h, "hold", "mode")? {
        None | Some("response") => HoldMode::Response,
        Some("stream") => HoldMode::Stream,
        Some(_) => {
            return Err(err(
                "hold 'mode' must be set to either 'response' or 'stream'",
            ))
        }
    };

    let vchannels = match h.get("channels") {
        None => return Err(err("hold does not contain 'channels'")),
        Some(Value::Array(list)) => list,
        Some(_) => return Err(wrong_type("hold", "channels")),
    };
    let channels = vchannels
        .iter()
        .map(parse_channel)
        .collect::<Result<Vec<_>, _>>()?;

    let timeout_s = match opt_int(h, "hold", "timeout")? {
        None => None,
        Some(t) => Some(u32::try_from(t).map_err(|_| invalid_value("hold", "timeout"))?),
    };

    let keep_alive = match opt_object(h, "hold", "keep-alive")? {
        None => None,
        Some(ka) => Some(parse_keep_alive(ka)?),
    };

    let mut meta = Vec::new();
    if let Some(m) = opt_object(h, "hold", "meta")? {
        for (k, v) in m {
            let Value::String(s) = v else {
                return Err(err(format!("'meta' contains '{k}' with wrong type")));
            };
            meta.push((k.clone(), s.clone()));
        }
    }

    Ok(JsonHold {
        mode,
        channels,
        timeout_s,
        keep_alive,
        meta,
    })
}

/// A channel: `{"name": ..., "prev-id": ..., "filters": [...]}`, or (tack extension) a plain
/// string naming the channel.
fn parse_channel(v: &Value) -> Result<ChannelSub, GripError> {
    let c = match v {
        Value::String(name) => ChannelSub {
            name: name.clone(),
            prev_id: None,
            filters: Vec::new(),
        },
        Value::Object(c) => {
            let name = match c.get("name") {
                None => return Err(err("channel does not contain 'name'")),
                Some(Value::String(s)) => s.clone(),
                Some(_) => return Err(wrong_type("channel", "name")),
            };
            let prev_id = opt_string(c, "channel", "prev-id")?
                .filter(|s| !s.is_empty())
                .map(str::to_owned);
            let filters = match c.get("filters") {
                None | Some(Value::Null) => Vec::new(),
                Some(Value::Array(list)) => list
                    .iter()
                    .map(|f| match f {
                        Value::String(s) => Ok(s.clone()),
                        _ => Err(err("filters contains value with wrong type")),
                    })
                    .collect::<Result<Vec<_>, _>>()?,
                Some(_) => return Err(wrong_type("channel", "filters")),
            };
            ChannelSub {
                name,
                prev_id,
                filters,
            }
        }
        _ => return Err(err("channel is not an object")),
    };
    if c.name.is_empty() {
        return Err(invalid_value("channel", "name"));
    }
    check_channel(&c)?;
    Ok(c)
}

fn parse_keep_alive(ka: &Map<String, Value>) -> Result<JsonKeepAlive, GripError> {
    let data = if ka.contains_key("content-bin") {
        let b64 = opt_string(ka, "keep-alive", "content-bin")?.unwrap_or_default();
        Some(decode_base64_lenient(b64.as_bytes()))
    } else if let Some(v) = ka.get("content") {
        match v {
            Value::String(s) => Some(s.as_bytes().to_vec()),
            _ => return Err(wrong_type("keep-alive", "content")),
        }
    } else {
        None
    };
    let timeout_s = match opt_int(ka, "keep-alive", "timeout")? {
        None => DEFAULT_KEEP_ALIVE_TIMEOUT_S,
        Some(t) => u32::try_from(t).map_err(|_| invalid_value("keep-alive", "timeout"))?,
    };
    Ok(JsonKeepAlive { data, timeout_s })
}

fn parse_response(r: &Map<String, Value>) -> Result<JsonResponse, GripError> {
    let code = match opt_int(r, "response", "code")? {
        None => None,
        Some(c) => Some(
            u16::try_from(c)
                .ok()
                .filter(|c| *c <= 999)
                .ok_or_else(|| invalid_value("response", "code"))?,
        ),
    };

    let reason = opt_string(r, "response", "reason")?
        .filter(|s| !s.is_empty())
        .map(str::to_owned);
    if let Some(reason) = &reason {
        if !is_valid_reason(reason.as_bytes()) {
            return Err(invalid_value("response", "reason"));
        }
    }

    let mut headers = Vec::new();
    match r.get("headers") {
        None => {}
        Some(Value::Array(list)) => {
            for h in list {
                let Value::Array(pair) = h else {
                    return Err(err("headers contains element with wrong type"));
                };
                let [name, value] = pair.as_slice() else {
                    return Err(err("headers contains list with wrong number of elements"));
                };
                let Value::String(name) = name else {
                    return Err(err("header contains name element with wrong type"));
                };
                let Value::String(value) = value else {
                    return Err(err("header contains value element with wrong type"));
                };
                headers.push((name.clone(), value.as_bytes().to_vec()));
            }
        }
        Some(Value::Object(m)) => {
            for (name, value) in m {
                let Value::String(value) = value else {
                    return Err(err(format!("headers contains '{name}' with wrong type")));
                };
                headers.push((name.clone(), value.as_bytes().to_vec()));
            }
        }
        Some(_) => return Err(wrong_type("response", "headers")),
    }
    for (name, value) in &headers {
        if !is_valid_header_name(name) || !is_valid_header_value(value) {
            return Err(err(format!("headers contains '{name}' with invalid value")));
        }
    }

    let body = if let Some(b64) = opt_string(r, "response", "body-bin")? {
        decode_base64_lenient(b64.as_bytes())
    } else {
        match r.get("body") {
            None | Some(Value::Null) => Vec::new(),
            Some(Value::String(s)) => s.as_bytes().to_vec(),
            Some(_) => return Err(wrong_type("response", "body")),
        }
    };

    Ok(JsonResponse {
        code,
        reason,
        headers,
        body,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(s: &str) -> Result<JsonInstruct, GripError> {
        parse_json_instruct(s.as_bytes())
    }

    fn e(s: &str) -> Result<JsonInstruct, GripError> {
        Err(GripError(s.into()))
    }

    fn ch(name: &str, prev_id: Option<&str>, filters: &[&str]) -> ChannelSub {
        ChannelSub {
            name: name.into(),
            prev_id: prev_id.map(Into::into),
            filters: filters.iter().map(|f| f.to_string()).collect(),
        }
    }

    #[test]
    fn full_document() {
        let j = parse(
            r#"{"hold":{"mode":"stream","channels":[{"name":"a","prev-id":"1","filters":["skip-self"]},"b"],
                "timeout":30,"keep-alive":{"content":"ka\n","timeout":10},"meta":{"user":"u1","b":"2"}},
               "response":{"code":202,"reason":"Fine","headers":{"X-A":"b","Content-Type":"text/plain"},"body":"hi\n"}}"#,
        )
        .unwrap();
        assert_eq!(
            j,
            JsonInstruct {
                hold: Some(JsonHold {
                    mode: HoldMode::Stream,
                    channels: vec![ch("a", Some("1"), &["skip-self"]), ch("b", None, &[])],
                    timeout_s: Some(30),
                    keep_alive: Some(JsonKeepAlive {
                        data: Some(b"ka\n".to_vec()),
                        timeout_s: 10
                    }),
                    meta: vec![("b".into(), "2".into()), ("user".into(), "u1".into())],
                }),
                response: Some(JsonResponse {
                    code: Some(202),
                    reason: Some("Fine".into()),
                    headers: vec![
                        ("Content-Type".into(), b"text/plain".to_vec()),
                        ("X-A".into(), b"b".to_vec())
                    ],
                    body: b"hi\n".to_vec(),
                }),
            }
        );
    }

    #[test]
    fn defaults() {
        let j = parse(r#"{"hold":{"channels":["x"]}}"#).unwrap();
        let h = j.hold.unwrap();
        assert_eq!(h.mode, HoldMode::Response);
        assert_eq!(h.timeout_s, None);
        assert_eq!(h.keep_alive, None);
        assert!(h.meta.is_empty());
        assert_eq!(j.response, None);
        assert_eq!(parse("{}").unwrap(), JsonInstruct::default());
        let j =
            parse(r#"{"hold":{"channels":[],"mode":null,"keep-alive":{}},"response":{}}"#).unwrap();
        assert_eq!(
            j.hold.unwrap().keep_alive,
            Some(JsonKeepAlive {
                data: None,
                timeout_s: 55
            })
        );
        assert_eq!(j.response, Some(JsonResponse::default()));
    }

    #[test]
    fn binary_fields_and_header_list() {
        let j = parse(
            r#"{"hold":{"channels":["c"],"keep-alive":{"content":"no","content-bin":"OgoK"}},
               "response":{"headers":[["A","1"],["A","2"]],"body":"no","body-bin":"AAH/"}}"#,
        )
        .unwrap();
        assert_eq!(
            j.hold.unwrap().keep_alive.unwrap().data,
            Some(b":\n\n".to_vec())
        );
        let r = j.response.unwrap();
        assert_eq!(
            r.headers,
            vec![("A".into(), b"1".to_vec()), ("A".into(), b"2".to_vec())]
        );
        assert_eq!(r.body, vec![0, 1, 255]);
        assert_eq!(r.code, None);
        // An empty reason is as good as none; integral floats are integers.
        let r = parse(r#"{"response":{"code":404.0,"reason":""}}"#)
            .unwrap()
            .response
            .unwrap();
        assert_eq!((r.code, r.reason), (Some(404), None));
    }

    #[test]
    fn document_errors() {
        let bad_json = "failed to parse application/grip-instruct content as JSON";
        assert_eq!(parse(""), e(bad_json));
        assert_eq!(parse("{"), e(bad_json));
        assert_eq!(parse_json_instruct(b"{\"a\":\"\xff\"}"), e(bad_json));
        assert_eq!(parse("[]"), e("instruct must be an object"));
        assert_eq!(parse("null"), e("instruct must be an object"));
        assert_eq!(
            parse(r#"{"hold":[]}"#),
            e("instruct contains 'hold' with wrong type")
        );
        assert_eq!(
            parse(r#"{"hold":null}"#),
            e("instruct contains 'hold' with wrong type")
        );
        assert_eq!(
            parse(r#"{"response":"x"}"#),
            e("instruct contains 'response' with wrong type")
        );
    }

    #[test]
    fn hold_errors() {
        assert_eq!(
            parse(r#"{"hold":{}}"#),
            e("hold does not contain 'channels'")
        );
        assert_eq!(
            parse(r#"{"hold":{"channels":"a"}}"#),
            e("hold contains 'channels' with wrong type")
        );
        assert_eq!(
            parse(r#"{"hold":{"channels":[],"mode":1}}"#),
            e("hold contains 'mode' with wrong type")
        );
        assert_eq!(
            parse(r#"{"hold":{"channels":[],"mode":"poll"}}"#),
            e("hold 'mode' must be set to either 'response' or 'stream'")
        );
        assert_eq!(
            parse(r#"{"hold":{"channels":[1]}}"#),
            e("channel is not an object")
        );
        assert_eq!(
            parse(r#"{"hold":{"channels":[{}]}}"#),
            e("channel does not contain 'name'")
        );
        assert_eq!(
            parse(r#"{"hold":{"channels":[{"name":3}]}}"#),
            e("channel contains 'name' with wrong type")
        );
        assert_eq!(
            parse(r#"{"hold":{"channels":[""]}}"#),
            e("channel contains 'name' with invalid value")
        );
        assert_eq!(
            parse(r#"{"hold":{"channels":[{"name":"a","prev-id":1}]}}"#),
            e("channel contains 'prev-id' with wrong type")
        );
        assert_eq!(
            parse(r#"{"hold":{"channels":[{"name":"a","filters":"x"}]}}"#),
            e("channel contains 'filters' with wrong type")
        );
        assert_eq!(
            parse(r#"{"hold":{"channels":[{"name":"a","filters":[1]}]}}"#),
            e("filters contains value with wrong type")
        );
        assert_eq!(
            parse(r#"{"hold":{"channels":[{"name":"a","filters":["1","2","3","4","5","6"]}]}}"#),
            e("too many filters for channel 'a'")
        );
        assert_eq!(
            parse(r#"{"hold":{"channels":[],"timeout":"5"}}"#),
            e("hold contains 'timeout' with wrong type")
        );
        assert_eq!(
            parse(r#"{"hold":{"channels":[],"timeout":1.5}}"#),
            e("hold contains 'timeout' with wrong type")
        );
        assert_eq!(
            parse(r#"{"hold":{"channels":[],"timeout":null}}"#),
            e("hold contains 'timeout' with wrong type")
        );
        assert_eq!(
            parse(r#"{"hold":{"channels":[],"timeout":-1}}"#),
            e("hold contains 'timeout' with invalid value")
        );
        assert_eq!(
            parse(r#"{"hold":{"channels":[],"timeout":1e300}}"#),
            e("hold contains 'timeout' with invalid value")
        );
        assert_eq!(
            parse(r#"{"hold":{"channels":[],"timeout":18446744073709551615}}"#),
            e("hold contains 'timeout' with invalid value")
        );
        assert_eq!(
            parse(r#"{"hold":{"channels":[],"keep-alive":1}}"#),
            e("hold contains 'keep-alive' with wrong type")
        );
        assert_eq!(
            parse(r#"{"hold":{"channels":[],"keep-alive":{"content":1}}}"#),
            e("keep-alive contains 'content' with wrong type")
        );
        assert_eq!(
            parse(r#"{"hold":{"channels":[],"keep-alive":{"content-bin":1}}}"#),
            e("keep-alive contains 'content-bin' with wrong type")
        );
        assert_eq!(
            parse(r#"{"hold":{"channels":[],"keep-alive":{"timeout":"1"}}}"#),
            e("keep-alive contains 'timeout' with wrong type")
        );
        assert_eq!(
            parse(r#"{"hold":{"channels":[],"keep-alive":{"timeout":-2}}}"#),
            e("keep-alive contains 'timeout' with invalid value")
        );
        assert_eq!(
            parse(r#"{"hold":{"channels":[],"meta":[]}}"#),
            e("hold contains 'meta' with wrong type")
        );
        assert_eq!(
            parse(r#"{"hold":{"channels":[],"meta":{"k":1}}}"#),
            e("'meta' contains 'k' with wrong type")
        );
    }

    #[test]
    fn response_errors() {
        assert_eq!(
            parse(r#"{"response":{"code":"200"}}"#),
            e("response contains 'code' with wrong type")
        );
        assert_eq!(
            parse(r#"{"response":{"code":1000}}"#),
            e("response contains 'code' with invalid value")
        );
        assert_eq!(
            parse(r#"{"response":{"code":-1}}"#),
            e("response contains 'code' with invalid value")
        );
        assert_eq!(
            parse(r#"{"response":{"reason":5}}"#),
            e("response contains 'reason' with wrong type")
        );
        assert_eq!(
            parse(r#"{"response":{"reason":"a\r\nX: y"}}"#),
            e("response contains 'reason' with invalid value")
        );
        assert_eq!(
            parse(r#"{"response":{"headers":"x"}}"#),
            e("response contains 'headers' with wrong type")
        );
        assert_eq!(
            parse(r#"{"response":{"headers":["x"]}}"#),
            e("headers contains element with wrong type")
        );
        assert_eq!(
            parse(r#"{"response":{"headers":[["a"]]}}"#),
            e("headers contains list with wrong number of elements")
        );
        assert_eq!(
            parse(r#"{"response":{"headers":[[1,"a"]]}}"#),
            e("header contains name element with wrong type")
        );
        assert_eq!(
            parse(r#"{"response":{"headers":[["a",1]]}}"#),
            e("header contains value element with wrong type")
        );
        assert_eq!(
            parse(r#"{"response":{"headers":{"a":1}}}"#),
            e("headers contains 'a' with wrong type")
        );
        assert_eq!(
            parse(r#"{"response":{"headers":{"a":"x\r\nSet-Cookie: evil"}}}"#),
            e("headers contains 'a' with invalid value")
        );
        assert_eq!(
            parse(r#"{"response":{"headers":[["bad name","x"]]}}"#),
            e("headers contains 'bad name' with invalid value")
        );
        assert_eq!(
            parse(r#"{"response":{"headers":{"":"x"}}}"#),
            e("headers contains '' with invalid value")
        );
        assert_eq!(
            parse(r#"{"response":{"body":1}}"#),
            e("response contains 'body' with wrong type")
        );
        assert_eq!(
            parse(r#"{"response":{"body-bin":[]}}"#),
            e("response contains 'body-bin' with wrong type")
        );
    }
}
