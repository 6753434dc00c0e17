//! Tests of the instruction parser as a whole, the published-response merge, and a
//! deterministic no-panic fuzz loop.

use super::*;

fn hs(list: &[(&str, &str)]) -> Vec<Header> {
    list.iter()
        .map(|(n, v)| Header {
            name: (*n).to_owned(),
            value: v.as_bytes().to_vec(),
        })
        .collect()
}

fn owned(list: &[(&str, &str)]) -> Vec<(String, Vec<u8>)> {
    list.iter()
        .map(|(n, v)| ((*n).to_owned(), v.as_bytes().to_vec()))
        .collect()
}

fn ch(name: &str, prev_id: Option<&str>, filters: &[&str]) -> ChannelSub {
    ChannelSub {
        name: name.into(),
        prev_id: prev_id.map(Into::into),
        filters: filters.iter().map(|f| f.to_string()).collect(),
    }
}

/// Parses a 200 OK response with the given headers and body, no prefix, 20 channels max.
fn parse(headers: &[(&str, &str)], body: &str) -> Result<Instruction, GripError> {
    parse_instruction(200, "OK", &hs(headers), body.as_bytes(), None, 20)
}

fn err(headers: &[(&str, &str)], body: &str) -> String {
    parse(headers, body).unwrap_err().0
}

const JSON: (&str, &str) = ("Content-Type", "application/grip-instruct");

// ---- detection -------------------------------------------------------------------------------

#[test]
fn is_grip_detection() {
    assert!(is_grip(&hs(&[("Grip-Hold", "response")])));
    assert!(is_grip(&hs(&[("grip-anything", "")])));
    assert!(is_grip(&hs(&[("GRIP-LINK", "<x>; rel=next")])));
    assert!(is_grip(&hs(&[(
        "Content-Type",
        "application/grip-instruct"
    )])));
    assert!(is_grip(&hs(&[(
        "content-type",
        "Application/GRIP-Instruct; charset=utf-8"
    )])));
    assert!(is_grip(&hs(&[(
        "Content-Type",
        " application/grip-instruct "
    )])));
    assert!(!is_grip(&hs(&[("Content-Type", "application/json")])));
    assert!(!is_grip(&hs(&[(
        "Content-Type",
        "application/grip-instructions"
    )])));
    assert!(!is_grip(&hs(&[("Grip", "x"), ("X-Grip-Hold", "response")])));
    assert!(!is_grip(&[]));
}

// ---- Grip-Hold -------------------------------------------------------------------------------

#[test]
fn hold_values() {
    assert_eq!(
        parse(&[("Grip-Hold", "response")], "").unwrap().hold,
        Some(HoldMode::Response)
    );
    assert_eq!(
        parse(&[("grip-hold", "stream")], "").unwrap().hold,
        Some(HoldMode::Stream)
    );
    assert_eq!(
        parse(&[("Grip-Link", "</n>; rel=next")], "").unwrap().hold,
        None
    );
    let msg = "Grip-Hold must be set to either 'response' or 'stream'";
    assert_eq!(err(&[("Grip-Hold", "Response")], ""), msg);
    assert_eq!(err(&[("Grip-Hold", "poll")], ""), msg);
    assert_eq!(err(&[("Grip-Hold", "")], ""), msg);
    // The first header counts.
    assert_eq!(
        parse(&[("Grip-Hold", "stream"), ("Grip-Hold", "bogus")], "")
            .unwrap()
            .hold,
        Some(HoldMode::Stream)
    );
}

// ---- Grip-Channel ----------------------------------------------------------------------------

#[test]
fn channels_repeat_lists_params() {
    let i = parse(
        &[
            ("Grip-Hold", "response"),
            ("Grip-Channel", "a, b; prev-id=7"),
            (
                "grip-channel",
                r#"c; filter=skip-self; filter=require-sub; prev-id="x,y""#,
            ),
        ],
        "",
    )
    .unwrap();
    assert_eq!(
        i.channels,
        vec![
            ch("a", None, &[]),
            ch("b", Some("7"), &[]),
            ch("c", Some("x,y"), &["skip-self", "require-sub"]),
        ]
    );
    assert_eq!(i.channels_dropped, 0);
}

#[test]
fn channel_header_parser() {
    assert_eq!(parse_channel_header("x").unwrap(), vec![ch("x", None, &[])]);
    assert_eq!(parse_channel_header("").unwrap(), vec![]);
    assert_eq!(
        parse_channel_header("x; PREV-ID=3; Filter=no; filter=skip-users").unwrap(),
        vec![ch("x", Some("3"), &["skip-users"])]
    );
    // An empty prev-id is no prev-id; a bare one too.
    assert_eq!(
        parse_channel_header("x; prev-id=").unwrap(),
        vec![ch("x", None, &[])]
    );
    assert_eq!(
        parse_channel_header("x; prev-id").unwrap(),
        vec![ch("x", None, &[])]
    );
    assert_eq!(
        parse_channel_header("x; filter=1; filter=2; filter=3; filter=4; filter=5").unwrap()[0]
            .filters
            .len(),
        5
    );
    assert_eq!(
        parse_channel_header("x; filter=1; filter=2; filter=3; filter=4; filter=5; filter=6"),
        Err(GripError("too many filters for channel 'x'".into()))
    );
    let failed = Err(GripError("failed to parse Grip-Channel".into()));
    assert_eq!(parse_channel_header("a,,b"), failed);
    assert_eq!(parse_channel_header(" ; prev-id=1"), failed);
    assert_eq!(parse_channel_header(r#"a; prev-id="open"#), failed);
}

#[test]
fn channel_errors_in_instruction() {
    assert_eq!(
        err(&[("Grip-Channel", "a, ,b")], ""),
        "failed to parse Grip-Channel"
    );
    assert_eq!(
        err(
            &[(
                "Grip-Channel",
                "q; filter=a; filter=b; filter=c; filter=d; filter=e; filter=f"
            )],
            ""
        ),
        "too many filters for channel 'q'"
    );
}

#[test]
fn channel_prefix_dedup_and_max() {
    let headers = hs(&[
        ("Grip-Hold", "stream"),
        ("Grip-Channel", "a, b, a; prev-id=2, c, d"),
    ]);
    let i = parse_instruction(200, "OK", &headers, b"", Some("pre-"), 3).unwrap();
    assert_eq!(
        i.channels,
        vec![
            ch("pre-a", Some("2"), &[]),
            ch("pre-b", None, &[]),
            ch("pre-c", None, &[])
        ]
    );
    assert_eq!(i.channels_dropped, 1);
    let i = parse_instruction(200, "OK", &headers, b"", Some(""), 0).unwrap();
    // Distinct names are counted.
    assert_eq!((i.channels.len(), i.channels_dropped), (0, 4));
}

// ---- Grip-Timeout ----------------------------------------------------------------------------

#[test]
fn timeout_default_floor_and_errors() {
    assert_eq!(
        parse(&[("Grip-Hold", "response")], "").unwrap().timeout_s,
        55
    );
    assert_eq!(
        parse(&[("Grip-Timeout", "120")], "").unwrap().timeout_s,
        120
    );
    assert_eq!(parse(&[("Grip-Timeout", "5")], "").unwrap().timeout_s, 5);
    assert_eq!(parse(&[("Grip-Timeout", "3")], "").unwrap().timeout_s, 5);
    assert_eq!(parse(&[("Grip-Timeout", "0")], "").unwrap().timeout_s, 5);
    assert_eq!(
        parse(&[("Grip-Timeout", " 60 ")], "").unwrap().timeout_s,
        60
    );
    assert_eq!(
        err(&[("Grip-Timeout", "-1")], ""),
        "Grip-Timeout has invalid value"
    );
    for bad in ["", "1.5", "ten", "5s", "99999999999"] {
        assert_eq!(
            err(&[("Grip-Timeout", bad)], ""),
            "failed to parse Grip-Timeout",
            "{bad}"
        );
    }
}

// ---- Grip-Keep-Alive -------------------------------------------------------------------------

#[test]
fn keep_alive_header_in_instruction() {
    let i = parse(
        &[
            ("Grip-Hold", "stream"),
            (
                "Grip-Keep-Alive",
                r":\n\n; format=cstring; timeout=20; mode=interval",
            ),
        ],
        "",
    )
    .unwrap();
    assert_eq!(
        i.keep_alive,
        Some(KeepAlive {
            data: b":\n\n".to_vec(),
            timeout_s: 20,
            mode: KeepAliveMode::Interval
        })
    );
    assert_eq!(
        parse(&[("Grip-Hold", "stream")], "").unwrap().keep_alive,
        None
    );
    assert_eq!(
        err(&[("Grip-Keep-Alive", "")], ""),
        "Grip-Keep-Alive cannot be empty"
    );
    assert_eq!(
        err(&[("Grip-Keep-Alive", r"x\q; format=cstring")], ""),
        "failed to parse Grip-Keep-Alive cstring format"
    );
    // The first header counts.
    let i = parse(
        &[("Grip-Keep-Alive", "a"), ("Grip-Keep-Alive", "b; mode=bad")],
        "",
    )
    .unwrap();
    assert_eq!(i.keep_alive.unwrap().data, b"a");
}

// ---- Grip-Set-Meta ---------------------------------------------------------------------------

#[test]
fn set_meta() {
    let i = parse(
        &[
            ("Grip-Set-Meta", "user=alice, id_format=\"%(c)s,x\""),
            ("Grip-Set-Meta", "b=2; ignored=1, user=bob, flag"),
        ],
        "",
    )
    .unwrap();
    assert_eq!(
        i.meta,
        vec![
            ("user".into(), "bob".into()),
            ("id_format".into(), "%(c)s,x".into()),
            ("b".into(), "2".into()),
            ("flag".into(), "".into()),
        ]
    );
    assert_eq!(parse(&[("Grip-Set-Meta", "")], "").unwrap().meta, vec![]);
    assert_eq!(
        err(&[("Grip-Set-Meta", "a=1,,b=2")], ""),
        "Grip-Set-Meta cannot be empty"
    );
    assert_eq!(
        err(&[("Grip-Set-Meta", "a=\"1")], ""),
        "failed to parse Grip-Set-Meta"
    );
}

// ---- Grip-Status -----------------------------------------------------------------------------

#[test]
fn status_override_and_default_reason() {
    let r = parse(&[("Grip-Status", "299 Custom Thing")], "")
        .unwrap()
        .response;
    assert_eq!((r.code, r.reason.as_str()), (299, "Custom Thing"));
    let r = parse(&[("Grip-Status", "404")], "").unwrap().response;
    assert_eq!((r.code, r.reason.as_str()), (404, "Not Found"));
    let r = parse(&[("Grip-Status", "299")], "").unwrap().response;
    assert_eq!((r.code, r.reason.as_str()), (299, "Undefined Reason"));
    let r = parse(&[("Grip-Status", "599 x")], "").unwrap().response;
    assert_eq!((r.code, r.reason.as_str()), (599, "x"));
    // tack: a code the client cannot be given as a final answer is refused (Pushpin sends it).
    for (code, what) in [
        ("0 ", "0"),
        ("999 x", "999"),
        ("100", "100"),
        ("101", "101"),
    ] {
        assert_eq!(
            err(&[("Grip-Status", code)], ""),
            format!("response code {what} is not a final status (200-599)")
        );
    }
    // 204 and 304 are fine for a long-poll (no body is sent) but cannot start a stream.
    let r = parse(
        &[
            ("Grip-Status", "204"),
            ("Grip-Hold", "response"),
            ("Grip-Channel", "c"),
        ],
        "x",
    )
    .unwrap()
    .response;
    assert_eq!(r.code, 204);
    for code in ["204", "304"] {
        assert_eq!(
            err(
                &[
                    ("Grip-Status", code),
                    ("Grip-Hold", "stream"),
                    ("Grip-Channel", "c")
                ],
                ""
            ),
            format!("response code {code} carries no body, so it cannot start a stream")
        );
    }
    // An empty Grip-Status is ignored.
    let r = parse(&[("Grip-Status", "")], "").unwrap().response;
    assert_eq!((r.code, r.reason.as_str()), (200, "OK"));
    for bad in ["1000", "-1", "abc", "20x OK", " 200 OK"] {
        assert_eq!(
            err(&[("Grip-Status", bad)], ""),
            "Grip-Status contains invalid status code",
            "{bad}"
        );
    }
    assert_eq!(
        err(&[("Grip-Status", "200 a\u{1}b")], ""),
        "Grip-Status contains invalid reason"
    );
}

#[test]
fn backend_status_and_empty_reason() {
    let i = parse_instruction(503, "", &hs(&[("Grip-Hold", "response")]), b"x", None, 20).unwrap();
    assert_eq!(
        (i.response.code, i.response.reason.as_str()),
        (503, "Service Unavailable")
    );
    let i = parse_instruction(
        201,
        "Made",
        &hs(&[("Grip-Hold", "response")]),
        b"x",
        None,
        20,
    )
    .unwrap();
    assert_eq!((i.response.code, i.response.reason.as_str()), (201, "Made"));
}

// ---- response headers / Grip-Expose-Headers --------------------------------------------------

#[test]
fn held_response_strips_grip_and_hop_by_hop() {
    let i = parse_instruction(
        200,
        "OK",
        &hs(&[
            ("Grip-Hold", "response"),
            ("Grip-Channel", "a"),
            ("Content-Type", "text/plain"),
            ("Content-Length", "5"),
            ("Connection", "keep-alive"),
            ("Keep-Alive", "timeout=5"),
            ("Transfer-Encoding", "chunked"),
            ("Proxy-Connection", "x"),
            ("TE", "trailers"),
            ("Trailer", "X"),
            ("Upgrade", "h2c"),
            ("X-Custom", "1"),
            ("x-custom", "2"),
        ]),
        b"hello",
        None,
        20,
    )
    .unwrap();
    assert_eq!(
        i.response,
        HeldResponse {
            code: 200,
            reason: "OK".into(),
            headers: owned(&[
                ("Content-Type", "text/plain"),
                ("X-Custom", "1"),
                ("x-custom", "2")
            ]),
            body: b"hello".to_vec(),
        }
    );
}

#[test]
fn expose_headers_filter() {
    let i = parse(
        &[
            ("Grip-Hold", "response"),
            ("Grip-Expose-Headers", "x-a, Content-Type"),
            ("grip-expose-headers", "Content-Length"),
            ("Content-Type", "text/plain"),
            ("Content-Length", "0"),
            ("X-A", "1"),
            ("X-B", "2"),
        ],
        "",
    )
    .unwrap();
    assert_eq!(
        i.response.headers,
        owned(&[("Content-Type", "text/plain"), ("X-A", "1")])
    );
    // An empty expose header is no filter.
    let i = parse(&[("Grip-Expose-Headers", ""), ("X-B", "2")], "").unwrap();
    assert_eq!(i.response.headers, owned(&[("X-B", "2")]));
}

// ---- Grip-Link -------------------------------------------------------------------------------

#[test]
fn links_in_instruction() {
    let i = parse(
        &[
            ("Grip-Hold", "stream"),
            (
                "Grip-Link",
                "</next?x=1>; rel=next; timeout=60, </bye>; rel=gone",
            ),
        ],
        "",
    )
    .unwrap();
    assert_eq!(
        i.next,
        Some(Link {
            uri: "/next?x=1".into(),
            timeout_s: Some(60)
        })
    );
    assert_eq!(
        i.gone,
        Some(Link {
            uri: "/bye".into(),
            timeout_s: None
        })
    );
    let i = parse(
        &[
            ("Grip-Link", "</n>; rel=next"),
            ("Grip-Link", "</p>; rel=prev"),
        ],
        "",
    )
    .unwrap();
    assert_eq!(i.next.unwrap().timeout_s, Some(120));
    assert_eq!(i.hold, None);
    assert_eq!(
        err(&[("Grip-Link", "</n>; rel=next; timeout=x")], ""),
        "failed to parse Grip-Link timeout value"
    );
}

// ---- JSON instruct ---------------------------------------------------------------------------

#[test]
fn json_instruct_observed_example() {
    // grip-spec §2: timed out after the 5 s floor with 202 Accepted, X-A: b and the body.
    let body = r#"{"hold":{"mode":"response","channels":["test"],"timeout":2},
                   "response":{"code":202,"headers":{"X-A":"b"},"body":"timed out\n"}}"#;
    let i = parse_instruction(
        200,
        "OK",
        &hs(&[JSON, ("X-Real", "dropped"), ("Content-Length", "999")]),
        body.as_bytes(),
        Some("p:"),
        20,
    )
    .unwrap();
    assert_eq!(
        i,
        Instruction {
            hold: Some(HoldMode::Response),
            channels: vec![ch("p:test", None, &[])],
            timeout_s: 5,
            keep_alive: None,
            meta: vec![],
            next: None,
            gone: None,
            response: HeldResponse {
                code: 202,
                reason: "Accepted".into(),
                headers: owned(&[("X-A", "b")]),
                body: b"timed out\n".to_vec(),
            },
            channels_dropped: 0,
            filters: None,
        }
    );
}

#[test]
fn json_instruct_defaults_and_discards_real_response() {
    let i = parse(
        &[JSON, ("X-Real", "1")],
        r#"{"hold":{"channels":[{"name":"c"}]}}"#,
    )
    .unwrap();
    assert_eq!(i.hold, Some(HoldMode::Response));
    assert_eq!(i.timeout_s, 55);
    assert_eq!(
        i.response,
        HeldResponse {
            code: 200,
            reason: "OK".into(),
            headers: vec![],
            body: vec![]
        }
    );
    // No hold at all: only the response.
    let i = parse(&[JSON], r#"{"response":{"body":"b"}}"#).unwrap();
    assert_eq!((i.hold, i.response.body.as_slice()), (None, &b"b"[..]));
    // Content-Type parameters and case do not matter.
    let i = parse(
        &[("Content-Type", "Application/Grip-Instruct; charset=utf-8")],
        r#"{"hold":{"channels":["a"]}}"#,
    )
    .unwrap();
    assert_eq!(i.channels, vec![ch("a", None, &[])]);
}

#[test]
fn json_instruct_reason_rules() {
    // No code in the JSON: the backend's (or Grip-Status') status stays.
    let i = parse_instruction(200, "Fine", &hs(&[JSON]), br#"{"response":{}}"#, None, 20).unwrap();
    assert_eq!((i.response.code, i.response.reason.as_str()), (200, "Fine"));
    let i = parse(&[JSON, ("Grip-Status", "299 Custom")], r#"{"response":{}}"#).unwrap();
    assert_eq!(
        (i.response.code, i.response.reason.as_str()),
        (299, "Custom")
    );
    // A JSON code clears the reason; a JSON reason wins.
    let i = parse(
        &[JSON, ("Grip-Status", "299 Custom")],
        r#"{"response":{"code":404}}"#,
    )
    .unwrap();
    assert_eq!(
        (i.response.code, i.response.reason.as_str()),
        (404, "Not Found")
    );
    let i = parse(&[JSON], r#"{"response":{"code":404,"reason":"Nope"}}"#).unwrap();
    assert_eq!((i.response.code, i.response.reason.as_str()), (404, "Nope"));
    let i = parse(&[JSON], r#"{"response":{"reason":"Nope"}}"#).unwrap();
    assert_eq!((i.response.code, i.response.reason.as_str()), (200, "Nope"));
}

#[test]
fn json_instruct_combines_with_headers() {
    let i = parse(
        &[
            JSON,
            ("Grip-Hold", "response"),
            ("Grip-Channel", "h"),
            ("Grip-Timeout", "100"),
            ("Grip-Keep-Alive", "hdr; mode=interval; timeout=9"),
            ("Grip-Set-Meta", "user=a, x=1"),
            ("Grip-Link", "</n>; rel=next"),
        ],
        r#"{"hold":{"mode":"stream","channels":["j"],"keep-alive":{"timeout":0},"meta":{"user":"b"}},
            "response":{"headers":[["Grip-X","1"],["Connection","close"],["X-Ok","1"]]}}"#,
    )
    .unwrap();
    assert_eq!(i.hold, Some(HoldMode::Stream));
    assert_eq!(i.channels, vec![ch("h", None, &[]), ch("j", None, &[])]);
    assert_eq!(i.timeout_s, 100);
    // JSON keep-alive without content keeps the header data and mode; its timeout (floored) wins.
    assert_eq!(
        i.keep_alive,
        Some(KeepAlive {
            data: b"hdr".to_vec(),
            timeout_s: 1,
            mode: KeepAliveMode::Interval
        })
    );
    assert_eq!(
        i.meta,
        vec![("user".into(), "b".into()), ("x".into(), "1".into())]
    );
    assert_eq!(i.next.unwrap().uri, "/n");
    assert_eq!(i.response.headers, owned(&[("X-Ok", "1")]));
}

#[test]
fn json_keep_alive_content() {
    let i = parse(
        &[JSON],
        r#"{"hold":{"mode":"stream","channels":["a"],"keep-alive":{"content-bin":"OgoK"}}}"#,
    )
    .unwrap();
    assert_eq!(
        i.keep_alive,
        Some(KeepAlive {
            data: b":\n\n".to_vec(),
            timeout_s: 55,
            mode: KeepAliveMode::Idle
        })
    );
    // A keep-alive with no data at all is no keep-alive.
    let i = parse(
        &[JSON],
        r#"{"hold":{"mode":"stream","channels":["a"],"keep-alive":{}}}"#,
    )
    .unwrap();
    assert_eq!(i.keep_alive, None);
}

#[test]
fn json_instruct_errors() {
    let e = parse_instruction(404, "Not Found", &hs(&[JSON]), b"{}", None, 20).unwrap_err();
    assert_eq!(
        e.0,
        "response code for application/grip-instruct content must be 200"
    );
    assert_eq!(
        err(&[JSON], "not json"),
        "failed to parse application/grip-instruct content as JSON"
    );
    assert_eq!(err(&[JSON], "[1]"), "instruct must be an object");
    assert_eq!(
        err(&[JSON], r#"{"hold":{"channels":["a",""]}}"#),
        "channel contains 'name' with invalid value"
    );
    // Header errors come first, as in Pushpin.
    assert_eq!(
        err(&[JSON, ("Grip-Hold", "x")], "not json"),
        "Grip-Hold must be set to either 'response' or 'stream'"
    );
    assert_eq!(GripError("m".into()).to_string(), "m");
}

#[test]
fn non_json_body_with_other_content_type_is_kept() {
    let i = parse(
        &[
            ("Grip-Hold", "stream"),
            ("Content-Type", "text/event-stream"),
        ],
        "data: hi\n\n",
    )
    .unwrap();
    assert_eq!(i.response.body, b"data: hi\n\n");
    assert_eq!(
        i.response.headers,
        owned(&[("Content-Type", "text/event-stream")])
    );
}

// ---- published response merge ----------------------------------------------------------------

fn held() -> HeldResponse {
    HeldResponse {
        code: 202,
        reason: "Accepted".into(),
        headers: owned(&[
            ("Content-Type", "text/plain"),
            ("X-Custom", "1"),
            ("X-Multi", "a"),
            ("x-multi", "b"),
        ]),
        body: b"timeout".to_vec(),
    }
}

#[test]
fn merge_headers_override_and_add() {
    let m = merge_published_response(
        &held(),
        &PublishedResponse {
            code: None,
            reason: None,
            headers: owned(&[
                ("X-Pub", "p"),
                ("X-MULTI", "c"),
                ("content-type", "application/json"),
            ]),
            body: b"{}".to_vec(),
        },
    );
    assert_eq!(
        m,
        HeldResponse {
            code: 200,
            reason: "OK".into(),
            headers: owned(&[
                ("X-Custom", "1"),
                ("X-Pub", "p"),
                ("X-MULTI", "c"),
                ("content-type", "application/json")
            ]),
            body: b"{}".to_vec(),
        }
    );
}

#[test]
fn merge_code_reason_defaults() {
    let m = merge_published_response(
        &held(),
        &PublishedResponse {
            code: Some(404),
            ..Default::default()
        },
    );
    assert_eq!(
        (m.code, m.reason.as_str(), m.body.as_slice()),
        (404, "Not Found", &b""[..])
    );
    let m = merge_published_response(
        &held(),
        &PublishedResponse {
            code: Some(299),
            reason: Some("Mine".into()),
            ..Default::default()
        },
    );
    assert_eq!((m.code, m.reason.as_str()), (299, "Mine"));
    let m = merge_published_response(
        &held(),
        &PublishedResponse {
            code: Some(299),
            reason: Some(String::new()),
            ..Default::default()
        },
    );
    assert_eq!(m.reason, "Undefined Reason");
    assert_eq!(m.headers, held().headers);
}

#[test]
fn merge_expose_headers_removes_and_grip_dropped() {
    let m = merge_published_response(
        &held(),
        &PublishedResponse {
            code: None,
            reason: None,
            headers: owned(&[
                ("Grip-Expose-Headers", "x-custom, X-Pub2"),
                ("Grip-Other", "z"),
                ("X-Pub", "1"),
                ("X-Pub2", "2"),
                ("Content-Length", "77"),
                ("Bad Name", "x"),
                ("X-Evil", "a\r\nb"),
            ]),
            body: vec![],
        },
    );
    assert_eq!(
        m.headers,
        owned(&[
            ("Content-Type", "text/plain"),
            ("X-Multi", "a"),
            ("x-multi", "b"),
            ("X-Pub", "1")
        ])
    );
}

// ---- fuzz ------------------------------------------------------------------------------------

/// xorshift64*: deterministic, no crate.
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

const ALPHABET: &[u8] = b" ;,=\"\\<>:/-_0123456789abcnxrtAZ{}[]\r\n\t\x00\xff.+";

fn mutate(rng: &mut Rng, seed: &[u8]) -> Vec<u8> {
    let mut v = seed.to_vec();
    for _ in 0..=rng.below(6) {
        match rng.below(5) {
            0 if !v.is_empty() => {
                let at = rng.below(v.len());
                v.remove(at);
            }
            1 => {
                let at = rng.below(v.len() + 1);
                v.insert(at, ALPHABET[rng.below(ALPHABET.len())]);
            }
            2 if !v.is_empty() => {
                let at = rng.below(v.len());
                v[at] = ALPHABET[rng.below(ALPHABET.len())];
            }
            3 if !v.is_empty() => {
                let at = rng.below(v.len());
                v.truncate(at);
            }
            _ => {
                let at = rng.below(v.len() + 1);
                let copy = v[..at].to_vec();
                v.extend_from_slice(&copy);
            }
        }
    }
    v
}

#[test]
fn fuzz_no_panic() {
    let header_seeds: &[(&str, &str)] = &[
        ("Grip-Hold", "stream"),
        ("Grip-Channel", r#"a; prev-id="1,2"; filter=skip-self, b"#),
        ("Grip-Timeout", "30"),
        ("Grip-Expose-Headers", "X-A, Content-Type"),
        (
            "Grip-Keep-Alive",
            r":\x41\n; format=cstring; timeout=5; mode=interval",
        ),
        ("Grip-Keep-Alive", "OgoK; format=base64"),
        ("Grip-Set-Meta", r#"user=u, id="q\"x""#),
        ("Grip-Status", "299 Custom"),
        ("Grip-Link", "</a;b,c>; rel=next; timeout=3, </g>; rel=gone"),
        ("Content-Type", "application/grip-instruct; charset=utf-8"),
        ("X-A", "1"),
    ];
    let body_seed = br#"{"hold":{"mode":"stream","channels":[{"name":"a","prev-id":"1","filters":["x"]},"b"],"timeout":3,"keep-alive":{"content-bin":"OgoK","timeout":2},"meta":{"k":"v"}},"response":{"code":202,"reason":"R","headers":[["X","y"]],"body-bin":"AAE="}}"#;
    let mut rng = Rng(0x9E37_79B9_7F4A_7C15);
    let mut ok = 0usize;
    for _ in 0..20_000 {
        let mut headers = Vec::new();
        for _ in 0..rng.below(6) {
            let (name, value) = header_seeds[rng.below(header_seeds.len())];
            headers.push(Header {
                name: name.to_owned(),
                value: mutate(&mut rng, value.as_bytes()),
            });
        }
        let body = if rng.below(2) == 0 {
            mutate(&mut rng, body_seed)
        } else {
            body_seed.to_vec()
        };
        let code = [200u16, 200, 404, 0, 999, 1000][rng.below(6)];
        let _ = is_grip(&headers);
        if let Ok(i) = parse_instruction(code, "OK", &headers, &body, Some("p"), 3) {
            ok += 1;
            assert!(i.timeout_s >= MIN_RESPONSE_TIMEOUT_S);
            assert!(i.channels.len() <= 3);
            assert!(i
                .channels
                .iter()
                .all(|c| c.name.starts_with('p') && c.name.len() > 1));
            assert!(i
                .channels
                .iter()
                .all(|c| c.filters.len() <= FILTERS_PER_CHANNEL_MAX));
            assert!(i
                .keep_alive
                .as_ref()
                .is_none_or(|k| k.timeout_s >= 1 && !k.data.is_empty()));
            assert!(!i.response.reason.is_empty());
            assert!(i
                .response
                .headers
                .iter()
                .all(|(n, _)| !n.to_ascii_lowercase().starts_with("grip-")));
            let published = PublishedResponse {
                code: Some(code.min(999)),
                reason: None,
                headers: headers
                    .iter()
                    .map(|h| (h.name.clone(), h.value.clone()))
                    .collect(),
                body: body.clone(),
            };
            let m = merge_published_response(&i.response, &published);
            assert!(!m.reason.is_empty());
        }
        if let Some(h) = headers.first() {
            let _ = parse_channel_header(&String::from_utf8_lossy(&h.value));
            let _ = parse_keep_alive_header(&h.value);
            let _ = parse_links([h.value.as_slice()]);
        }
    }
    // The mutations must leave a fair share of valid instructions, or the loop tests little.
    assert!(ok > 2_000, "only {ok} valid instructions");
}

#[test]
fn django_eventstream_headers_parse() {
    // What django-eventstream 5.3 answers an SSE request with (one Grip-Channel header, meta
    // values quoted with a comma inside the quotes).
    let i = parse(
        &[
            ("Grip-Hold", "stream"),
            (
                "Grip-Channel",
                "events-a; prev-id=5; filter=build-id; filter=skip-users, user-anonymous; filter=require-sub",
            ),
            ("Grip-Keep-Alive", "event: keep-alive\\ndata:\\n\\n; format=cstring; timeout=20"),
            ("Grip-Set-Meta", "id_format=\"a:%(events-a)s,b:%(events-b)s\", user=\"anonymous\""),
            ("Grip-Link", "</events/?link=next&recover=true>; rel=next"),
        ],
        "body",
    )
    .unwrap();
    assert_eq!(
        i.channels,
        vec![
            ch("events-a", Some("5"), &["build-id", "skip-users"]),
            ch("user-anonymous", None, &["require-sub"]),
        ]
    );
    assert_eq!(
        i.meta,
        vec![
            (
                "id_format".to_string(),
                "a:%(events-a)s,b:%(events-b)s".to_string()
            ),
            ("user".to_string(), "anonymous".to_string()),
        ]
    );
    assert_eq!(
        i.keep_alive.unwrap().data,
        b"event: keep-alive\ndata:\n\n".to_vec()
    );
}

#[test]
fn body_patch_applies_to_the_held_json_body() {
    let patch = serde_json::json!([
        {"op": "replace", "path": "/count", "value": 2},
        {"op": "add", "path": "/items/-", "value": "b"}
    ]);
    assert_eq!(
        patch_body(b"{\"items\":[\"a\"],\"count\":1,\"z\":null}\n", &patch).unwrap(),
        b"{\"count\":2,\"items\":[\"a\",\"b\"],\"z\":null}\n".to_vec()
    );
    assert_eq!(
        patch_body(b"{\"count\":1}", &patch).unwrap_err(),
        "body-patch failed: operation '/1' failed at path '/items/-': path is invalid"
    );
    assert!(patch_body(b"not json", &patch)
        .unwrap_err()
        .starts_with("held response body is not JSON"));
    assert_eq!(
        patch_body(b"\"str\"", &patch).unwrap_err(),
        "held response body is not a JSON object or array"
    );
}

#[test]
fn grip_feature_lists_what_tack_implements_and_all_pushpin_1_36_advertises() {
    let advertised: Vec<&str> = GRIP_FEATURES.split(", ").collect();
    // Every filter tack implements, and nothing else under `filter:`.
    let filters: Vec<String> = filter::Filter::ALL
        .iter()
        .map(|f| format!("filter:{}", f.name()))
        .collect();
    let mut implemented: Vec<String> = ["status", "session", "link:next", "link:gone"]
        .iter()
        .map(|s| s.to_string())
        .chain(filters)
        .collect();
    implemented.sort();
    let mut sorted: Vec<String> = advertised.iter().map(|s| s.to_string()).collect();
    sorted.sort();
    assert_eq!(sorted, implemented);
    // Each advertised filter parses as the filter it names.
    for f in advertised.iter().filter_map(|f| f.strip_prefix("filter:")) {
        assert_eq!(filter::Filter::parse(f).map(|k| k.name()), Some(f));
    }
    // What Pushpin 1.36 sends (observed on the wire), in its order.
    let pushpin_136 = "status, session, link:next, filter:skip-self, filter:skip-users, \
filter:require-sub, filter:build-id, filter:var-subst";
    for f in pushpin_136.split(", ") {
        assert!(advertised.contains(&f), "Pushpin 1.36 advertises {f}");
    }
}
