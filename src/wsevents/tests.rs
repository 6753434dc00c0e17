//! Tests for the WebSocket-over-HTTP layer: exact bytes from grip-spec §7.3, round trips,
//! batching, every response rule, header lists, and a deterministic fuzz loop.

use bytes::Bytes;

use super::*;

fn b(s: &[u8]) -> Bytes {
    Bytes::copy_from_slice(s)
}

fn enc(events: &[Event]) -> Vec<u8> {
    let mut out = Vec::new();
    encode_events(&mut out, events);
    out
}

fn close(code: u16, reason: &str) -> Event {
    Event::Close {
        code: Some(code),
        reason: b(reason.as_bytes()),
    }
}

fn no_code_close() -> Event {
    Event::Close {
        code: None,
        reason: Bytes::new(),
    }
}

fn h(name: &str, value: &str) -> (String, Vec<u8>) {
    (name.to_owned(), value.as_bytes().to_vec())
}

fn ct() -> (String, Vec<u8>) {
    h("Content-Type", CONTENT_TYPE)
}

// ---------------------------------------------------------------- encoding

#[test]
fn encodes_spec_examples_exactly() {
    assert_eq!(enc(&[Event::Text(b(b"hi"))]), b"TEXT 2\r\nhi\r\n");
    assert_eq!(enc(&[close(1000, "bye")]), b"CLOSE 5\r\n\x03\xe8bye\r\n");
    assert_eq!(enc(&[Event::Open]), b"OPEN\r\n");
    assert_eq!(enc(&[Event::Disconnect]), b"DISCONNECT\r\n");
}

#[test]
fn encodes_empty_content_without_length() {
    assert_eq!(enc(&[Event::Ping(Bytes::new())]), b"PING\r\n");
    assert_eq!(enc(&[Event::Pong(Bytes::new())]), b"PONG\r\n");
    // Pushpin builds message content in a BufferList whose empty result is a null array, so
    // empty messages go out without a length too.
    assert_eq!(enc(&[Event::Text(Bytes::new())]), b"TEXT\r\n");
    assert_eq!(enc(&[Event::Binary(Bytes::new())]), b"BINARY\r\n");
    assert_eq!(enc(&[no_code_close()]), b"CLOSE\r\n");
    // Without a code the reason cannot be sent.
    let reasonless = Event::Close {
        code: None,
        reason: b(b"ignored"),
    };
    assert_eq!(enc(&[reasonless]), b"CLOSE\r\n");
}

#[test]
fn encodes_lengths_in_lower_case_hex() {
    let payload = vec![b'x'; 26];
    let mut expected = b"BINARY 1a\r\n".to_vec();
    expected.extend_from_slice(&payload);
    expected.extend_from_slice(b"\r\n");
    assert_eq!(enc(&[Event::Binary(b(&payload))]), expected);

    let big = vec![0u8; 0x2_00ff];
    let out = enc(&[Event::Text(b(&big))]);
    assert!(out.starts_with(b"TEXT 200ff\r\n"));
    assert_eq!(out.len(), 12 + 0x2_00ff + 2);
}

#[test]
fn encodes_concatenated_events_and_payload_bytes_verbatim() {
    let out = enc(&[
        Event::Open,
        Event::Ping(b(b"p")),
        Event::Binary(b(b"\r\n\0")),
        close(1001, ""),
    ]);
    assert_eq!(
        out,
        b"OPEN\r\nPING 1\r\np\r\nBINARY 3\r\n\r\n\0\r\nCLOSE 2\r\n\x03\xe9\r\n"
    );
}

#[test]
fn encoded_len_matches_encoding() {
    let events = [
        Event::Open,
        Event::Text(b(b"hello")),
        Event::Binary(b(&[7; 300])),
        Event::Ping(Bytes::new()),
        Event::Pong(b(b"z")),
        close(4000, "reason"),
        no_code_close(),
        Event::Disconnect,
    ];
    for ev in &events {
        assert_eq!(
            ev.encoded_len(),
            enc(std::slice::from_ref(ev)).len(),
            "{ev:?}"
        );
    }
    let mut out = b"prefix".to_vec();
    encode_events(&mut out, &events);
    assert!(out.starts_with(b"prefix"));
    assert_eq!(
        out.len(),
        6 + events.iter().map(Event::encoded_len).sum::<usize>()
    );
}

// ---------------------------------------------------------------- decoding

#[test]
fn decodes_spec_examples() {
    assert_eq!(
        decode_events(b"TEXT 2\r\nhi\r\n").unwrap(),
        vec![Event::Text(b(b"hi"))]
    );
    assert_eq!(
        decode_events(b"CLOSE 5\r\n\x03\xe8bye\r\n").unwrap(),
        vec![close(1000, "bye")]
    );
    assert_eq!(decode_events(b"OPEN\r\n").unwrap(), vec![Event::Open]);
    assert_eq!(decode_events(b"").unwrap(), vec![]);
}

#[test]
fn decodes_any_case_hex_and_optional_lengths() {
    let payload = vec![b'a'; 0x1a];
    let mut body = b"TEXT 1A\r\n".to_vec();
    body.extend_from_slice(&payload);
    body.extend_from_slice(b"\r\nBINARY 0\r\n\r\nTEXT\r\nPING\r\nPONG 00001\r\nq\r\n");
    assert_eq!(
        decode_events(&body).unwrap(),
        vec![
            Event::Text(b(&payload)),
            Event::Binary(Bytes::new()),
            Event::Text(Bytes::new()),
            Event::Ping(Bytes::new()),
            Event::Pong(b(b"q")),
        ]
    );
}

#[test]
fn decodes_close_variants() {
    assert_eq!(
        decode_events(b"CLOSE\r\nCLOSE 0\r\n\r\nCLOSE 1\r\n\x03\r\nCLOSE 2\r\n\x0f\xa0\r\n")
            .unwrap(),
        vec![
            no_code_close(),
            no_code_close(),
            no_code_close(),
            close(4000, ""),
        ]
    );
}

#[test]
fn decode_skips_unknown_and_wrong_case_types_and_ignores_content_of_open() {
    assert_eq!(
        decode_events(b"FOO\r\nBAR 3\r\nxyz\r\ntext 2\r\nhi\r\n\r\nOPEN 1\r\nx\r\nDISCONNECT\r\n")
            .unwrap(),
        vec![Event::Open, Event::Disconnect]
    );
}

#[test]
fn decode_rejects_malformed_bodies() {
    let cases: [(&[u8], EventError); 11] = [
        (b"OPEN", EventError::MissingLineEnd { offset: 0 }),
        (b"OPEN\n", EventError::MissingLineEnd { offset: 0 }),
        (b"OPEN\r\nTEXT", EventError::MissingLineEnd { offset: 6 }),
        (b"TEXT \r\n\r\n", EventError::BadLength { offset: 5 }),
        (b"TEXT 2x\r\nhi\r\n", EventError::BadLength { offset: 5 }),
        (b"TEXT -1\r\n", EventError::BadLength { offset: 5 }),
        (b"TEXT  2\r\nhi\r\n", EventError::BadLength { offset: 5 }),
        (b"TEXT 123456789\r\n", EventError::BadLength { offset: 5 }),
        (b"TEXT 5\r\nhi\r\n", EventError::Truncated { offset: 8 }),
        (
            b"TEXT 2\r\nhiXX",
            EventError::MissingContentEnd { offset: 10 },
        ),
        (
            b"TEXT 2\r\nhi",
            EventError::MissingContentEnd { offset: 10 },
        ),
    ];
    for (body, err) in cases {
        assert_eq!(
            decode_events(body),
            Err(err),
            "{:?}",
            String::from_utf8_lossy(body)
        );
    }
}

#[test]
fn decode_bounds_the_body() {
    let mut body = Vec::new();
    while body.len() < RESPONSE_BODY_MAX {
        body.extend_from_slice(b"PING\r\n");
    }
    body.truncate(RESPONSE_BODY_MAX - RESPONSE_BODY_MAX % 6);
    assert_eq!(decode_events(&body).unwrap().len(), RESPONSE_BODY_MAX / 6);
    let mut over = vec![b'\r'; RESPONSE_BODY_MAX + 1];
    over[1] = b'\n';
    assert_eq!(
        decode_events(&over),
        Err(EventError::TooLarge {
            len: RESPONSE_BODY_MAX + 1
        })
    );
    assert_eq!(
        decode_events_shared(&Bytes::from(over)),
        Err(EventError::TooLarge {
            len: RESPONSE_BODY_MAX + 1
        })
    );
}

#[test]
fn decode_shared_slices_the_body() {
    let body = Bytes::from_static(b"TEXT 5\r\nhello\r\n");
    let events = decode_events_shared(&body).unwrap();
    let Event::Text(t) = &events[0] else {
        panic!("not text: {events:?}")
    };
    assert_eq!(t, &b"hello"[..]);
    assert_eq!(t.as_ptr(), body[8..].as_ptr());
}

#[test]
fn round_trips() {
    let events = vec![
        Event::Open,
        Event::Text(b("héllo".as_bytes())),
        Event::Binary(b(b"TEXT 2\r\nhi\r\n")),
        Event::Binary(b(&(0..=255).collect::<Vec<u8>>())),
        Event::Ping(Bytes::new()),
        Event::Ping(b(b"p")),
        Event::Pong(Bytes::new()),
        Event::Text(Bytes::new()),
        close(1000, "bye"),
        close(0, ""),
        no_code_close(),
        Event::Disconnect,
    ];
    assert_eq!(decode_events(&enc(&events)).unwrap(), events);
}

// ---------------------------------------------------------------- batching

fn text(n: usize) -> Event {
    Event::Text(b(&vec![b'a'; n]))
}

#[test]
fn batches_whole_messages_until_the_byte_budget_is_reached() {
    let mut q = OutQueue::new(10, 16, false);
    for _ in 0..5 {
        q.push(text(4)).unwrap();
    }
    assert_eq!((q.len(), q.queued_bytes()), (5, 20));
    let mut out = Vec::new();
    // 0 < 10, 4 < 10, 8 < 10: three taken, the last one crossing the budget (as Pushpin).
    assert_eq!(q.take_batch(&mut out), 3);
    assert_eq!(
        out,
        b"TEXT 4\r\naaaa\r\nTEXT 4\r\naaaa\r\nTEXT 4\r\naaaa\r\n"
    );
    assert_eq!((q.len(), q.queued_bytes()), (2, 8));
    out.clear();
    assert_eq!(q.take_batch(&mut out), 2);
    assert_eq!(out, b"TEXT 4\r\naaaa\r\nTEXT 4\r\naaaa\r\n");
    assert!(q.is_empty());
    out.clear();
    assert_eq!(q.take_batch(&mut out), 0);
    assert!(out.is_empty());
}

#[test]
fn a_message_larger_than_the_budget_goes_alone() {
    let mut q = OutQueue::new(REQUEST_CONTENT_MAX, 8, false);
    q.push(text(REQUEST_CONTENT_MAX + 5)).unwrap();
    q.push(text(1)).unwrap();
    let mut out = Vec::new();
    assert_eq!(q.take_batch(&mut out), 1);
    assert_eq!(out.len(), text(REQUEST_CONTENT_MAX + 5).encoded_len());
    assert!(out.starts_with(b"TEXT 30d45\r\n"));
    assert_eq!(q.len(), 1);
}

#[test]
fn close_follows_the_messages_whatever_their_size_and_ends_the_batch() {
    let mut q = OutQueue::new(4, 16, false);
    q.push(text(4)).unwrap();
    q.push(close(1000, "")).unwrap();
    q.push(text(1)).unwrap();
    let mut out = Vec::new();
    assert_eq!(q.take_batch(&mut out), 2);
    assert_eq!(out, b"TEXT 4\r\naaaa\r\nCLOSE 2\r\n\x03\xe8\r\n");
    out.clear();
    assert_eq!(q.take_batch(&mut out), 1);
    assert_eq!(out, b"TEXT 1\r\na\r\n");
}

#[test]
fn open_and_disconnect_go_alone() {
    let mut q = OutQueue::new(100, 16, false);
    q.push(Event::Ping(Bytes::new())).unwrap();
    q.push(Event::Disconnect).unwrap();
    q.push(Event::Open).unwrap();
    q.push(Event::Pong(b(b"x"))).unwrap();
    let mut batches = Vec::new();
    loop {
        let mut out = Vec::new();
        let n = q.take_batch(&mut out);
        if n == 0 {
            break;
        }
        batches.push((n, out));
    }
    assert_eq!(
        batches,
        vec![
            (1, b"PING\r\n".to_vec()),
            (1, b"DISCONNECT\r\n".to_vec()),
            (1, b"OPEN\r\n".to_vec()),
            (1, b"PONG 1\r\nx\r\n".to_vec()),
        ]
    );
}

#[test]
fn one_event_sends_one_event_per_request() {
    let mut q = OutQueue::new(REQUEST_CONTENT_MAX, 16, true);
    q.push(text(1)).unwrap();
    q.push(Event::Binary(b(b"bb"))).unwrap();
    q.push(close(1000, "x")).unwrap();
    let mut outs = Vec::new();
    for _ in 0..3 {
        let mut out = Vec::new();
        assert_eq!(q.take_batch(&mut out), 1);
        outs.push(out);
    }
    assert_eq!(
        outs,
        vec![
            b"TEXT 1\r\na\r\n".to_vec(),
            b"BINARY 2\r\nbb\r\n".to_vec(),
            b"CLOSE 3\r\n\x03\xe8x\r\n".to_vec(),
        ]
    );
    assert!(q.is_empty());
}

#[test]
fn queue_refuses_when_full_and_hands_the_event_back() {
    let mut q = OutQueue::new(100, 2, false);
    q.push(text(1)).unwrap();
    q.push(text(2)).unwrap();
    assert_eq!(q.push(text(3)), Err(text(3)));
    assert_eq!(q.len(), 2);
    let mut out = Vec::new();
    assert_eq!(q.take_batch(&mut out), 2);
    // The batch in flight still counts until its reply says how much was taken.
    assert_eq!(q.push(text(3)), Err(text(3)));
    q.accept(None).unwrap();
    q.push(text(3)).unwrap();
    q.clear();
    assert!(q.is_empty());
    assert_eq!(q.queued_bytes(), 0);
}

// ---------------------------------------------------------------- request head

#[test]
fn request_headers_in_pushpin_order() {
    let meta = vec![
        ("User".to_owned(), "alice".to_owned()),
        ("Bad Name".to_owned(), "x".to_owned()),
        ("Inject".to_owned(), "a\r\nX-Evil: 1".to_owned()),
        ("Room".to_owned(), "7\tb".to_owned()),
    ];
    let got = request_headers("0a1b-cid", &meta, 42);
    let want: Vec<(String, String)> = [
        ("Accept", "application/websocket-events"),
        ("Connection-Id", "0a1b-cid"),
        ("Content-Type", "application/websocket-events"),
        ("Content-Length", "42"),
        ("Meta-User", "alice"),
        ("Meta-Room", "7\tb"),
    ]
    .iter()
    .map(|(n, v)| (n.to_string(), v.to_string()))
    .collect();
    assert_eq!(got, want);
    assert_eq!(request_headers("c", &[], 0).len(), 4);
}

#[test]
fn stripped_request_headers() {
    for name in [
        "Connection",
        "keep-alive",
        "Transfer-Encoding",
        "TE",
        "Trailer",
        "Proxy-Connection",
        "Upgrade",
        "Expect",
        "Accept",
        "Accept-Encoding",
        "Content-Encoding",
        "Connection-Id",
        "CONTENT-LENGTH",
        "Content-Type",
        "Sec-WebSocket-Extensions",
        "Meta-User",
        "meta-x",
        "META-",
    ] {
        assert!(
            is_stripped_request_header(name),
            "{name} should be stripped"
        );
    }
    for name in [
        "Cookie",
        "Sec-WebSocket-Key",
        "Sec-WebSocket-Version",
        "Sec-WebSocket-Protocol",
        "Origin",
        "Host",
        "Accept-Language",
        "Metadata",
        "Meta",
        "Grip-Sig",
        "HTTP2-Settings",
        "",
    ] {
        assert!(!is_stripped_request_header(name), "{name} should be kept");
    }
}

#[test]
fn connection_ids_are_uuid_v4() {
    assert_eq!(
        connection_id([0; 16]),
        "00000000-0000-4000-8000-000000000000"
    );
    assert_eq!(
        connection_id([0xff; 16]),
        "ffffffff-ffff-4fff-bfff-ffffffffffff"
    );
    let seq: [u8; 16] = core::array::from_fn(|i| (i as u8) * 17);
    assert_eq!(connection_id(seq), "00112233-4455-4677-8899-aabbccddeeff");
}

// ---------------------------------------------------------------- interpret_reply

fn ok(phase: SessionPhase, headers: &[(String, Vec<u8>)], body: &[u8]) -> BackendReply {
    interpret_reply(phase, 200, "OK", headers, body).unwrap()
}

fn protocol_err(phase: SessionPhase, headers: &[(String, Vec<u8>)], body: &[u8]) -> String {
    match interpret_reply(phase, 200, "OK", headers, body) {
        Err(ReplyError::Protocol(m)) => m,
        other => panic!("expected a protocol error, got {other:?}"),
    }
}

#[test]
fn accepting_reply() {
    let headers = vec![
        ct(),
        h("Content-Length", "6"),
        h("Sec-WebSocket-Extensions", "grip"),
        h("Set-Meta-User", "alice"),
        h("Keep-Alive-Interval", "5"),
        h("X-Custom", "1"),
        h("Connection", "keep-alive"),
        h("Sec-WebSocket-Protocol", "chat"),
        h("Sec-WebSocket-Accept", "bogus"),
        h("Transfer-Encoding", "chunked"),
    ];
    let reply = ok(SessionPhase::Opening, &headers, b"OPEN\r\nTEXT 2\r\nhi\r\n");
    assert_eq!(
        reply,
        BackendReply {
            events: vec![Event::Open, Event::Text(b(b"hi"))],
            set_meta: vec![("User".to_owned(), Some("alice".to_owned()))],
            keep_alive_interval_s: Some(20),
            keep_alive_off: false,
            grip: Some("m:".to_owned()),
            accept_headers: vec![h("X-Custom", "1"), h("Sec-WebSocket-Protocol", "chat")],
            content_bytes_accepted: None,
        }
    );
    assert!(reply.accepted());
}

#[test]
fn accepting_reply_without_grip() {
    let reply = ok(SessionPhase::OpeningDeferred, &[ct()], b"OPEN\r\n");
    assert_eq!(reply.events, vec![Event::Open]);
    assert_eq!(reply.grip, None);
    assert!(reply.accept_headers.is_empty());
    assert_eq!(reply.keep_alive_interval_s, None);
    assert!(!reply.keep_alive_off);
}

#[test]
fn rejection_while_opening_is_relayed() {
    let body = vec![b'x'; REJECT_BODY_MAX + 10];
    let headers = vec![
        h("Content-Type", "text/plain"),
        h("Content-Length", "100010"),
        h("Connection", "close"),
        h("WWW-Authenticate", "Basic"),
    ];
    for phase in [SessionPhase::Opening, SessionPhase::OpeningDeferred] {
        let err = interpret_reply(phase, 403, "Forbidden", &headers, &body).unwrap_err();
        assert_eq!(
            err,
            ReplyError::Rejected {
                status: 403,
                reason: "Forbidden".to_owned(),
                headers: vec![
                    h("Content-Type", "text/plain"),
                    h("WWW-Authenticate", "Basic")
                ],
                body: b(&body[..REJECT_BODY_MAX]),
            }
        );
    }
}

#[test]
fn wrong_content_type_is_a_rejection_even_with_200() {
    for ctype in [
        "text/plain",
        "application/websocket-events; charset=utf-8",
        "Application/WebSocket-Events",
    ] {
        let err = interpret_reply(
            SessionPhase::Opening,
            200,
            "OK",
            &[h("Content-Type", ctype)],
            b"OPEN\r\n",
        )
        .unwrap_err();
        assert!(
            matches!(err, ReplyError::Rejected { status: 200, .. }),
            "{ctype}: {err:?}"
        );
    }
    let err = interpret_reply(SessionPhase::Opening, 200, "OK", &[], b"OPEN\r\n").unwrap_err();
    assert!(matches!(err, ReplyError::Rejected { status: 200, .. }));
    // Surrounding whitespace is not part of the value.
    let reply = ok(
        SessionPhase::Opening,
        &[h("content-type", " application/websocket-events ")],
        b"OPEN\r\n",
    );
    assert!(reply.accepted());
}

#[test]
fn bad_status_once_open_is_an_error() {
    let err = interpret_reply(SessionPhase::Open, 500, "Oops", &[ct()], b"").unwrap_err();
    assert!(matches!(err, ReplyError::Protocol(_)), "{err:?}");
    let err = interpret_reply(SessionPhase::Open, 200, "OK", &[], b"").unwrap_err();
    assert!(matches!(err, ReplyError::Protocol(_)), "{err:?}");
}

#[test]
fn deferred_accept_needs_keep_alive() {
    let reply = ok(
        SessionPhase::Opening,
        &[ct(), h("Keep-Alive-Interval", "30")],
        b"",
    );
    assert!(reply.events.is_empty());
    assert!(!reply.accepted());
    assert_eq!(reply.keep_alive_interval_s, Some(30));
    assert!(reply.accept_headers.is_empty());
    assert_eq!(reply.grip, None);

    protocol_err(SessionPhase::Opening, &[ct()], b"");
    protocol_err(
        SessionPhase::Opening,
        &[ct(), h("Keep-Alive-Interval", "0")],
        b"",
    );
    // After a deferral keep-alive is on, so an empty reply may defer again…
    assert!(ok(SessionPhase::OpeningDeferred, &[ct()], b"")
        .events
        .is_empty());
    // …unless it turns keep-alive off.
    protocol_err(
        SessionPhase::OpeningDeferred,
        &[ct(), h("Keep-Alive-Interval", "none")],
        b"",
    );
}

#[test]
fn first_reply_must_begin_with_open() {
    protocol_err(SessionPhase::Opening, &[ct()], b"TEXT 2\r\nhi\r\nOPEN\r\n");
    // An unknown event counts as the first one, as in Pushpin.
    protocol_err(SessionPhase::Opening, &[ct()], b"HELLO\r\nOPEN\r\n");
    protocol_err(
        SessionPhase::Opening,
        &[ct(), h("Keep-Alive-Interval", "30")],
        b"DISCONNECT\r\n",
    );
}

#[test]
fn keep_alive_interval_values() {
    let cases = [
        ("5", Some(20), false),
        ("20", Some(20), false),
        ("45", Some(45), false),
        (" 30 ", Some(30), false),
        ("+25", Some(25), false),
        ("0", None, true),
        ("-5", None, true),
        ("abc", None, true),
        ("", None, true),
        ("99999999999", None, true),
        ("1.5", None, true),
    ];
    for (value, interval, off) in cases {
        let reply = ok(
            SessionPhase::Open,
            &[ct(), h("Keep-Alive-Interval", value)],
            b"",
        );
        assert_eq!(
            (reply.keep_alive_interval_s, reply.keep_alive_off),
            (interval, off),
            "{value:?}"
        );
    }
    // Only the first Keep-Alive-Interval counts.
    let reply = ok(
        SessionPhase::Open,
        &[
            ct(),
            h("keep-alive-interval", "60"),
            h("Keep-Alive-Interval", "x"),
        ],
        b"",
    );
    assert_eq!(reply.keep_alive_interval_s, Some(60));
}

#[test]
fn set_meta_headers() {
    let reply = ok(
        SessionPhase::Open,
        &[
            ct(),
            h("Set-Meta-User", "bob"),
            h("set-meta-room", "7"),
            h("Set-Meta-Gone", ""),
            h("Set-Meta-", "nameless"),
            h("Set-Metadata", "no"),
        ],
        b"",
    );
    assert_eq!(
        reply.set_meta,
        vec![
            ("User".to_owned(), Some("bob".to_owned())),
            ("room".to_owned(), Some("7".to_owned())),
            ("Gone".to_owned(), None),
        ]
    );
}

#[test]
fn oversized_body_is_an_error_in_every_phase() {
    let body = vec![b' '; RESPONSE_BODY_MAX + 1];
    for phase in [
        SessionPhase::Opening,
        SessionPhase::OpeningDeferred,
        SessionPhase::Open,
    ] {
        let err = interpret_reply(phase, 200, "OK", &[ct()], &body).unwrap_err();
        assert!(matches!(err, ReplyError::Protocol(_)), "{phase:?}");
        // Even a rejection is not relayed once the body is over the limit.
        let err = interpret_reply(phase, 403, "No", &[], &body).unwrap_err();
        assert!(matches!(err, ReplyError::Protocol(_)), "{phase:?}");
    }
}

#[test]
fn malformed_body_is_a_protocol_error() {
    let msg = protocol_err(SessionPhase::Open, &[ct()], b"TEXT 5\r\nhi\r\n");
    assert_eq!(
        msg,
        "websocket-events: content at byte 8 runs past the end of the body"
    );
    protocol_err(SessionPhase::Opening, &[ct()], b"OPEN");
}

#[test]
fn close_and_disconnect_end_the_event_list() {
    let reply = ok(
        SessionPhase::Open,
        &[ct()],
        b"TEXT 1\r\na\r\nCLOSE 2\r\n\x03\xe8\r\nTEXT 1\r\nb\r\n",
    );
    assert_eq!(reply.events, vec![Event::Text(b(b"a")), close(1000, "")]);
    let reply = ok(
        SessionPhase::Open,
        &[ct()],
        b"PING\r\nDISCONNECT\r\nTEXT 1\r\nb\r\n",
    );
    assert_eq!(
        reply.events,
        vec![Event::Ping(Bytes::new()), Event::Disconnect]
    );
}

#[test]
fn a_second_open_disconnects() {
    let reply = ok(
        SessionPhase::Open,
        &[ct()],
        b"TEXT 1\r\na\r\nOPEN\r\nTEXT 1\r\nb\r\n",
    );
    assert_eq!(reply.events, vec![Event::Text(b(b"a")), Event::Disconnect]);
    let reply = ok(
        SessionPhase::Opening,
        &[ct()],
        b"OPEN\r\nTEXT 1\r\na\r\nOPEN\r\nTEXT 1\r\nb\r\n",
    );
    assert_eq!(
        reply.events,
        vec![Event::Open, Event::Text(b(b"a")), Event::Disconnect]
    );
    assert!(reply.accepted());
}

#[test]
fn open_phase_reply_carries_no_handshake_data() {
    let reply = ok(
        SessionPhase::Open,
        &[ct(), h("Sec-WebSocket-Extensions", "grip"), h("X-A", "1")],
        b"TEXT 2\r\nhi\r\n",
    );
    assert_eq!(reply.events, vec![Event::Text(b(b"hi"))]);
    assert_eq!(reply.grip, None);
    assert!(reply.accept_headers.is_empty());
    assert!(!reply.accepted());
    // Unknown events are skipped once open.
    assert_eq!(
        ok(SessionPhase::Open, &[ct()], b"NOPE\r\nPONG\r\n").events,
        vec![Event::Pong(Bytes::new())]
    );
}

#[test]
fn grip_extension_parsing() {
    let ext = |values: &[&str]| {
        let headers: Vec<_> = values
            .iter()
            .map(|v| h("Sec-WebSocket-Extensions", v))
            .collect();
        parse_grip_extension(&headers)
    };
    let some = |s: &str| Some(s.to_owned());
    assert_eq!(ext(&["grip"]), some("m:"));
    assert_eq!(ext(&["grip; message-prefix=\"\""]), some(""));
    assert_eq!(ext(&["grip; message-prefix"]), some(""));
    assert_eq!(ext(&["grip; message-prefix=foo"]), some("foo"));
    assert_eq!(ext(&["grip ; message-prefix = x ; other=1"]), some("x"));
    assert_eq!(
        ext(&["grip;message-prefix=\"a\\\"b;c\" junk; z"]),
        some("a\"b;c")
    );
    assert_eq!(ext(&["grip; foo; message-prefix=p; bar=\"q\""]), some("p"));
    assert_eq!(
        ext(&["grip; message-prefix=a; message-prefix=b"]),
        some("b")
    );
    assert_eq!(ext(&["grip; other=1"]), some("m:"));
    assert_eq!(ext(&["grip;"]), some("m:"));
    assert_eq!(
        ext(&["permessage-deflate", "grip; message-prefix=_"]),
        some("_")
    );
    // Malformed parameters: the extension counts as absent.
    assert_eq!(ext(&["grip; message-prefix="]), None);
    assert_eq!(ext(&["grip; message-prefix=\"abc"]), None);
    assert_eq!(ext(&["grip; message-prefix=\"abc\\"]), None);
    // Values are not split on commas, and names are case-sensitive.
    assert_eq!(ext(&["permessage-deflate, grip"]), None);
    assert_eq!(ext(&["Grip"]), None);
    assert_eq!(ext(&["gripx"]), None);
    assert_eq!(ext(&[]), None);
    // The first grip value wins even when a later one is valid.
    assert_eq!(ext(&["grip; message-prefix=", "grip"]), None);
    assert_eq!(parse_grip_extension(&[h("X-Other", "grip")]), None);
}

#[test]
fn grip_prefix_from_an_accepting_reply() {
    let reply = ok(
        SessionPhase::Opening,
        &[
            ct(),
            h("sec-websocket-extensions", "grip; message-prefix=\"\""),
        ],
        b"OPEN\r\n",
    );
    assert_eq!(reply.grip.as_deref(), Some(""));
    assert!(reply.accept_headers.is_empty());
}

#[test]
fn meta_updates() {
    let mut meta = vec![("User".to_owned(), "a".to_owned())];
    let dropped = apply_set_meta(
        &mut meta,
        &[
            ("user".to_owned(), Some("b".to_owned())),
            ("Room".to_owned(), Some("1".to_owned())),
            ("Bad".to_owned(), Some("x\ny".to_owned())),
            ("Room".to_owned(), None),
            ("Gone".to_owned(), Some(String::new())),
            ("Lang".to_owned(), Some("fr".to_owned())),
        ],
    );
    assert_eq!(dropped, 1);
    assert_eq!(
        meta,
        vec![
            ("user".to_owned(), "b".to_owned()),
            ("Lang".to_owned(), "fr".to_owned()),
        ]
    );

    let mut meta = Vec::new();
    let many: Vec<_> = (0..META_ENTRIES_MAX + 3)
        .map(|i| (format!("K{i}"), Some("v".to_owned())))
        .collect();
    assert_eq!(apply_set_meta(&mut meta, &many), 3);
    assert_eq!(meta.len(), META_ENTRIES_MAX);
    // Replacing an existing entry still works at the bound.
    assert_eq!(
        apply_set_meta(&mut meta, &[("k0".to_owned(), Some("w".to_owned()))]),
        0
    );
    assert_eq!(meta.len(), META_ENTRIES_MAX);
    assert_eq!(meta.last(), Some(&("k0".to_owned(), "w".to_owned())));
}

// ---------------------------------------------------------------- fuzz-style

/// xorshift64*: deterministic, dependency-free.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
}

fn random_event(rng: &mut Rng) -> Event {
    let payload = |rng: &mut Rng| {
        let len = [0, 1, 2, 5, 17, 300][rng.below(6)];
        let bytes: Vec<u8> = (0..len)
            .map(|_| b"ab\r\n \x00\xff0"[rng.below(8)])
            .collect();
        Bytes::from(bytes)
    };
    match rng.below(9) {
        0 => Event::Open,
        1 => Event::Text(payload(rng)),
        2 => Event::Binary(payload(rng)),
        3 => Event::Ping(payload(rng)),
        4 => Event::Pong(payload(rng)),
        5 => Event::Close {
            code: Some(rng.next() as u16),
            reason: payload(rng),
        },
        6 => no_code_close(),
        7 => Event::Disconnect,
        _ => Event::Text(payload(rng)),
    }
}

fn mutate(rng: &mut Rng, body: &mut Vec<u8>) {
    const ALPHABET: &[u8] = b"TEXTOPENCLOSEPINGBINARY 0123456789abcdefABCDEF\r\n\x00\xff";
    for _ in 0..=rng.below(3) {
        let len = body.len();
        match rng.below(5) {
            0 if len > 0 => body[rng.below(len)] = ALPHABET[rng.below(ALPHABET.len())],
            1 => body.insert(rng.below(len + 1), ALPHABET[rng.below(ALPHABET.len())]),
            2 if len > 0 => {
                body.remove(rng.below(len));
            }
            3 => body.truncate(rng.below(len + 1)),
            _ if len > 0 => {
                let from = rng.below(len);
                let to = from + rng.below(len - from + 1);
                let chunk = body[from..to].to_vec();
                let at = rng.below(body.len() + 1);
                body.splice(at..at, chunk);
            }
            _ => {}
        }
    }
}

#[test]
fn fuzz_decode_and_interpret_never_panic() {
    let seed = std::env::var("TACK_FUZZ_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(0x5eed_u64);
    let iterations = std::env::var("TACK_FUZZ_ITERS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(20_000);
    let mut rng = Rng(seed | 1);
    let mut decoded_ok = 0;
    for step in 0..iterations {
        let events: Vec<Event> = (0..rng.below(6)).map(|_| random_event(&mut rng)).collect();
        let clean = enc(&events);
        // A clean encoding always round-trips.
        assert_eq!(
            decode_events(&clean).as_ref(),
            Ok(&events),
            "seed {seed} step {step}"
        );
        let mut body = if rng.below(4) == 0 {
            (0..rng.below(64))
                .map(|_| b"TEXT 1\r\nOPEN\r\n\x00z"[rng.below(16)])
                .collect()
        } else {
            clean
        };
        mutate(&mut rng, &mut body);
        if let Ok(decoded) = decode_events(&body) {
            decoded_ok += 1;
            // Decoded events are canonical: encoding them and decoding again is a fixed point.
            assert_eq!(
                decode_events(&enc(&decoded)).as_ref(),
                Ok(&decoded),
                "seed {seed} step {step}"
            );
        }
        for phase in [
            SessionPhase::Opening,
            SessionPhase::OpeningDeferred,
            SessionPhase::Open,
        ] {
            if let Ok(reply) = interpret_reply(phase, 200, "OK", &[ct()], &body) {
                let ends = reply
                    .events
                    .iter()
                    .position(|e| matches!(e, Event::Close { .. } | Event::Disconnect));
                assert!(
                    ends.is_none_or(|i| i + 1 == reply.events.len()),
                    "seed {seed} step {step}"
                );
            }
        }
    }
    // The mutations must leave a fair share of bodies valid, or the loop tests little.
    assert!(
        decoded_ok > iterations / 10,
        "only {decoded_ok} valid bodies"
    );
}

#[test]
fn interpret_reply_shared_slices_the_body() {
    let body = Bytes::from_static(b"OPEN\r\nBINARY 3\r\nabc\r\n");
    let reply = interpret_reply_shared(SessionPhase::Opening, 200, "OK", &[ct()], &body).unwrap();
    let Some(Event::Binary(bin)) = reply.events.get(1) else {
        panic!("no binary event: {reply:?}")
    };
    assert_eq!(bin.as_ptr(), body[16..].as_ptr());
    let rejected = interpret_reply_shared(SessionPhase::Opening, 404, "Not Found", &[], &body);
    assert_eq!(
        rejected,
        Err(ReplyError::Rejected {
            status: 404,
            reason: "Not Found".to_owned(),
            headers: vec![],
            body: body.clone(),
        })
    );
}

// ---- Content-Bytes-Accepted (Pushpin 1.41) ---------------------------------------------------

fn text_ev(s: &str) -> Event {
    Event::Text(Bytes::copy_from_slice(s.as_bytes()))
}

#[test]
fn partly_accepted_content_is_replayed_first() {
    // Pushpin's own vector (websocketoverhttptest `replay`), paraphrased.
    let mut q = OutQueue::new(REQUEST_CONTENT_MAX, 16, false);
    q.push(text_ev("[foo][hello")).unwrap();
    let mut body = Vec::new();
    q.take_batch(&mut body);
    assert_eq!(body, b"TEXT b\r\n[foo][hello\r\n");
    assert_eq!(q.replayed(), 0);
    q.accept(Some(5)).unwrap();
    // The tail waits, but is no reason for a request by itself.
    assert!(!q.has_new());
    q.push(text_ev(" world]")).unwrap();
    assert!(q.has_new());
    let mut body = Vec::new();
    q.take_batch(&mut body);
    assert_eq!(body, b"TEXT 6\r\n[hello\r\nTEXT 7\r\n world]\r\n");
    assert_eq!(q.replayed(), 6);
    q.accept(None).unwrap();
    assert!(q.is_empty() && !q.has_new());
}

#[test]
fn accepting_too_much_or_all_but_the_close_is_an_error() {
    let mut q = OutQueue::new(REQUEST_CONTENT_MAX, 16, false);
    q.push(text_ev("abc")).unwrap();
    q.take_batch(&mut Vec::new());
    assert_eq!(
        q.accept(Some(4)),
        Err("Content-Bytes-Accepted 4 is more than the 3 bytes offered".into())
    );
    q.push(text_ev("ab")).unwrap();
    q.push(Event::Close {
        code: Some(1000),
        reason: Bytes::from_static(b"x"),
    })
    .unwrap();
    q.take_batch(&mut Vec::new());
    assert_eq!(
        q.accept(Some(2)),
        Err("Content-Bytes-Accepted took the messages but not the close".into())
    );
    // Less than the messages: the rest and the close go again.
    q.push(text_ev("ab")).unwrap();
    q.push(Event::Close {
        code: Some(1000),
        reason: Bytes::new(),
    })
    .unwrap();
    q.take_batch(&mut Vec::new());
    q.accept(Some(1)).unwrap();
    assert!(q.has_close());
    let mut body = Vec::new();
    q.take_batch(&mut body);
    assert_eq!(body, b"TEXT 1\r\nb\r\nCLOSE 2\r\n\x03\xe8\r\n");
    // All of it, the close included: nothing left.
    q.accept(Some(3)).unwrap();
    assert!(q.is_empty());
}

#[test]
fn the_batch_in_flight_counts_against_the_queue_bound() {
    let mut q = OutQueue::new(REQUEST_CONTENT_MAX, 2, false);
    q.push(text_ev("a")).unwrap();
    q.push(text_ev("b")).unwrap();
    q.take_batch(&mut Vec::new());
    // Both are in flight and may come back: no room for a third.
    assert!(q.push(text_ev("c")).is_err());
    q.accept(Some(0)).unwrap();
    assert_eq!(q.len(), 2);
    // A close without a code put back with a partly taken request still makes a request.
    let mut q = OutQueue::new(REQUEST_CONTENT_MAX, 8, false);
    q.push(text_ev("hello")).unwrap();
    q.push(Event::Close {
        code: None,
        reason: Bytes::new(),
    })
    .unwrap();
    q.take_batch(&mut Vec::new());
    q.accept(Some(2)).unwrap();
    assert!(q.has_close() && q.has_new());
}
