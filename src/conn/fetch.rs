//! Requests tack makes on its own behalf to a route's backend: next-link fetches (`Grip-Link:
//! <…>; rel=next`) and retries of a held long-poll after a `hint`. They go through the same
//! route, failover, pool and signing as client requests, and their responses are buffered up to
//! the GRIP instruction limit.

use std::net::IpAddr;
use std::rc::Rc;
use std::time::Instant;

use crate::http1::{BodyFraming, RequestHead, ResponseHead};
use crate::route::{HttpTarget, Route, Target};
use crate::shard::ShardCtx;

use super::io::{relay_body, OutEncoding, Sink};
use super::{connect_targets, forward_head, read_response_head};

/// Why an internal request failed (the caller decides what the client sees).
#[derive(Clone, Copy, Debug)]
pub enum FetchError {
    NoRoute,
    Connect,
    Io,
    Timeout,
    TooLarge,
}

/// A buffered backend answer.
pub struct Fetched {
    pub head: ResponseHead,
    pub body: Vec<u8>,
}

/// Resolve a `Grip-Link` URI against the request path: absolute URLs keep their path and
/// query, `/…` is used as is, and a relative path replaces the last segment.
pub fn resolve_link(base_path: &str, uri: &str) -> String {
    if let Some(rest) = uri
        .strip_prefix("http://")
        .or_else(|| uri.strip_prefix("https://"))
    {
        return match rest.find('/') {
            Some(i) => rest[i..].to_string(),
            None => "/".to_string(),
        };
    }
    if uri.starts_with('/') {
        return uri.to_string();
    }
    let base = base_path.split('?').next().unwrap_or("/");
    let dir = match base.rfind('/') {
        Some(i) => &base[..=i],
        None => "/",
    };
    format!("{dir}{uri}")
}

/// The request of a next-link (or gone-link) fetch: tack's own `GET` of `path` through the
/// original route (as Pushpin does since 1.35), never the client's request again. Pushpin
/// builds a fresh request too: a client's `Last-Event-ID`, cookies or credentials must not
/// reach a link, whose position is its URL (and `Grip-Last`). It carries `Host` as the client
/// gave it (the route may override it), `Accept: */*` and `Accept-Encoding: identity`; the
/// forwarded head adds `Grip-Sig`, `Grip-Feature` and the route's headers, and the caller
/// `Grip-Last`. tack: Pushpin's zurl asks for compressed bodies and decodes them; tack appends
/// link bodies to the client's response as they are, so it asks for none.
pub fn link_request(original: &RequestHead, path: String) -> RequestHead {
    let header = |name: &str, value: &[u8]| crate::http1::Header {
        name: name.to_string(),
        value: value.to_vec(),
    };
    let mut headers = Vec::with_capacity(3);
    if let Some(host) = &original.host {
        headers.push(header("Host", host.as_bytes()));
    }
    headers.push(header("Accept", b"*/*"));
    headers.push(header("Accept-Encoding", b"identity"));
    RequestHead {
        method: "GET".to_string(),
        target: path.clone(),
        path,
        version: crate::http1::Version::Http11,
        headers,
        host: original.host.clone(),
        framing: BodyFraming::None,
        keep_alive: true,
        expect_continue: false,
        upgrade: None,
    }
}

/// Send `head` (which must have no body) to `route`'s backend and buffer the answer.
pub async fn fetch(
    ctx: &Rc<ShardCtx>,
    route: &Route,
    head: &RequestHead,
    peer_ip: IpAddr,
) -> Result<Fetched, FetchError> {
    debug_assert_eq!(
        head.framing,
        BodyFraming::None,
        "internal requests carry no body"
    );
    fetch_inner(ctx, route, head, &[], peer_ip, ctx.cfg().grip_body_max, &[]).await
}

/// [`fetch`] with one `Grip-Last: <channel>; last-id=<id>` header per entry of `last_ids`
/// (reliable long-polls and next links tell the backend where the client is). Channels are
/// named as the backend named them: the route's `prefix` is removed, as Pushpin does.
pub async fn fetch_with_grip_last(
    ctx: &Rc<ShardCtx>,
    route: &Route,
    head: &RequestHead,
    body: &[u8],
    peer_ip: IpAddr,
    last_ids: &[(String, String)],
) -> Result<Fetched, FetchError> {
    let extra = match route.prefix.as_deref() {
        Some(p) if !p.is_empty() => {
            let unprefixed: Vec<(String, String)> = last_ids
                .iter()
                .map(|(ch, id)| (ch.strip_prefix(p).unwrap_or(ch).to_string(), id.clone()))
                .collect();
            grip_last_lines(&unprefixed)
        }
        _ => grip_last_lines(last_ids),
    };
    fetch_inner(
        ctx,
        route,
        head,
        body,
        peer_ip,
        ctx.cfg().grip_body_max,
        &extra,
    )
    .await
}

/// One `Grip-Last: <channel>; last-id=<id>` header line (with CRLF) per entry; an entry that
/// could break the header (a backend's prev-id or channel with a control character, `,` or
/// `;`; published ids are checked at publish time) is left out and logged.
pub fn grip_last_lines(last_ids: &[(String, String)]) -> Vec<String> {
    last_ids
        .iter()
        .filter(|(ch, id)| {
            let safe = crate::publish::parse::is_id_safe(ch) && crate::publish::parse::is_id_safe(id);
            if !safe {
                tracing::warn!(channel = ?ch, last_id = ?id, "Grip-Last entry with unsafe characters left out");
            }
            safe
        })
        .map(|(ch, id)| format!("Grip-Last: {ch}; last-id={id}\r\n"))
        .collect()
}

/// [`fetch_with_body`] with extra complete header lines (tack's own, e.g. from
/// [`grip_last_lines`]: a reliable WebSocket-over-HTTP session's recovery request).
pub async fn fetch_with_body_lines(
    ctx: &Rc<ShardCtx>,
    route: &Route,
    head: &RequestHead,
    body: &[u8],
    peer_ip: IpAddr,
    answer_max: usize,
    extra_lines: &[String],
) -> Result<Fetched, FetchError> {
    fetch_inner(ctx, route, head, body, peer_ip, answer_max, extra_lines).await
}

/// Send `head` with `body` (its framing must say `Length(body.len())` or `None`) and buffer an
/// answer of at most `answer_max` bytes.
pub async fn fetch_with_body(
    ctx: &Rc<ShardCtx>,
    route: &Route,
    head: &RequestHead,
    body: &[u8],
    peer_ip: IpAddr,
    answer_max: usize,
) -> Result<Fetched, FetchError> {
    fetch_inner(ctx, route, head, body, peer_ip, answer_max, &[]).await
}

/// `extra_lines`: complete header lines (ending in CRLF) added after tack's own headers; they
/// are tack's, so the client-`Grip-*` stripping does not apply to them.
async fn fetch_inner(
    ctx: &Rc<ShardCtx>,
    route: &Route,
    head: &RequestHead,
    body: &[u8],
    peer_ip: IpAddr,
    answer_max: usize,
    extra_lines: &[String],
) -> Result<Fetched, FetchError> {
    debug_assert!(matches!(
        head.framing,
        BodyFraming::None | BodyFraming::Length(_)
    ));
    let targets: Vec<&HttpTarget> = route
        .targets
        .iter()
        .filter_map(|t| match t {
            Target::Http(h) => Some(h),
            _ => None,
        })
        .collect();
    if targets.is_empty() {
        return Err(FetchError::NoRoute);
    }
    let (mut be, target) = connect_targets(ctx, &targets, false)
        .await
        .map_err(|_| FetchError::Connect)?;
    let mut out = forward_head(ctx, peer_ip, head, route, target, false);
    if !extra_lines.is_empty() {
        debug_assert!(out.ends_with(b"\r\n\r\n"));
        out.truncate(out.len() - 2);
        for line in extra_lines {
            out.extend_from_slice(line.as_bytes());
        }
        out.extend_from_slice(b"\r\n");
    }
    out.extend_from_slice(body);
    be.peer.write_all(out).await.0.map_err(|_| FetchError::Io)?;
    let resp = read_response_head(ctx, &mut be, &head.method)
        .await
        .map_err(|e| match e {
            super::ResponseFailure::Timeout => FetchError::Timeout,
            _ => FetchError::Io,
        })?;
    let mut answer = Vec::new();
    relay_body(
        &mut be.peer,
        Sink::Buffer {
            buf: &mut answer,
            max: answer_max,
        },
        resp.framing,
        OutEncoding::Identity,
        ctx.cfg().body_buffer_bytes,
        ctx.cfg().backend_response_timeout,
    )
    .await
    .map_err(|e| match e {
        super::io::RelayError::TooLarge => FetchError::TooLarge,
        _ => FetchError::Io,
    })?;
    if resp.keep_alive
        && resp.framing != BodyFraming::CloseDelimited
        && be.peer.pending().is_empty()
    {
        ctx.pool.put(be.addr, be.peer.stream, Instant::now());
    }
    Ok(Fetched {
        head: resp,
        body: answer,
    })
}

/// Look the original request's route up again (routes are immutable, so this is stable).
pub fn route_of<'r>(routes: &'r crate::route::RouteTable, head: &RequestHead) -> Option<&'r Route> {
    routes.lookup(
        head.host.as_deref(),
        &head.path,
        crate::route::Proto::Http,
        false,
    )
}

#[cfg(test)]
mod tests {
    use super::{link_request, resolve_link};
    use crate::http1::parse_request_head;

    #[test]
    fn links_resolve_like_urls() {
        assert_eq!(resolve_link("/a/b?x=1", "/next?p=2"), "/next?p=2");
        assert_eq!(resolve_link("/a/b?x=1", "c?p=2"), "/a/c?p=2");
        assert_eq!(resolve_link("/", "c"), "/c");
        assert_eq!(resolve_link("/a", "http://example.com/z?q"), "/z?q");
        assert_eq!(resolve_link("/a", "https://example.com"), "/");
    }

    #[test]
    fn link_requests_carry_none_of_the_clients_headers() {
        let (client, _) = parse_request_head(
            b"POST /events/?x=1 HTTP/1.0\r\nHost: app.example\r\nLast-Event-ID: a:1\r\n\
Cookie: s=1\r\nAuthorization: Bearer t\r\nContent-Length: 2\r\n\r\nhi",
            8192,
            64,
        )
        .unwrap()
        .unwrap();
        let r = link_request(&client, "/events/?link=next".into());
        assert_eq!(
            (r.method.as_str(), r.path.as_str()),
            ("GET", "/events/?link=next")
        );
        let names: Vec<&str> = r.headers.iter().map(|h| h.name.as_str()).collect();
        assert_eq!(names, ["Host", "Accept", "Accept-Encoding"]);
        assert_eq!(r.host.as_deref(), Some("app.example"));
        assert_eq!(r.framing, crate::http1::BodyFraming::None);
    }
}
