//! The request head tack sends to a backend: the client's head with hop-by-hop and untrusted
//! GRIP headers removed, `Host` replaced, `X-Forwarded-For` / `X-Forwarded-Proto` applied per
//! config, a fresh `Grip-Sig`, route `header=` options, and the body framing tack chose.
//! Always `HTTP/1.1` and keep-alive toward the backend.
//!
//! Pushpin behaviour followed (grip-spec §5): client `Grip-*` headers are dropped unless the
//! client is a trusted upstream; `X-Forwarded-For` rules are `truncate:N` (keep the **last** N
//! entries, the ones added by the hops nearest to us) and `append` (add the peer address), with
//! no rule meaning pass-through; incoming `X-Forwarded-Proto` and `X-Forwarded-Protocol` are
//! removed whenever tack manages them, and set only for TLS clients.

use std::net::IpAddr;

use super::{
    connection_has, is_hop_by_hop, push_decimal, push_header, push_sanitized, BodyFraming,
    RequestHead,
};

/// One `x_forwarded_for` rule from config.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum XffRule {
    /// `truncate:N`: keep only the last N incoming entries (0 drops them all).
    Truncate(usize),
    /// `append`: add the client's address.
    Append,
}

/// `set_x_forwarded_protocol` from config.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum XfpMode {
    /// Set `X-Forwarded-Proto` only (Pushpin's default, `proto-only`).
    #[default]
    ProtoOnly,
    /// Set `X-Forwarded-Proto` and the older `X-Forwarded-Protocol` (`true`).
    Both,
    /// Set neither and leave incoming copies alone.
    None,
}

/// Everything [`write_forward_head`] needs beyond the client's request head.
#[derive(Clone, Debug)]
pub struct ForwardOptions<'a> {
    /// The path (and query) to request, already rewritten by the route.
    pub path: &'a str,
    /// `Host` to send (route `as_host`, target `host=`, or the original).
    pub host_header: &'a str,
    /// The client's address, for `X-Forwarded-For: append`.
    pub peer_ip: IpAddr,
    /// The client connection is TLS (false until tack terminates TLS).
    pub client_tls: bool,
    /// The client proved to be a trusted GRIP proxy (`upstream_key`): keep its `Grip-*` headers.
    pub trusted_upstream: bool,
    /// `x_forwarded_for` (or `x_forwarded_for_trusted`) rules; empty means pass-through.
    pub xff_rules: &'a [XffRule],
    /// Which `X-Forwarded-Proto*` headers to manage.
    pub xfp: XfpMode,
    /// JWT to send as `Grip-Sig` (replaces any incoming one, trusted or not).
    pub grip_sig: Option<&'a str>,
    /// Route `header=Name:Value` options: set or replace; an empty value deletes. Names that
    /// would change framing or connection handling (hop-by-hop headers, `Content-Length`,
    /// `Host`) are ignored: use `host_header` for `Host`.
    pub extra_headers: &'a [(String, String)],
    /// `Grip-Feature` value to advertise (`None` on `no_grip` routes); replaces any client copy.
    pub grip_feature: Option<&'a str>,
    /// What tack will send: `Length(n)` → `Content-Length: n`, `Chunked` →
    /// `Transfer-Encoding: chunked`, `None` → no framing header. Never `CloseDelimited`.
    pub body_framing: BodyFraming,
    /// Keep `Upgrade` and send `Connection: Upgrade` (WebSocket).
    pub upgrade: bool,
    /// `Connection-Id` to send (the id the control API knows the client connection by);
    /// replaces any copy in the head. The caller strips client-supplied copies at entry.
    pub connection_id: Option<&'a str>,
    /// Drop the client's copies of the headers tack alone sends an `over_http` backend
    /// ([`is_over_http_only`]: `Meta-*`, `Content-Bytes-Replayed`), so that a plain request
    /// cannot pose as a WebSocket session's.
    pub strip_over_http: bool,
}

/// Request headers that, towards an `over_http` backend, only tack may send: the session's
/// `Meta-*` (its connection meta, which backends use to know who the client is) and
/// `Content-Bytes-Replayed`. (`Connection-Id`, `Grip-*` and the framing headers are handled
/// for every route.)
pub fn is_over_http_only(name: &str) -> bool {
    name.get(..5)
        .is_some_and(|p| p.eq_ignore_ascii_case("meta-"))
        || name.eq_ignore_ascii_case("content-bytes-replayed")
}

/// Serialize `METHOD path HTTP/1.1` + headers for the backend: drop hop-by-hop headers
/// (Connection and the headers it names, Keep-Alive, Proxy-Connection, TE, Trailer,
/// Transfer-Encoding, Upgrade unless `upgrade`), Expect, Content-Length (re-added from
/// `body_framing`), every client `Grip-*` header unless `trusted_upstream`, Host (replaced);
/// apply XFF/XFP per options; add Grip-Sig. Always HTTP/1.1 to the backend, keep-alive.
///
/// Order: request line, `Host`, the client's remaining headers in their order, then
/// `X-Forwarded-For`, `X-Forwarded-Proto(col)`, `Grip-Sig`, `Grip-Feature`, `Connection-Id`,
/// route headers, framing, and `Connection: Upgrade` when upgrading.
pub fn write_forward_head(out: &mut Vec<u8>, req: &RequestHead, opts: &ForwardOptions) {
    debug_assert!(opts.body_framing != BodyFraming::CloseDelimited);
    debug_assert!(
        !opts.upgrade || req.upgrade.is_some(),
        "upgrade without an Upgrade header"
    );
    let start = out.len();

    push_sanitized(out, req.method.as_bytes());
    out.push(b' ');
    push_sanitized(out, opts.path.as_bytes());
    out.extend_from_slice(b" HTTP/1.1\r\n");
    push_header(out, "Host", opts.host_header.as_bytes());

    let manage_xff = !opts.xff_rules.is_empty();
    let manage_xfp = opts.xfp != XfpMode::None;
    let overridden = |name: &str| {
        opts.extra_headers
            .iter()
            .any(|(n, _)| n.eq_ignore_ascii_case(name) && extra_allowed(n))
    };
    let upgrade_kept = |name: &str| opts.upgrade && name.eq_ignore_ascii_case("upgrade");

    for h in &req.headers {
        let name = h.name.as_str();
        let drop = (is_hop_by_hop(name) && !upgrade_kept(name))
            || (connection_has(&req.headers, name) && !upgrade_kept(name))
            || h.is("expect")
            || h.is("content-length")
            || h.is("host")
            || (is_grip(name) && !opts.trusted_upstream)
            || (h.is("grip-sig") && opts.grip_sig.is_some())
            || (h.is("grip-feature") && opts.grip_feature.is_some())
            || (h.is("connection-id") && opts.connection_id.is_some())
            || (opts.strip_over_http && is_over_http_only(name))
            || (manage_xff && h.is("x-forwarded-for"))
            || (manage_xfp && (h.is("x-forwarded-proto") || h.is("x-forwarded-protocol")))
            || overridden(name);
        if !drop {
            push_header(out, name, &h.value);
        }
    }

    if manage_xff && !overridden("x-forwarded-for") {
        write_xff(out, req, opts);
    }
    if manage_xfp && opts.client_tls {
        let scheme: &[u8] = if opts.upgrade
            && req
                .upgrade
                .as_deref()
                .is_some_and(|u| u.eq_ignore_ascii_case("websocket"))
        {
            b"wss"
        } else {
            b"https"
        };
        if !overridden("x-forwarded-proto") {
            push_header(out, "X-Forwarded-Proto", scheme);
        }
        if opts.xfp == XfpMode::Both && !overridden("x-forwarded-protocol") {
            push_header(out, "X-Forwarded-Protocol", scheme);
        }
    }
    if let Some(sig) = opts.grip_sig {
        if !overridden("grip-sig") {
            push_header(out, "Grip-Sig", sig.as_bytes());
        }
    }
    if let Some(features) = opts.grip_feature {
        if !overridden("grip-feature") {
            push_header(out, "Grip-Feature", features.as_bytes());
        }
    }
    if let Some(cid) = opts.connection_id {
        if !overridden("connection-id") {
            push_header(out, "Connection-Id", cid.as_bytes());
        }
    }
    for (name, value) in opts.extra_headers {
        if !value.is_empty() && extra_allowed(name) {
            push_header(out, name, value.as_bytes());
        }
    }
    match opts.body_framing {
        BodyFraming::Length(n) => {
            out.extend_from_slice(b"Content-Length: ");
            push_decimal(out, n);
            out.extend_from_slice(b"\r\n");
        }
        BodyFraming::Chunked => out.extend_from_slice(b"Transfer-Encoding: chunked\r\n"),
        BodyFraming::None | BodyFraming::CloseDelimited => {}
    }
    if opts.upgrade {
        out.extend_from_slice(b"Connection: Upgrade\r\n");
    }
    out.extend_from_slice(b"\r\n");
    debug_assert!(out[start..].ends_with(b"\r\n\r\n"));
}

/// `X-Forwarded-For` after the rules: the incoming entries (all lines, comma lists split),
/// the last `truncate:N` applied, then the peer appended if any rule says `append`. Rules act
/// as one setting, as in Pushpin: the order they are listed in does not matter.
fn write_xff(out: &mut Vec<u8>, req: &RequestHead, opts: &ForwardOptions) {
    let mut entries: Vec<&[u8]> = req
        .headers
        .iter()
        .filter(|h| h.is("x-forwarded-for"))
        .flat_map(|h| super::list_elements(&h.value))
        .collect();
    let truncate = opts.xff_rules.iter().rev().find_map(|r| match r {
        XffRule::Truncate(n) => Some(*n),
        XffRule::Append => None,
    });
    if let Some(keep) = truncate {
        let skip = entries.len().saturating_sub(keep);
        entries.drain(..skip);
    }
    let append = opts.xff_rules.contains(&XffRule::Append);
    if entries.is_empty() && !append {
        return;
    }
    out.extend_from_slice(b"X-Forwarded-For: ");
    for (i, e) in entries.iter().enumerate() {
        if i > 0 {
            out.extend_from_slice(b", ");
        }
        out.extend_from_slice(e);
    }
    if append {
        if !entries.is_empty() {
            out.extend_from_slice(b", ");
        }
        // An IPv4 client on a dual-stack socket shows up as ::ffff:a.b.c.d; log it as IPv4.
        out.extend_from_slice(opts.peer_ip.to_canonical().to_string().as_bytes());
    }
    out.extend_from_slice(b"\r\n");
}

/// `Grip-` prefix, any case.
fn is_grip(name: &str) -> bool {
    name.get(..5)
        .is_some_and(|p| p.eq_ignore_ascii_case("grip-"))
}

/// Route `header=` names that may be set: not framing, not connection management.
fn extra_allowed(name: &str) -> bool {
    !name.is_empty()
        && !is_hop_by_hop(name)
        && !name.eq_ignore_ascii_case("content-length")
        && !name.eq_ignore_ascii_case("host")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::http1::parse_request_head;
    use std::net::{Ipv4Addr, Ipv6Addr};

    fn req(raw: &[u8]) -> RequestHead {
        parse_request_head(raw, 8192, 64).unwrap().unwrap().0
    }

    fn opts<'a>() -> ForwardOptions<'a> {
        ForwardOptions {
            path: "/",
            host_header: "backend.local",
            peer_ip: IpAddr::V4(Ipv4Addr::new(192, 0, 2, 7)),
            client_tls: false,
            trusted_upstream: false,
            xff_rules: &[],
            xfp: XfpMode::ProtoOnly,
            grip_sig: None,
            extra_headers: &[],
            grip_feature: None,
            body_framing: BodyFraming::None,
            upgrade: false,
            connection_id: None,
            strip_over_http: false,
        }
    }

    fn forward(r: &RequestHead, o: &ForwardOptions) -> String {
        let mut out = b"junk-before|".to_vec();
        write_forward_head(&mut out, r, o);
        let s = String::from_utf8(out).unwrap();
        s.strip_prefix("junk-before|").unwrap().to_owned()
    }

    const REALISTIC: &[u8] = b"POST /api/stream?x=1 HTTP/1.1\r\n\
Host: public.example\r\n\
User-Agent: test/1.0\r\n\
Connection: keep-alive, X-Hop\r\n\
X-Hop: drop-me\r\n\
Keep-Alive: timeout=5\r\n\
Proxy-Connection: keep-alive\r\n\
TE: trailers\r\n\
Trailer: X-T\r\n\
Expect: 100-continue\r\n\
Content-Length: 11\r\n\
Grip-Sig: forged\r\n\
grip-channel: evil\r\n\
X-Forwarded-For: 10.0.0.1, 10.0.0.2\r\n\
X-Forwarded-For: 10.0.0.3\r\n\
X-Forwarded-Proto: https\r\n\
X-Forwarded-Protocol: https\r\n\
X-Remove: gone\r\n\
X-Replace: old\r\n\
Accept: */*\r\n\r\n";

    #[test]
    fn realistic_request() {
        let r = req(REALISTIC);
        let extra = [
            ("X-Replace".to_owned(), "new".to_owned()),
            ("x-remove".to_owned(), String::new()),
            ("X-Added".to_owned(), "yes".to_owned()),
            ("Content-Length".to_owned(), "999".to_owned()),
            ("Connection".to_owned(), "close".to_owned()),
            ("Host".to_owned(), "nope".to_owned()),
        ];
        let o = ForwardOptions {
            path: "/stream?x=1",
            xff_rules: &[XffRule::Truncate(2), XffRule::Append],
            grip_sig: Some("aaa.bbb.ccc"),
            extra_headers: &extra,
            grip_feature: None,
            body_framing: BodyFraming::Length(11),
            ..opts()
        };
        assert_eq!(
            forward(&r, &o),
            "POST /stream?x=1 HTTP/1.1\r\n\
Host: backend.local\r\n\
User-Agent: test/1.0\r\n\
Accept: */*\r\n\
X-Forwarded-For: 10.0.0.2, 10.0.0.3, 192.0.2.7\r\n\
Grip-Sig: aaa.bbb.ccc\r\n\
X-Replace: new\r\n\
X-Added: yes\r\n\
Content-Length: 11\r\n\r\n"
        );
    }

    #[test]
    fn over_http_routes_drop_client_meta_and_replay_headers() {
        let r = req(
            b"POST / HTTP/1.1\r\nHost: a\r\nMeta-User: admin\r\nmeta-role: x\r\n\
Content-Bytes-Replayed: 4\r\nX-Meta: kept\r\n\r\n",
        );
        let mut o = opts();
        assert!(forward(&r, &o).contains("Meta-User: admin\r\n"));
        o.strip_over_http = true;
        assert_eq!(
            forward(&r, &o),
            "POST / HTTP/1.1\r\nHost: backend.local\r\nX-Meta: kept\r\n\r\n"
        );
        assert!(is_over_http_only("META-x") && !is_over_http_only("metadata"));
    }

    #[test]
    fn connection_id_replaces_any_copy_in_the_head() {
        let r = req(b"GET / HTTP/1.1\r\nHost: a\r\nconnection-id: forged\r\nX-A: 1\r\n\r\n");
        let mut o = opts();
        o.grip_feature = Some("status");
        o.connection_id = Some("00000000-0000-4000-8000-000000000001");
        assert_eq!(
            forward(&r, &o),
            "GET / HTTP/1.1\r\n\
Host: backend.local\r\n\
X-A: 1\r\n\
Grip-Feature: status\r\n\
Connection-Id: 00000000-0000-4000-8000-000000000001\r\n\r\n"
        );
        // Without an id of tack's, the head's copy passes (the caller strips client copies).
        o.connection_id = None;
        assert!(forward(&r, &o).contains("connection-id: forged\r\n"));
    }

    #[test]
    fn grip_feature_replaces_a_client_copy_and_yields_to_a_route_header() {
        let r = req(b"GET / HTTP/1.1\r\nHost: a\r\nGrip-Feature: forged\r\n\r\n");
        let mut o = opts();
        o.trusted_upstream = true; // a trusted client's Grip-* pass, but not its Grip-Feature
        o.grip_feature = Some("status, link:next");
        let s = forward(&r, &o);
        assert!(s.contains("Grip-Feature: status, link:next\r\n"), "{s}");
        assert!(!s.contains("forged"), "{s}");
        let extra = [("Grip-Feature".to_string(), "route".to_string())];
        o.extra_headers = &extra;
        let s = forward(&r, &o);
        assert_eq!(s.matches("Grip-Feature").count(), 1, "{s}");
        assert!(s.contains("Grip-Feature: route\r\n"), "{s}");
    }

    #[test]
    fn pass_through_defaults() {
        // No XFF rules: incoming XFF untouched. XfpMode::None: incoming XFP untouched.
        let r = req(REALISTIC);
        let o = ForwardOptions {
            path: "/p",
            xfp: XfpMode::None,
            body_framing: BodyFraming::Chunked,
            ..opts()
        };
        assert_eq!(
            forward(&r, &o),
            "POST /p HTTP/1.1\r\n\
Host: backend.local\r\n\
User-Agent: test/1.0\r\n\
X-Forwarded-For: 10.0.0.1, 10.0.0.2\r\n\
X-Forwarded-For: 10.0.0.3\r\n\
X-Forwarded-Proto: https\r\n\
X-Forwarded-Protocol: https\r\n\
X-Remove: gone\r\n\
X-Replace: old\r\n\
Accept: */*\r\n\
Transfer-Encoding: chunked\r\n\r\n"
        );
    }

    #[test]
    fn trusted_upstream_keeps_grip_headers() {
        let r = req(
            b"GET / HTTP/1.1\r\nHost: a\r\nGrip-Sig: upstream.sig.x\r\nGrip-Channel: c\r\n\r\n",
        );
        let o = ForwardOptions {
            trusted_upstream: true,
            ..opts()
        };
        assert_eq!(
            forward(&r, &o),
            "GET / HTTP/1.1\r\nHost: backend.local\r\nGrip-Sig: upstream.sig.x\r\nGrip-Channel: c\r\n\r\n"
        );
        // A signature of our own replaces the upstream one.
        let o = ForwardOptions {
            trusted_upstream: true,
            grip_sig: Some("ours"),
            ..opts()
        };
        assert_eq!(
            forward(&r, &o),
            "GET / HTTP/1.1\r\nHost: backend.local\r\nGrip-Channel: c\r\nGrip-Sig: ours\r\n\r\n"
        );
    }

    #[test]
    fn xff_rules() {
        let r = req(
            b"GET / HTTP/1.1\r\nHost: a\r\nX-Forwarded-For: 1.1.1.1,2.2.2.2 ,, 3.3.3.3\r\n\r\n",
        );
        let xff = |rules: &[XffRule], peer: IpAddr| {
            let o = ForwardOptions {
                xff_rules: rules,
                peer_ip: peer,
                ..opts()
            };
            let s = forward(&r, &o);
            s.lines()
                .find_map(|l| l.strip_prefix("X-Forwarded-For: ").map(str::to_owned))
        };
        let v4 = IpAddr::V4(Ipv4Addr::new(192, 0, 2, 7));
        assert_eq!(
            xff(&[XffRule::Append], v4).as_deref(),
            Some("1.1.1.1, 2.2.2.2, 3.3.3.3, 192.0.2.7")
        );
        assert_eq!(xff(&[XffRule::Truncate(0)], v4), None);
        assert_eq!(
            xff(&[XffRule::Truncate(0), XffRule::Append], v4).as_deref(),
            Some("192.0.2.7")
        );
        // Order-insensitive, as Pushpin's single rule.
        assert_eq!(
            xff(&[XffRule::Append, XffRule::Truncate(0)], v4).as_deref(),
            Some("192.0.2.7")
        );
        assert_eq!(xff(&[XffRule::Truncate(1)], v4).as_deref(), Some("3.3.3.3"));
        assert_eq!(
            xff(&[XffRule::Truncate(9)], v4).as_deref(),
            Some("1.1.1.1, 2.2.2.2, 3.3.3.3")
        );
        let v6 = IpAddr::V6(Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, 1));
        assert_eq!(
            xff(&[XffRule::Truncate(0), XffRule::Append], v6).as_deref(),
            Some("2001:db8::1")
        );
        let mapped = IpAddr::V6(Ipv4Addr::new(198, 51, 100, 1).to_ipv6_mapped());
        assert_eq!(
            xff(&[XffRule::Truncate(0), XffRule::Append], mapped).as_deref(),
            Some("198.51.100.1")
        );

        let bare = req(b"GET / HTTP/1.1\r\nHost: a\r\n\r\n");
        let o = ForwardOptions {
            xff_rules: &[XffRule::Append],
            ..opts()
        };
        assert_eq!(
            forward(&bare, &o),
            "GET / HTTP/1.1\r\nHost: backend.local\r\nX-Forwarded-For: 192.0.2.7\r\n\r\n"
        );
    }

    #[test]
    fn xfp_modes() {
        let r = req(b"GET / HTTP/1.1\r\nHost: a\r\nX-Forwarded-Proto: https\r\nX-Forwarded-Protocol: https\r\n\r\n");
        let run = |xfp, tls| {
            forward(
                &r,
                &ForwardOptions {
                    xfp,
                    client_tls: tls,
                    ..opts()
                },
            )
        };
        assert_eq!(
            run(XfpMode::ProtoOnly, false),
            "GET / HTTP/1.1\r\nHost: backend.local\r\n\r\n"
        );
        assert_eq!(
            run(XfpMode::ProtoOnly, true),
            "GET / HTTP/1.1\r\nHost: backend.local\r\nX-Forwarded-Proto: https\r\n\r\n"
        );
        assert_eq!(
            run(XfpMode::Both, true),
            "GET / HTTP/1.1\r\nHost: backend.local\r\nX-Forwarded-Proto: https\r\nX-Forwarded-Protocol: https\r\n\r\n"
        );
        assert_eq!(
            run(XfpMode::None, true),
            "GET / HTTP/1.1\r\nHost: backend.local\r\nX-Forwarded-Proto: https\r\nX-Forwarded-Protocol: https\r\n\r\n"
        );
    }

    #[test]
    fn websocket_upgrade() {
        let r = req(
            b"GET /ws HTTP/1.1\r\nHost: a\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\
Sec-WebSocket-Key: k\r\nSec-WebSocket-Version: 13\r\n\r\n",
        );
        let o = ForwardOptions {
            path: "/ws",
            upgrade: true,
            client_tls: true,
            ..opts()
        };
        assert_eq!(
            forward(&r, &o),
            "GET /ws HTTP/1.1\r\nHost: backend.local\r\nUpgrade: websocket\r\nSec-WebSocket-Key: k\r\n\
Sec-WebSocket-Version: 13\r\nX-Forwarded-Proto: wss\r\nConnection: Upgrade\r\n\r\n"
        );
        // Without `upgrade` the same request loses its upgrade headers.
        let o = ForwardOptions {
            path: "/ws",
            ..opts()
        };
        assert_eq!(
            forward(&r, &o),
            "GET /ws HTTP/1.1\r\nHost: backend.local\r\nSec-WebSocket-Key: k\r\nSec-WebSocket-Version: 13\r\n\r\n"
        );
    }

    #[test]
    fn http10_client_becomes_http11() {
        let r = req(b"GET /old HTTP/1.0\r\nConnection: keep-alive\r\n\r\n");
        let o = ForwardOptions {
            path: "/old",
            ..opts()
        };
        assert_eq!(
            forward(&r, &o),
            "GET /old HTTP/1.1\r\nHost: backend.local\r\n\r\n"
        );
    }

    #[test]
    fn grip_prefix() {
        assert!(is_grip("Grip-Hold"));
        assert!(is_grip("GRIP-"));
        assert!(!is_grip("Grip"));
        assert!(!is_grip("Gripper"));
        assert!(!is_grip("X-Grip-A"));
    }
}
