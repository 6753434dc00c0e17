use super::*;

fn h(name: &str, value: &str) -> Header {
    Header {
        name: name.to_string(),
        value: value.as_bytes().to_vec(),
    }
}

fn rule(prefix: &str, ptr: &str, param: Option<&str>) -> Rule {
    Rule {
        domain: "example.com".into(),
        path_prefix: prefix.into(),
        sid_ptr: ptr.into(),
        json_param: param.map(str::to_string),
    }
}

fn s(a: &str, b: &str) -> (String, String) {
    (a.to_string(), b.to_string())
}

#[test]
fn the_research_scenarios_response_headers_parse() {
    let r = parse_response(
        &[
            h("Grip-Session-Id", "abc"),
            h("grip-session-detect", "path-prefix=/api/; sid-ptr=/sid"),
            h("Grip-Last", "test; last-id=1"),
        ],
        "example.com",
    );
    assert_eq!(r.sid.as_deref(), Some("abc"));
    assert_eq!(r.rules, [rule("/api/", "/sid", None)]);
    assert_eq!(r.last_ids, [s("test", "1")]);
    assert!(!r.is_empty());
    assert!(parse_response(&[h("Grip-Hold", "response")], "a").is_empty());
}

#[test]
fn detect_headers_take_lists_quotes_and_drop_incomplete_entries() {
    let r = parse_response(
        &[
            h(
                "Grip-Session-Detect",
                r#"path-prefix="/a,b"; sid-ptr=/x, sid-ptr=/only, path-prefix=/p; sid-ptr=/s; json-param=d"#,
            ),
            h(
                "Grip-Session-Detect",
                "path-prefix=/p; sid-ptr=/s; json-param=d",
            ),
            h(
                "Grip-Session-Detect",
                "path-prefix=/unterminated; sid-ptr=\"/x",
            ),
        ],
        "example.com",
    );
    assert_eq!(
        r.rules,
        [rule("/a,b", "/x", None), rule("/p", "/s", Some("d"))],
        "the second detect header repeats a rule (kept once); an unterminated quote is dropped"
    );
    assert_eq!(r.sid, None);
}

#[test]
fn only_the_first_usable_session_id_counts() {
    let r = parse_response(
        &[h("Grip-Session-Id", " one "), h("Grip-Session-Id", "two")],
        "d",
    );
    assert_eq!(r.sid.as_deref(), Some("one"));
    assert_eq!(parse_response(&[h("Grip-Session-Id", "")], "d").sid, None);
    let long = "x".repeat(SID_BYTES_MAX + 1);
    assert_eq!(
        parse_response(&[h("Grip-Session-Id", &long)], "d").sid,
        None
    );
    assert!(sid_is_usable(&"x".repeat(SID_BYTES_MAX)));
    assert!(!sid_is_usable("a\tb") && !sid_is_usable("a\u{7f}"));
}

#[test]
fn grip_last_lists_merge_and_skip_entries_without_an_id() {
    let r = parse_response(
        &[
            h("Grip-Last", "a; last-id=1, b; last-id=\"2\""),
            h("Grip-Last", "a; last-id=3, c, ; last-id=9"),
        ],
        "d",
    );
    assert_eq!(r.last_ids, [s("b", "2"), s("a", "3")]);
}

#[test]
fn domains_are_lowercase_without_port() {
    assert_eq!(normalize_domain("Example.COM:8080"), "example.com");
    assert_eq!(normalize_domain(" [::1]:80 "), "[::1]");
    assert_eq!(normalize_domain("a"), "a");
}

#[test]
fn rules_match_host_and_a_raw_path_prefix_without_the_query() {
    let r = rule("/api", "/sid", None);
    assert!(r.applies("example.com", "/api/poll"));
    assert!(r.applies("example.com", "/apix"), "raw prefix, as Pushpin");
    assert!(r.applies("example.com", "/api?x=1"));
    assert!(!r.applies("example.com", "/other/api"));
    assert!(!r.applies("example.com", "/API/poll"), "case-sensitive");
    assert!(!r.applies("other.com", "/api/poll"));
    assert!(!rule("/api/", "/sid", None).applies("example.com", "/x?/api/"));
}

#[test]
fn session_ids_come_from_json_bodies_by_pointer() {
    let rules = [rule("/", "/sid", None)];
    assert_eq!(detect(&rules, br#"{"sid":"abc"}"#).as_deref(), Some("abc"));
    assert_eq!(detect(&rules, br#"{"sid":5}"#), None, "must be a string");
    assert_eq!(detect(&rules, br#"{"x":"abc"}"#), None);
    assert_eq!(detect(&rules, b""), None, "no body (a GET)");
    assert_eq!(detect(&rules, b"sid=abc"), None, "not JSON");
    assert_eq!(
        detect(&rules, br#""abc""#),
        None,
        "top level must be a container"
    );
    // RFC 6901: escapes and array indexes.
    let nested = br#"{"a/b":{"m~n":["x",{"id":"deep"}]}}"#;
    assert_eq!(
        detect(&[rule("/", "/a~1b/m~0n/1/id", None)], nested).as_deref(),
        Some("deep")
    );
    assert_eq!(
        detect(&[rule("/", "/0", None)], br#"["first"]"#).as_deref(),
        Some("first")
    );
    assert_eq!(
        detect(&[rule("/", "sid", None)], br#"{"sid":"abc"}"#),
        None,
        "no leading /"
    );
    assert_eq!(detect(&[rule("/", "", None)], br#"{"sid":"abc"}"#), None);
}

#[test]
fn the_first_rule_that_finds_a_string_wins() {
    let rules = [
        rule("/", "/nope", None),
        rule("/", "/b", None),
        rule("/", "/a", None),
    ];
    assert_eq!(
        detect(&rules, br#"{"a":"A","b":"B"}"#).as_deref(),
        Some("B")
    );
}

#[test]
fn only_the_first_ten_thousand_bytes_are_read() {
    let rules = [rule("/", "/sid", None)];
    let pad = " ".repeat(DETECT_BODY_MAX - 11);
    let fits = format!(r#"{pad}{{"sid":"a"}}"#);
    assert_eq!(fits.len(), DETECT_BODY_MAX);
    assert_eq!(detect(&rules, fits.as_bytes()).as_deref(), Some("a"));
    let cut = format!(r#"{pad} {{"sid":"a"}}"#);
    assert_eq!(detect(&rules, cut.as_bytes()), None);
    // A form parameter early in a long body is still found.
    let form = format!("d=%7B%22sid%22%3A%22f%22%7D&pad={}", "x".repeat(20_000));
    assert_eq!(
        detect(&[rule("/", "/sid", Some("d"))], form.as_bytes()).as_deref(),
        Some("f")
    );
}

#[test]
fn form_parameters_are_percent_decoded_but_plus_is_not_a_space() {
    let rules = [rule("/", "/sid", Some("d"))];
    assert_eq!(
        detect(&rules, b"x=1&d=%7B%22sid%22%3A%22abc%22%7D").as_deref(),
        Some("abc")
    );
    assert_eq!(
        detect(&rules, b"d=%7B%22sid%22%3A%22a+b%22%7D").as_deref(),
        Some("a+b")
    );
    assert_eq!(
        detect(&rules, br#"{"sid":"abc"}"#),
        None,
        "no such parameter"
    );
    assert_eq!(
        form_value(b"a=1&%64=2&d=3", b"d").as_deref(),
        Some(&b"2"[..])
    );
    assert_eq!(form_value(b"d", b"d").as_deref(), Some(&b""[..]));
    assert_eq!(form_value(b"d=%zz%4", b"d").as_deref(), Some(&b"%zz%4"[..]));
    assert_eq!(form_value(b"", b"d"), None);
}

#[test]
fn request_lines_name_the_session_and_its_channels_without_the_prefix() {
    assert_eq!(
        request_lines("abc", &[s("test", "1")], None),
        ["Grip-Session-Id: abc\r\n", "Grip-Last: test; last-id=1\r\n"]
    );
    assert_eq!(
        request_lines("zzz", &[], Some("p.")),
        ["Grip-Session-Id: zzz\r\n"]
    );
    assert_eq!(
        request_lines(
            "s",
            &[s("p.a", "1"), s("b", "2"), s("p.c", "x;y")],
            Some("p.")
        ),
        [
            "Grip-Session-Id: s\r\n",
            "Grip-Last: a; last-id=1\r\n",
            "Grip-Last: b; last-id=2\r\n"
        ],
        "an id that would break the header is left out"
    );
    assert_eq!(prefixed(vec![s("a", "1")], Some("p.")), [s("p.a", "1")]);
    assert_eq!(prefixed(vec![s("a", "1")], None), [s("a", "1")]);
}

fn store(max: usize, ttl: u64, rules: usize) -> SessionStore {
    SessionStore::new(StoreLimits {
        sessions_max: max,
        ttl_ms: ttl,
        rules_max: rules,
    })
}

#[test]
fn the_store_replays_the_research_scenario() {
    let mut st = store(10, 1000, 10);
    assert_eq!(st.add_rules(&[rule("/api/", "/sid", None)]), 0);
    st.create_or_update("abc", &[s("test", "1")], 0);
    let rules = st.rules_for("example.com", "/api/poll");
    assert_eq!(detect(&rules, br#"{"sid":"abc"}"#).as_deref(), Some("abc"));
    assert_eq!(st.last_ids("abc", 10), Some(vec![s("test", "1")]));
    assert!(st.update_existing("abc", "test", "2", 20));
    assert_eq!(st.last_ids("abc", 30), Some(vec![s("test", "2")]));
    assert!(
        !st.update_existing("zzz", "test", "2", 30),
        "unknown sessions are not created"
    );
    assert_eq!(st.last_ids("zzz", 30), None);
    assert!(st.rules_for("other.com", "/api/poll").is_empty());
    assert!(st.rules_for("example.com", "/other").is_empty());
    assert_eq!(st.take_removed(), Removed::default());
}

#[test]
fn merging_keeps_other_channels() {
    let mut st = store(10, 1000, 10);
    st.create_or_update("s", &[s("a", "1"), s("b", "1")], 0);
    st.create_or_update("s", &[s("a", "2")], 1);
    st.create_or_update("s", &[], 2);
    assert_eq!(st.last_ids("s", 3), Some(vec![s("b", "1"), s("a", "2")]));
    assert_eq!(st.len(), 1);
}

#[test]
fn rules_are_deduplicated_and_refused_past_the_bound() {
    let mut st = store(10, 1000, 2);
    assert_eq!(
        st.add_rules(&[rule("/a", "/s", None), rule("/a", "/s", None)]),
        0
    );
    assert_eq!(
        st.add_rules(&[rule("/b", "/s", None), rule("/c", "/s", None)]),
        1
    );
    assert_eq!(st.rules_len(), 2);
    assert_eq!(
        st.add_rules(&[rule("/a", "/s", None)]),
        0,
        "known rules are not refused"
    );
    // Several rules apply in the order stored.
    st = store(10, 1000, 10);
    st.add_rules(&[rule("/", "/x", None), rule("/a", "/y", None)]);
    let found = st.rules_for("example.com", "/a/b");
    assert_eq!(found.len(), 2);
    assert_eq!(found[0].sid_ptr, "/x");
}

#[test]
fn sessions_expire_after_the_ttl_since_their_last_use() {
    let mut st = store(10, 100, 1);
    st.create_or_update("a", &[s("c", "1")], 0);
    st.create_or_update("b", &[], 0);
    assert!(st.last_ids("a", 99).is_some(), "a use restarts the ttl");
    assert!(st.update_existing("a", "c", "2", 150));
    assert_eq!(st.len(), 1, "b expired (swept from the front)");
    assert_eq!(
        st.take_removed(),
        Removed {
            evicted: 0,
            expired: 1
        }
    );
    assert_eq!(st.last_ids("a", 249), Some(vec![s("c", "2")]));
    assert_eq!(st.last_ids("a", 349), None);
    assert!(!st.update_existing("a", "c", "3", 349));
    assert_eq!(
        st.take_removed(),
        Removed {
            evicted: 0,
            expired: 1
        }
    );
    assert!(st.is_empty());
    // An expired session is created afresh, without its old ids.
    st.create_or_update("a", &[], 1000);
    assert_eq!(st.last_ids("a", 1001), Some(vec![]));
}

#[test]
fn the_least_recently_used_session_is_evicted_when_full() {
    let mut st = store(2, 10_000, 1);
    st.create_or_update("a", &[], 0);
    st.create_or_update("b", &[], 1);
    assert!(
        st.last_ids("a", 2).is_some(),
        "a is now the most recently used"
    );
    st.create_or_update("c", &[], 3);
    assert_eq!(st.len(), 2);
    assert_eq!(st.last_ids("b", 4), None, "b was evicted");
    assert!(st.last_ids("a", 4).is_some() && st.last_ids("c", 4).is_some());
    assert_eq!(
        st.take_removed(),
        Removed {
            evicted: 1,
            expired: 0
        }
    );
    assert_eq!(st.take_removed(), Removed::default());
}

#[test]
fn a_session_keeps_a_bounded_number_of_channels() {
    let mut st = store(1, 10_000, 1);
    for i in 0..CHANNELS_PER_SESSION_MAX + 5 {
        st.create_or_update("s", &[(format!("c{i}"), i.to_string())], 0);
    }
    assert!(st.update_existing("s", "c10", "new", 1));
    let ids = st.last_ids("s", 2).unwrap();
    assert_eq!(ids.len(), CHANNELS_PER_SESSION_MAX);
    assert_eq!(ids[0].0, "c5", "the least recently updated went first");
    assert_eq!(ids.last(), Some(&s("c10", "new")));
}

/// A seeded walk over the store's operations against a plain model (no bounds reached
/// except the ones the walk drives into): same answers, bounds never exceeded.
#[test]
fn the_store_agrees_with_a_model_under_churn() {
    let mut seed: u64 = 0x5e55_1011;
    let mut next = move |n: u64| {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        seed % n
    };
    let max = 8;
    let ttl = 50;
    let mut st = store(max, ttl, 4);
    // Model: (sid, last use, ids), least recently used first.
    type Ids = Vec<(String, String)>;
    let mut model: Vec<(String, u64, Ids)> = Vec::new();
    let mut now = 0;
    for step in 0..5000 {
        now += next(5);
        model.retain(|(_, t, _)| now - *t < ttl);
        let sid = format!("s{}", next(12));
        let ch = format!("c{}", next(3));
        let id = step.to_string();
        match next(3) {
            0 => {
                st.create_or_update(&sid, &[(ch.clone(), id.clone())], now);
                match model.iter().position(|(s, _, _)| *s == sid) {
                    Some(i) => {
                        let mut e = model.remove(i);
                        e.1 = now;
                        set(&mut e.2, &ch, &id);
                        model.push(e);
                    }
                    None => {
                        if model.len() >= max {
                            model.remove(0);
                        }
                        model.push((sid.clone(), now, vec![(ch, id)]));
                    }
                }
            }
            1 => {
                let known = model.iter().position(|(s, _, _)| *s == sid);
                assert_eq!(
                    st.update_existing(&sid, &ch, &id, now),
                    known.is_some(),
                    "step {step}"
                );
                if let Some(i) = known {
                    let mut e = model.remove(i);
                    e.1 = now;
                    set(&mut e.2, &ch, &id);
                    model.push(e);
                }
            }
            _ => {
                let known = model.iter().position(|(s, _, _)| *s == sid);
                let want = known.map(|i| model[i].2.clone());
                assert_eq!(st.last_ids(&sid, now), want, "step {step}");
                if let Some(i) = known {
                    let mut e = model.remove(i);
                    e.1 = now;
                    model.push(e);
                }
            }
        }
        assert!(st.len() <= max);
    }

    fn set(ids: &mut Vec<(String, String)>, ch: &str, id: &str) {
        ids.retain(|(c, _)| c != ch);
        ids.push((ch.to_string(), id.to_string()));
    }
}
