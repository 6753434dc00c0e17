//! Pushpin routes file: parse once into an immutable [`RouteTable`], then match requests.
//!
//! Syntax and semantics follow grip-spec §8 (Pushpin's `routesfile.cpp` / `domainmap.cpp`):
//!
//! ```text
//! <condition>[,prop[=val]...]  <target>[,prop[=val]...]  [<target>...]   # comment
//! ```
//!
//! * The condition is an exact host (case-insensitive, no partial wildcards) or `*`. If its
//!   first item contains `=`, the rule has no domain: it is stored (and selectable with
//!   [`RouteTable::lookup_id`]) but never matched by host.
//! * Several targets are failover, in order.
//! * Matching: the request host (port stripped, case-insensitive) selects its own rules; only a
//!   host with **no** rules of its own falls back to `*` (Pushpin's quirk). Within a domain the
//!   most specific rule wins: `proto` set > unset, then longer `path_beg`, then `ssl` set >
//!   unset; file order breaks ties. A second rule with the same (proto, ssl, path_beg) in a
//!   domain is skipped with a warning.
//! * Options tack does not implement (`jsonp_*`, `sockjs*`, `log_level`, `ipc_file_mode`,
//!   `trust_connect_host`) and unknown options are accepted with a warning; TLS to backends
//!   (`ssl`, `insecure`, `client_cert`, `client_key`) and `zhttp`/`zhttpreq` targets are errors.
//!
//! Pure except through [`RouteEnv`]: name resolution of targets (once, at load) and reading
//! `sig_key=file:` keys. Tests pass a fake environment.

mod key;
mod lex;

use std::borrow::Cow;
use std::collections::HashMap;
use std::net::{SocketAddr, ToSocketAddrs};
use std::path::Path;

pub use key::{parse_key, KeyUse, SigKey};
use lex::{Prop, Token};

use crate::config::limits::ROUTES_MAX;

/// What route parsing needs from the outside world. [`SystemEnv`] is the real one.
pub trait RouteEnv {
    /// Resolves a target host (without IPv6 brackets) and port to socket addresses.
    fn resolve(&self, host: &str, port: u16) -> std::io::Result<Vec<SocketAddr>>;
    /// Reads a whole file (key files, and for the config loader: config and routes files).
    fn read_file(&self, path: &Path) -> std::io::Result<Vec<u8>>;
}

/// [`RouteEnv`] backed by `std` (`ToSocketAddrs`, `std::fs::read`).
#[derive(Debug, Clone, Copy, Default)]
pub struct SystemEnv;

impl RouteEnv for SystemEnv {
    fn resolve(&self, host: &str, port: u16) -> std::io::Result<Vec<SocketAddr>> {
        Ok((host, port).to_socket_addrs()?.collect())
    }

    fn read_file(&self, path: &Path) -> std::io::Result<Vec<u8>> {
        std::fs::read(path)
    }
}

/// A routes-file error: `<file>:<line>: <message>`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{file}:{line}: {message}")]
pub struct RouteError {
    /// File name (or `--route` for command-line rules).
    pub file: String,
    /// 1-based line number.
    pub line: usize,
    /// What is wrong.
    pub message: String,
}

/// Request kind a rule may be restricted to (`proto=`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Proto {
    /// Plain HTTP requests.
    Http,
    /// WebSocket upgrades.
    Ws,
}

/// One rule of the routes file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Route {
    /// `id=`, or the condition token as written when absent.
    pub id: String,
    /// Lower-cased exact host; `None` = `*` (or no domain at all, see `id_only`).
    pub domain: Option<String>,
    /// The condition had no domain (its first item contained `=`): never matched by host,
    /// only selectable with [`RouteTable::lookup_id`].
    pub id_only: bool,
    /// `proto=http|ws`.
    pub proto: Option<Proto>,
    /// `ssl=yes|no`: client-side TLS (including an accepted `X-Forwarded-Proto`).
    pub ssl: Option<bool>,
    /// `path_beg=`: prefix match on the encoded path.
    pub path_beg: Option<String>,
    /// `prefix=`: channel prefix for every subscription on this route.
    pub prefix: Option<String>,
    /// `as_host=`: rewrite the request host (and port) before proxying.
    pub as_host: Option<String>,
    /// `path_rem=N`: remove N leading characters of the path.
    pub path_rem: Option<usize>,
    /// `replace_beg=`: replace the `path_beg` prefix with this.
    pub replace_beg: Option<String>,
    /// `no_grip`: plain reverse proxy.
    pub no_grip: bool,
    /// `debug`: error responses carry detail.
    pub debug: bool,
    /// `session`: GRIP session tracking.
    pub session: bool,
    /// `orig_headers`: copy original headers with the `eb9bf0f5-` mark.
    pub orig_headers: bool,
    /// `aco`: automatic CORS.
    pub aco: bool,
    /// `sig_key=`: per-route signing key overriding the global one.
    pub sig_key: Option<SigKey>,
    /// `sig_iss=`: per-route issuer overriding the global one.
    pub sig_iss: Option<String>,
    /// `header=Name:Value` in order; an empty value deletes the header.
    pub headers: Vec<(String, String)>,
    /// Failover order, never empty.
    pub targets: Vec<Target>,
    /// Line in the source the rule came from (for logs).
    pub line: usize,
}

/// Where a route sends requests.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Target {
    /// An HTTP backend.
    Http(HttpTarget),
    /// The built-in test handler (`test`).
    Test,
}

/// An HTTP backend `host:port` with its options.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HttpTarget {
    /// As written; IPv6 keeps its brackets (`[::1]`).
    pub host: String,
    /// Backend port (non-zero).
    pub port: u16,
    /// Resolved once at load; never empty.
    pub addrs: Vec<SocketAddr>,
    /// `host=`: `Host` header override.
    pub host_header: Option<String>,
    /// `over_http`: WebSocket-over-HTTP conversion.
    pub over_http: bool,
    /// `one_event`: one WS-over-HTTP event per request.
    pub one_event: bool,
    /// `untrusted`: not a trusted backend.
    pub untrusted: bool,
    /// `sub=`: implicit subscriptions, in order.
    pub subs: Vec<String>,
}

/// Parsed routes, immutable after build; shared read-only between shards.
#[derive(Debug, Clone, Default)]
pub struct RouteTable {
    routes: Vec<Route>,
    /// Lower-cased host → indices into `routes`, most specific first.
    by_host: HashMap<String, Vec<usize>>,
    /// `*` rules, most specific first.
    any: Vec<usize>,
    /// id → index; `None` when the id is used by more than one rule.
    by_id: HashMap<String, Option<usize>>,
    /// (domain, proto, ssl, path_beg) → line of the rule kept, to skip duplicates in O(1).
    conditions: HashMap<ConditionKey, usize>,
    warnings: Vec<String>,
}

/// What makes two rules of one domain duplicates.
type ConditionKey = (String, Option<Proto>, Option<bool>, Option<String>);

impl RouteTable {
    /// Parses a routes file. `source` names the file in messages and anchors relative
    /// `sig_key=file:` paths. Resolves targets with the system resolver.
    pub fn parse(text: &str, source: &str) -> Result<RouteTable, RouteError> {
        Self::parse_with(text, source, &SystemEnv)
    }

    /// [`RouteTable::parse`] with an explicit environment.
    pub fn parse_with(
        text: &str,
        source: &str,
        env: &dyn RouteEnv,
    ) -> Result<RouteTable, RouteError> {
        Self::build(
            text.lines().enumerate().map(|(i, l)| (i + 1, l)),
            source,
            env,
        )
    }

    /// Builds a table from command-line rules (`--route`), one rule per entry; entry N is
    /// reported as line N.
    pub fn from_lines(lines: &[String], source: &str) -> Result<RouteTable, RouteError> {
        Self::from_lines_with(lines, source, &SystemEnv)
    }

    /// [`RouteTable::from_lines`] with an explicit environment.
    pub fn from_lines_with(
        lines: &[String],
        source: &str,
        env: &dyn RouteEnv,
    ) -> Result<RouteTable, RouteError> {
        Self::build(
            lines.iter().enumerate().map(|(i, l)| (i + 1, l.as_str())),
            source,
            env,
        )
    }

    /// The most specific rule for a request, or `None` ("Route not found", 502).
    /// `host` is the Host header (port ignored, case-insensitive); `path` the encoded path.
    pub fn lookup(
        &self,
        host: Option<&str>,
        path: &str,
        proto: Proto,
        tls: bool,
    ) -> Option<&Route> {
        let rules = host
            .map(normalize_host)
            .filter(|h| !h.is_empty())
            .and_then(|h| self.by_host.get(h.as_ref()))
            // Pushpin's quirk: a host with rules of its own never falls back to `*`.
            .unwrap_or(&self.any);
        let found = rules
            .iter()
            .map(|&i| &self.routes[i])
            .find(|r| r.matches(path, proto, tls));
        // `*` rules carry no domain, host rules do; id-only rules are in neither list.
        debug_assert!(found.is_none_or(|r| r.domain.is_none() == std::ptr::eq(rules, &self.any)));
        debug_assert!(found.is_none_or(|r| !r.id_only));
        found
    }

    /// The rule with this `id`, unless the id is missing or used by several rules.
    pub fn lookup_id(&self, id: &str) -> Option<&Route> {
        self.by_id
            .get(id)
            .copied()
            .flatten()
            .map(|i| &self.routes[i])
    }

    /// Non-fatal findings (ignored options, skipped duplicates), `<file>:<line>: ...`.
    pub fn warnings(&self) -> &[String] {
        &self.warnings
    }

    /// Number of rules kept (including rules without a domain).
    pub fn len(&self) -> usize {
        self.routes.len()
    }

    /// True when there are no rules at all.
    pub fn is_empty(&self) -> bool {
        self.routes.is_empty()
    }

    /// All kept rules in source order.
    pub fn routes(&self) -> &[Route] {
        &self.routes
    }

    fn build<'a>(
        lines: impl Iterator<Item = (usize, &'a str)>,
        source: &str,
        env: &dyn RouteEnv,
    ) -> Result<RouteTable, RouteError> {
        let base_dir = Path::new(source).parent().unwrap_or(Path::new(""));
        let mut table = RouteTable::default();
        for (line, text) in lines {
            let err = |message: String| RouteError {
                file: source.to_string(),
                line,
                message,
            };
            let tokens = lex::lex_line(text).map_err(err)?;
            if tokens.is_empty() {
                continue;
            }
            let mut warnings = Vec::new();
            let route = parse_rule(&tokens, line, base_dir, env, &mut warnings).map_err(err)?;
            table.warnings.extend(
                warnings
                    .into_iter()
                    .map(|w| format!("{source}:{line}: {w}")),
            );
            if table.routes.len() >= ROUTES_MAX {
                return Err(err(format!("too many routes (at most {ROUTES_MAX})")));
            }
            table.insert(route, source);
        }
        table.finish(source);
        Ok(table)
    }

    /// Adds a rule unless it duplicates an earlier one in the same domain.
    fn insert(&mut self, route: Route, source: &str) {
        let idx = self.routes.len();
        if let Some(domain) = route.domain.as_deref() {
            let key = (
                domain.to_string(),
                route.proto,
                route.ssl,
                route.path_beg.clone(),
            );
            if let Some(&first_line) = self.conditions.get(&key) {
                self.warnings.push(format!(
                    "{source}:{}: duplicate of the rule on line {first_line} for {domain} (same proto, ssl and path_beg); skipped",
                    route.line
                ));
                return;
            }
            self.conditions.insert(key, route.line);
            if domain == "*" {
                self.any.push(idx);
            } else {
                self.by_host
                    .entry(domain.to_string())
                    .or_default()
                    .push(idx);
            }
        }
        self.routes.push(route);
    }

    /// Orders each domain by specificity and indexes ids.
    fn finish(&mut self, source: &str) {
        // Only needed while inserting; the built table does not carry it.
        self.conditions = HashMap::new();
        let routes = &self.routes;
        let order = |list: &mut Vec<usize>| {
            // Stable: file order breaks ties.
            list.sort_by_key(|&i| {
                let r = &routes[i];
                (
                    r.proto.is_none(),
                    std::cmp::Reverse(r.path_beg.as_ref().map_or(0, String::len)),
                    r.ssl.is_none(),
                )
            });
        };
        order(&mut self.any);
        self.by_host.values_mut().for_each(order);
        for (i, r) in self.routes.iter().enumerate() {
            match self.by_id.get_mut(&r.id) {
                None => {
                    self.by_id.insert(r.id.clone(), Some(i));
                }
                Some(slot) => {
                    if let Some(first) = slot.take() {
                        self.warnings.push(format!(
                            "{source}:{}: route id \"{}\" is also used on line {}; it cannot be selected by id",
                            r.line, r.id, self.routes[first].line
                        ));
                    }
                }
            }
        }
        // `*` rules store the domain as "*" while parsing; expose them as None.
        for &i in &self.any {
            self.routes[i].domain = None;
        }
    }
}

impl Route {
    /// The path to send upstream: `replace_beg` swaps the matched `path_beg` prefix, else
    /// `path_rem` drops leading characters. The result always starts with `/`.
    pub fn rewrite_path(&self, path: &str) -> String {
        let rest: Cow<'_, str> = match (&self.path_beg, &self.replace_beg, self.path_rem) {
            (Some(beg), Some(rep), _) => match path.strip_prefix(beg.as_str()) {
                Some(tail) => Cow::Owned(format!("{rep}{tail}")),
                None => Cow::Borrowed(path),
            },
            (_, _, Some(n)) => {
                let cut = path.char_indices().nth(n).map_or(path.len(), |(i, _)| i);
                Cow::Borrowed(&path[cut..])
            }
            _ => Cow::Borrowed(path),
        };
        let out = if rest.starts_with('/') {
            rest.into_owned()
        } else {
            format!("/{rest}")
        };
        debug_assert!(out.starts_with('/'));
        out
    }

    fn matches(&self, path: &str, proto: Proto, tls: bool) -> bool {
        self.proto.is_none_or(|p| p == proto)
            && self.ssl.is_none_or(|s| s == tls)
            && self.path_beg.as_deref().is_none_or(|b| path.starts_with(b))
    }
}

/// Host header → lookup key: port removed, lower-cased (borrowed when already lower-case).
fn normalize_host(host: &str) -> Cow<'_, str> {
    let host = host.trim();
    let bare = if host.starts_with('[') {
        host.find(']').map_or(host, |end| &host[..=end])
    } else {
        host.split(':').next().unwrap_or(host)
    };
    if bare.bytes().any(|b| b.is_ascii_uppercase()) {
        Cow::Owned(bare.to_ascii_lowercase())
    } else {
        Cow::Borrowed(bare)
    }
}

/// Interprets a flag option: bare, or with an explicit yes/no style value.
fn flag(prop: &Prop) -> Result<bool, String> {
    match prop.value.as_deref() {
        None => Ok(true),
        Some(v) => match v.to_ascii_lowercase().as_str() {
            "" | "1" | "true" | "yes" => Ok(true),
            "0" | "false" | "no" => Ok(false),
            _ => Err(format!(
                "option {} expects no value or yes/no, got \"{v}\"",
                prop.key
            )),
        },
    }
}

/// The value of an option that needs one.
fn value(prop: &Prop) -> Result<&str, String> {
    prop.value
        .as_deref()
        .ok_or_else(|| format!("option {} needs a value ({}=...)", prop.key, prop.key))
}

/// The value of an option that needs a non-empty one.
fn nonempty(prop: &Prop) -> Result<&str, String> {
    match value(prop)? {
        "" => Err(format!("option {} needs a non-empty value", prop.key)),
        v => Ok(v),
    }
}

/// Condition options tack parses but does not implement.
const UNSUPPORTED_CONDITION_OPTIONS: &[&str] = &[
    "jsonp_mode",
    "jsonp_cb",
    "jsonp_body",
    "jsonp_defcb",
    "jsonp_defmethod",
    "sockjs",
    "sockjs_as_path",
    "log_level",
];

fn parse_rule(
    tokens: &[Token],
    line: usize,
    base_dir: &Path,
    env: &dyn RouteEnv,
    warnings: &mut Vec<String>,
) -> Result<Route, String> {
    debug_assert!(!tokens.is_empty());
    let cond = &tokens[0];
    if tokens.len() < 2 {
        return Err(format!("rule \"{}\" has no target", cond.raw));
    }
    let head = &cond.props[0];
    let (domain, props) = if head.value.is_some() {
        (None, &cond.props[..])
    } else {
        (Some(parse_domain(&head.key)?), &cond.props[1..])
    };
    let mut r = Route {
        id: String::new(),
        id_only: domain.is_none(),
        domain,
        proto: None,
        ssl: None,
        path_beg: None,
        prefix: None,
        as_host: None,
        path_rem: None,
        replace_beg: None,
        no_grip: false,
        debug: false,
        session: false,
        orig_headers: false,
        aco: false,
        sig_key: None,
        sig_iss: None,
        headers: Vec::new(),
        targets: Vec::new(),
        line,
    };
    let mut id = None;
    let mut seen: Vec<&str> = Vec::new();
    for p in props {
        if p.key != "header" {
            if seen.contains(&p.key.as_str()) {
                warnings.push(format!(
                    "option {} given more than once; the last one is used",
                    p.key
                ));
            }
            seen.push(&p.key);
        }
        match p.key.as_str() {
            "proto" => {
                r.proto = Some(match value(p)? {
                    "http" => Proto::Http,
                    "ws" => Proto::Ws,
                    v => return Err(format!("proto must be http or ws, got \"{v}\"")),
                })
            }
            "ssl" => {
                r.ssl = Some(match value(p)? {
                    "yes" => true,
                    "no" => false,
                    v => return Err(format!("ssl must be yes or no, got \"{v}\"")),
                })
            }
            "path_beg" => r.path_beg = Some(nonempty(p)?.to_string()),
            "id" => id = Some(nonempty(p)?.to_string()),
            "sig_iss" => r.sig_iss = Some(value(p)?.to_string()),
            "sig_key" => r.sig_key = parse_key(value(p)?, base_dir, env, KeyUse::Sign)?,
            "prefix" => r.prefix = Some(value(p)?.to_string()),
            "as_host" => r.as_host = Some(nonempty(p)?.to_string()),
            "path_rem" => {
                let v = value(p)?;
                r.path_rem =
                    Some(v.parse::<usize>().map_err(|_| {
                        format!("path_rem must be a non-negative integer, got \"{v}\"")
                    })?)
            }
            "replace_beg" => r.replace_beg = Some(value(p)?.to_string()),
            "no_grip" => r.no_grip = flag(p)?,
            "debug" => r.debug = flag(p)?,
            "session" => r.session = flag(p)?,
            "orig_headers" => r.orig_headers = flag(p)?,
            "aco" => r.aco = flag(p)?,
            "header" => r.headers.push(parse_header(value(p)?)?),
            k if UNSUPPORTED_CONDITION_OPTIONS.contains(&k) => warnings.push(format!(
                "route option {k} is not supported by tack; ignored"
            )),
            k => warnings.push(format!("unknown route option \"{k}\"; ignored")),
        }
    }
    if r.replace_beg.is_some() && r.path_beg.is_none() {
        warnings.push("replace_beg without path_beg has no effect".to_string());
    }
    if r.replace_beg.is_some() && r.path_beg.is_some() && r.path_rem.is_some() {
        warnings.push("both replace_beg and path_rem are set; replace_beg is used".to_string());
    }
    r.id = id.unwrap_or_else(|| cond.raw.clone());
    for t in &tokens[1..] {
        r.targets.push(parse_target(t, env, warnings)?);
    }
    debug_assert!(!r.targets.is_empty() && !r.id.is_empty());
    Ok(r)
}

/// A condition host: `*` or an exact host, lower-cased. Stored as "*" until `finish`.
fn parse_domain(d: &str) -> Result<String, String> {
    if d == "*" {
        return Ok("*".to_string());
    }
    if d.is_empty() {
        return Err("empty condition host".to_string());
    }
    if d.contains('*') {
        return Err(format!(
            "condition \"{d}\": partial wildcards are not supported (use an exact host or *)"
        ));
    }
    let has_port = if d.starts_with('[') {
        !d.ends_with(']')
    } else {
        d.contains(':')
    };
    if has_port {
        return Err(format!(
            "condition \"{d}\": the host must not include a port"
        ));
    }
    Ok(d.to_ascii_lowercase())
}

/// `Name:Value` → (name, value); the value's surrounding whitespace is trimmed.
fn parse_header(v: &str) -> Result<(String, String), String> {
    let (name, val) = v
        .split_once(':')
        .ok_or_else(|| format!("header option \"{v}\" must be Name:Value"))?;
    let name = name.trim();
    let token_char = |c: char| c.is_ascii_alphanumeric() || "!#$%&'*+-.^_`|~".contains(c);
    if name.is_empty() || !name.chars().all(token_char) {
        return Err(format!(
            "header option \"{v}\": invalid header name \"{name}\""
        ));
    }
    Ok((name.to_string(), val.trim().to_string()))
}

fn parse_target(
    t: &Token,
    env: &dyn RouteEnv,
    warnings: &mut Vec<String>,
) -> Result<Target, String> {
    let head = &t.props[0];
    if head.value.is_some() {
        return Err(format!("unknown target \"{}\"", t.raw));
    }
    let spec = head.key.as_str();
    if spec.starts_with("zhttp/") || spec.starts_with("zhttpreq/") {
        return Err(format!("target \"{spec}\": zhttp/zhttpreq targets are not supported (tack speaks HTTP to backends)"));
    }
    if spec == "test" {
        for p in &t.props[1..] {
            warnings.push(format!(
                "target option {} has no effect on the test target; ignored",
                p.key
            ));
        }
        return Ok(Target::Test);
    }
    let (host, port) = split_host_port(spec).ok_or_else(|| format!("unknown target \"{spec}\""))?;
    let mut target = HttpTarget {
        host: host.to_string(),
        port,
        addrs: Vec::new(),
        host_header: None,
        over_http: false,
        one_event: false,
        untrusted: false,
        subs: Vec::new(),
    };
    for p in &t.props[1..] {
        match p.key.as_str() {
            "ssl" | "insecure" | "client_cert" | "client_key" => {
                return Err(format!(
                    "target \"{spec}\": option {}: TLS to backends is not supported yet",
                    p.key
                ))
            }
            "host" => target.host_header = Some(nonempty(p)?.to_string()),
            "over_http" => target.over_http = flag(p)?,
            "one_event" => target.one_event = flag(p)?,
            "untrusted" => target.untrusted = flag(p)?,
            "sub" => target.subs.push(nonempty(p)?.to_string()),
            k @ ("trust_connect_host" | "ipc_file_mode") => warnings.push(format!(
                "target option {k} is not supported by tack; ignored"
            )),
            k => warnings.push(format!("unknown target option \"{k}\"; ignored")),
        }
    }
    let bare = host.trim_start_matches('[').trim_end_matches(']');
    target.addrs = env
        .resolve(bare, port)
        .map_err(|e| format!("target \"{spec}\": cannot resolve {bare}: {e}"))?;
    if target.addrs.is_empty() {
        return Err(format!(
            "target \"{spec}\": {bare} resolved to no addresses"
        ));
    }
    Ok(Target::Http(target))
}

/// `host:port` or `[v6]:port` with a non-zero port; `None` if malformed.
fn split_host_port(spec: &str) -> Option<(&str, u16)> {
    let (host, port) = spec.rsplit_once(':')?;
    let valid_host = if host.starts_with('[') {
        host.len() > 2 && host.ends_with(']') && !host[1..host.len() - 1].contains(['[', ']'])
    } else {
        !host.is_empty() && !host.contains([':', '[', ']', '/'])
    };
    let port = port.parse::<u16>().ok().filter(|&p| p != 0)?;
    valid_host.then_some((host, port))
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use std::collections::BTreeMap;
    use std::net::{IpAddr, Ipv4Addr};
    use std::path::PathBuf;

    /// Fake environment: every name resolves to 127.0.0.1 (IP literals to themselves) unless
    /// listed in `unresolvable`; files come from the map.
    #[derive(Default)]
    pub(crate) struct FakeEnv {
        pub files: BTreeMap<PathBuf, Vec<u8>>,
        pub unresolvable: Vec<String>,
    }

    impl RouteEnv for FakeEnv {
        fn resolve(&self, host: &str, port: u16) -> std::io::Result<Vec<SocketAddr>> {
            if self.unresolvable.iter().any(|h| h == host) {
                return Err(std::io::Error::other("no such host"));
            }
            let ip = host
                .parse::<IpAddr>()
                .unwrap_or(IpAddr::V4(Ipv4Addr::LOCALHOST));
            Ok(vec![SocketAddr::new(ip, port)])
        }

        fn read_file(&self, path: &Path) -> std::io::Result<Vec<u8>> {
            self.files
                .get(path)
                .cloned()
                .ok_or_else(|| std::io::Error::new(std::io::ErrorKind::NotFound, "not found"))
        }
    }

    fn parse(text: &str) -> Result<RouteTable, RouteError> {
        RouteTable::parse_with(text, "routes", &FakeEnv::default())
    }

    fn http(t: &Target) -> &HttpTarget {
        match t {
            Target::Http(h) => h,
            Target::Test => panic!("expected an http target"),
        }
    }

    #[test]
    fn route_table_is_send_and_sync() {
        fn check<T: Send + Sync>() {}
        check::<RouteTable>();
        check::<std::sync::Arc<RouteTable>>();
    }

    #[test]
    fn every_condition_option() {
        let t = parse(concat!(
            "# comment line\n",
            "\n",
            "Example.COM,proto=ws,ssl=yes,path_beg=/api/,id=r1,sig_iss=me,sig_key=base64:AAE=,prefix=pre-,",
            "orig_headers,as_host=back:81,path_rem=4,replace_beg=/v2/,debug,aco,session,no_grip,",
            "header=X-A:1,header=\"X-B: two words\",header=X-Del:  10.0.0.1:8080  # trailing\n",
        ))
        .unwrap();
        assert_eq!(t.len(), 1);
        let r = &t.routes()[0];
        assert_eq!(r.id, "r1");
        assert_eq!(r.domain.as_deref(), Some("example.com"));
        assert_eq!(r.proto, Some(Proto::Ws));
        assert_eq!(r.ssl, Some(true));
        assert_eq!(r.path_beg.as_deref(), Some("/api/"));
        assert_eq!(r.sig_iss.as_deref(), Some("me"));
        assert_eq!(r.sig_key, Some(SigKey::Secret(vec![0, 1])));
        assert_eq!(r.prefix.as_deref(), Some("pre-"));
        assert!(r.orig_headers && r.debug && r.aco && r.session && r.no_grip);
        assert_eq!(r.as_host.as_deref(), Some("back:81"));
        assert_eq!(r.path_rem, Some(4));
        assert_eq!(r.replace_beg.as_deref(), Some("/v2/"));
        assert_eq!(
            r.headers,
            vec![
                ("X-A".to_string(), "1".to_string()),
                ("X-B".to_string(), "two words".to_string()),
                ("X-Del".to_string(), String::new()),
            ]
        );
        assert_eq!(r.line, 3);
        assert_eq!(r.targets.len(), 1);
        let h = http(&r.targets[0]);
        assert_eq!((h.host.as_str(), h.port), ("10.0.0.1", 8080));
        assert_eq!(h.addrs, vec!["10.0.0.1:8080".parse().unwrap()]);
        assert_eq!(
            t.warnings(),
            ["routes:3: both replace_beg and path_rem are set; replace_beg is used"]
        );
    }

    #[test]
    fn target_options_and_failover_order() {
        let t = parse(
            "* a:1,host=h.example:9,over_http,one_event,untrusted,sub=c1,sub=c2 [::1]:2 test\n",
        )
        .unwrap();
        let r = &t.routes()[0];
        assert_eq!(r.domain, None);
        assert_eq!(r.id, "*");
        assert_eq!(r.targets.len(), 3);
        let a = http(&r.targets[0]);
        assert_eq!(
            a,
            &HttpTarget {
                host: "a".to_string(),
                port: 1,
                addrs: vec!["127.0.0.1:1".parse().unwrap()],
                host_header: Some("h.example:9".to_string()),
                over_http: true,
                one_event: true,
                untrusted: true,
                subs: vec!["c1".to_string(), "c2".to_string()],
            }
        );
        let b = http(&r.targets[1]);
        assert_eq!((b.host.as_str(), b.port), ("[::1]", 2));
        assert_eq!(b.addrs, vec!["[::1]:2".parse().unwrap()]);
        assert_eq!(r.targets[2], Target::Test);
        assert!(t.warnings().is_empty());
    }

    #[test]
    fn unsupported_and_unknown_options_warn() {
        let t = parse("*,jsonp_mode=basic,sockjs=/s,log_level=3,frob=1 x:1,trust_connect_host,zap test,over_http\n").unwrap();
        assert_eq!(
            t.warnings(),
            [
                "routes:1: route option jsonp_mode is not supported by tack; ignored",
                "routes:1: route option sockjs is not supported by tack; ignored",
                "routes:1: route option log_level is not supported by tack; ignored",
                "routes:1: unknown route option \"frob\"; ignored",
                "routes:1: target option trust_connect_host is not supported by tack; ignored",
                "routes:1: unknown target option \"zap\"; ignored",
                "routes:1: target option over_http has no effect on the test target; ignored",
            ]
        );
    }

    #[test]
    fn errors_carry_file_and_line() {
        let e = parse("* a:1\n\n* foo:bar:baz\n").unwrap_err();
        assert_eq!(e.to_string(), "routes:3: unknown target \"foo:bar:baz\"");
        let cases = [
            ("* a:1,ssl", "routes:1: target \"a:1\": option ssl: TLS to backends is not supported yet"),
            ("* a:1,insecure", "routes:1: target \"a:1\": option insecure: TLS to backends is not supported yet"),
            ("* zhttp/tcp://127.0.0.1:5", "routes:1: target \"zhttp/tcp://127.0.0.1:5\": zhttp/zhttpreq targets are not supported (tack speaks HTTP to backends)"),
            ("* zhttpreq/x", "routes:1: target \"zhttpreq/x\": zhttp/zhttpreq targets are not supported (tack speaks HTTP to backends)"),
            ("*", "routes:1: rule \"*\" has no target"),
            ("*,proto=tcp a:1", "routes:1: proto must be http or ws, got \"tcp\""),
            ("*,ssl=maybe a:1", "routes:1: ssl must be yes or no, got \"maybe\""),
            ("*,path_beg a:1", "routes:1: option path_beg needs a value (path_beg=...)"),
            ("*,path_beg= a:1", "routes:1: option path_beg needs a non-empty value"),
            ("*,path_rem=-1 a:1", "routes:1: path_rem must be a non-negative integer, got \"-1\""),
            ("*,debug=perhaps a:1", "routes:1: option debug expects no value or yes/no, got \"perhaps\""),
            ("*,header=NoColon a:1", "routes:1: header option \"NoColon\" must be Name:Value"),
            ("*,header=Bad Name:x a:1", "routes:1: header option \"Bad\" must be Name:Value"),
            ("*,header=\"Bad Name:x\" a:1", "routes:1: header option \"Bad Name:x\": invalid header name \"Bad Name\""),
            ("*.example.com a:1", "routes:1: condition \"*.example.com\": partial wildcards are not supported (use an exact host or *)"),
            ("example.com:80 a:1", "routes:1: condition \"example.com:80\": the host must not include a port"),
            ("* a", "routes:1: unknown target \"a\""),
            ("* a:0", "routes:1: unknown target \"a:0\""),
            ("* a:70000", "routes:1: unknown target \"a:70000\""),
            ("* ::1:80", "routes:1: unknown target \"::1:80\""),
            ("* a=b", "routes:1: unknown target \"a=b\""),
            ("* \"unterminated", "routes:1: unterminated quote in \"\"unterminated\""),
        ];
        for (text, want) in cases {
            assert_eq!(parse(text).unwrap_err().to_string(), want, "input: {text}");
        }
        let env = FakeEnv {
            unresolvable: vec!["nowhere".to_string()],
            ..FakeEnv::default()
        };
        let e = RouteTable::parse_with("\n* nowhere:1", "/etc/pushpin/routes", &env).unwrap_err();
        assert_eq!(
            e.to_string(),
            "/etc/pushpin/routes:2: target \"nowhere:1\": cannot resolve nowhere: no such host"
        );
        assert_eq!((e.file.as_str(), e.line), ("/etc/pushpin/routes", 2));
    }

    #[test]
    fn sig_key_file_is_relative_to_the_routes_file() {
        let mut env = FakeEnv::default();
        env.files
            .insert("/etc/pushpin/key.hex".into(), b"abcd".to_vec());
        let t = RouteTable::parse_with("*,sig_key=file:key.hex a:1", "/etc/pushpin/routes", &env)
            .unwrap();
        assert_eq!(
            t.routes()[0].sig_key,
            Some(SigKey::Secret(vec![0xab, 0xcd]))
        );
        env.files.insert(
            "/etc/pushpin/keys/ec.pem".into(),
            include_bytes!("../sig/testdata/ec.pem").to_vec(),
        );
        let t = RouteTable::parse_with(
            "*,sig_key=file:keys/ec.pem,sig_iss=r a:1",
            "/etc/pushpin/routes",
            &env,
        )
        .unwrap();
        let key = t.routes()[0].sig_key.as_ref().unwrap();
        assert_eq!(key.alg(), crate::sig::Alg::Es256);
        assert!(key.can_sign());
        env.files.insert(
            "/etc/pushpin/key.pem".into(),
            include_bytes!("../sig/testdata/rsa-pub.pem").to_vec(),
        );
        let e = RouteTable::parse_with(
            "* a:1\n*,sig_key=file:key.pem a:1",
            "/etc/pushpin/routes",
            &env,
        )
        .unwrap_err();
        assert_eq!(e.line, 2);
        assert!(
            e.message
                .contains("key file /etc/pushpin/key.pem: line 1: a public key cannot sign"),
            "{e}"
        );
    }

    #[test]
    fn from_lines_numbers_entries() {
        let lines = vec![
            "* test".to_string(),
            "x.com,id=x 127.0.0.1:9".to_string(),
            "bad".to_string(),
        ];
        let e = RouteTable::from_lines_with(&lines, "--route", &FakeEnv::default()).unwrap_err();
        assert_eq!(e.to_string(), "--route:3: rule \"bad\" has no target");
        let t = RouteTable::from_lines_with(&lines[..2], "--route", &FakeEnv::default()).unwrap();
        assert_eq!(t.len(), 2);
        assert_eq!(t.lookup_id("x").map(|r| r.line), Some(2));
    }

    #[test]
    fn host_rules_shadow_wildcard_pushpin_quirk() {
        let t = parse("* any:1\nexample.com,path_beg=/api a:1\n").unwrap();
        let host_rule = t
            .lookup(Some("example.com"), "/api/x", Proto::Http, false)
            .unwrap();
        assert_eq!(host_rule.line, 2);
        // The host has rules, none matches: no fallback to `*`.
        assert_eq!(
            t.lookup(Some("example.com"), "/other", Proto::Http, false),
            None
        );
        // Other hosts and no host use `*`.
        assert_eq!(
            t.lookup(Some("other.com"), "/api", Proto::Http, false)
                .unwrap()
                .line,
            1
        );
        assert_eq!(t.lookup(None, "/api", Proto::Http, false).unwrap().line, 1);
    }

    #[test]
    fn host_match_ignores_port_and_case() {
        let t = parse("Example.com a:1\n[::1] b:2\n").unwrap();
        for host in ["example.com", "EXAMPLE.com:8080", " example.COM "] {
            assert_eq!(
                t.lookup(Some(host), "/", Proto::Http, false)
                    .map(|r| r.line),
                Some(1),
                "{host}"
            );
        }
        assert_eq!(
            t.lookup(Some("[::1]:7999"), "/", Proto::Ws, true)
                .map(|r| r.line),
            Some(2)
        );
        assert_eq!(t.lookup(Some("example.org"), "/", Proto::Http, false), None);
        assert_eq!(t.lookup(Some(""), "/", Proto::Http, false), None);
    }

    #[test]
    fn specificity_order() {
        // Written least specific first; lookup must prefer the specific ones.
        let t = parse(concat!(
            "h a:1\n",                        // 1
            "h,ssl=yes a:1\n",                // 2
            "h,path_beg=/a a:1\n",            // 3
            "h,path_beg=/a/b a:1\n",          // 4
            "h,path_beg=/a/b,ssl=no a:1\n",   // 5
            "h,proto=ws a:1\n",               // 6
            "h,proto=http,path_beg=/a a:1\n", // 7
        ))
        .unwrap();
        let line = |path: &str, proto: Proto, tls: bool| {
            t.lookup(Some("h"), path, proto, tls).map(|r| r.line)
        };
        assert_eq!(line("/x", Proto::Http, false), Some(1));
        assert_eq!(line("/x", Proto::Http, true), Some(2));
        assert_eq!(line("/a", Proto::Ws, false), Some(6)); // proto beats path_beg
        assert_eq!(line("/a/b/c", Proto::Http, false), Some(7)); // proto set first
        let t2 =
            parse("h,path_beg=/a a:1\nh,path_beg=/a/b a:1\nh,path_beg=/a/b,ssl=no a:1\n").unwrap();
        let line2 =
            |path: &str, tls: bool| t2.lookup(Some("h"), path, Proto::Http, tls).map(|r| r.line);
        assert_eq!(line2("/a/b/c", false), Some(3)); // same length: ssl set beats unset
        assert_eq!(line2("/a/b/c", true), Some(2)); // ssl=no misses; longer path_beg wins
        assert_eq!(line2("/a/c", true), Some(1));
        assert_eq!(line2("/b", true), None);
        assert_eq!(line("/a/b/c", Proto::Ws, true), Some(6));
    }

    #[test]
    fn duplicates_are_skipped_with_a_warning() {
        let t = parse("*,path_beg=/a a:1\n*,path_beg=/a b:2\nh,path_beg=/a c:3\n").unwrap();
        assert_eq!(t.len(), 2);
        assert_eq!(
            t.warnings(),
            ["routes:2: duplicate of the rule on line 1 for * (same proto, ssl and path_beg); skipped"]
        );
        assert_eq!(
            t.lookup(None, "/a", Proto::Http, false).map(|r| r.line),
            Some(1)
        );
    }

    #[test]
    fn rules_without_domain_and_ids() {
        let t = parse("id=hidden a:1\n* b:2\nx,id=dup c:3\ny,id=dup d:4\n").unwrap();
        assert_eq!(t.len(), 4);
        let hidden = t.lookup_id("hidden").unwrap();
        assert_eq!(hidden.domain, None);
        assert!(hidden.id_only);
        assert!(!t.lookup_id("*").unwrap().id_only);
        assert_eq!(hidden.line, 1);
        // Never matched by host: `*` wins for everyone.
        assert_eq!(
            t.lookup(None, "/", Proto::Http, false).map(|r| r.line),
            Some(2)
        );
        assert_eq!(t.lookup_id("*").map(|r| r.line), Some(2));
        assert_eq!(t.lookup_id("dup"), None);
        assert_eq!(
            t.warnings(),
            ["routes:4: route id \"dup\" is also used on line 3; it cannot be selected by id"]
        );
    }

    #[test]
    fn rewrite_path_rules() {
        let t = parse(concat!(
            "a,path_beg=/api/,replace_beg=/v2/ x:1\n",
            "b,path_beg=/ws,path_rem=3 x:1\n",
            "c x:1\n",
            "d,path_beg=/api,replace_beg= x:1\n",
        ))
        .unwrap();
        // "/" does not start with /api/, and the host has rules: no route.
        assert_eq!(t.lookup(Some("a"), "/", Proto::Http, false), None);
        let a = t
            .lookup(Some("a"), "/api/items", Proto::Http, false)
            .unwrap();
        assert_eq!(a.rewrite_path("/api/items?x=1"), "/v2/items?x=1");
        assert_eq!(a.rewrite_path("/other"), "/other");
        let c = t.lookup(Some("c"), "/keep/me", Proto::Http, false).unwrap();
        let b = &t.routes()[1];
        assert_eq!(b.rewrite_path("/ws/chat"), "/chat");
        assert_eq!(b.rewrite_path("/ws"), "/");
        assert_eq!(b.rewrite_path("/w"), "/");
        assert_eq!(b.rewrite_path("/wsx"), "/x");
        assert_eq!(b.rewrite_path("/é/x"), "/x"); // characters, not bytes
        assert_eq!(c.rewrite_path("/keep/me"), "/keep/me");
        let d = &t.routes()[3];
        assert_eq!(d.rewrite_path("/api/x"), "/x");
        assert_eq!(d.rewrite_path("/apix"), "/x");
    }

    #[test]
    fn too_many_routes_is_an_error() {
        let mut text = String::new();
        for i in 0..=ROUTES_MAX {
            text.push_str(&format!("*,path_beg=/{i} a:1\n"));
        }
        let e = parse(&text).unwrap_err();
        assert_eq!(e.line, ROUTES_MAX + 1);
        assert!(e.message.starts_with("too many routes"));
    }
}
