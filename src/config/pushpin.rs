//! Reader for Pushpin's `pushpin.conf` (INI), and the keys tack takes from it.
//!
//! Format: `[section]`, `key=value`, full-line `#` / `;` comments, blank lines. A value may be
//! wrapped in double quotes. `include=<path>` (any section) merges another file, resolved
//! relative to the including file; keys of the including file win over included ones. Values
//! may use `{configdir}`, `{libdir}`, `{rundir}` and `{ipc_prefix}`. An include under
//! `{libdir}` that does not exist is skipped with a note: Debian's `{libdir}/internal.conf`
//! only configures ZeroMQ sockets tack has no use for.
//!
//! Keys tack does not read are reported as "ignored keys" (`section.key`), never an error.
//! Files are read through [`RouteEnv`] so tests can supply them from memory.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};

use super::limits::*;
use super::{parse_listen, ConfigError, HandlerConfig, ProxyConfig, XffRule, XfpMode};
use crate::route::{parse_key, KeyUse, RouteEnv, SigKey};

/// Where `{libdir}` points: Pushpin's Debian/Ubuntu package layout.
pub const LIBDIR: &str = "/usr/lib/pushpin";
/// The signing key the stock pushpin.conf ships (grip-spec §5.3): loaded as-is, with a note.
pub const STOCK_SIG_KEY: &str = "changeme";
/// Include nesting bound: guards against include cycles.
const INCLUDE_DEPTH_MAX: usize = 8;

/// One `key=value` line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IniEntry {
    /// Section name (`General` before any header, like QSettings).
    pub section: String,
    /// Key as written (trimmed).
    pub key: String,
    /// Value, trimmed, unquoted, with `{...}` substitutions applied.
    pub value: String,
    /// File the line came from, for messages.
    pub file: String,
    /// 1-based line number.
    pub line: usize,
    /// 0 for the main file, +1 per include level.
    depth: usize,
}

impl IniEntry {
    /// A `file:line: <key> ...` error about this entry's value.
    pub fn error(&self, message: impl std::fmt::Display) -> ConfigError {
        ConfigError::At {
            file: self.file.clone(),
            line: self.line,
            message: format!("{} = \"{}\": {message}", self.key, self.value),
        }
    }
}

/// A parsed INI file with its includes.
#[derive(Debug, Clone, Default)]
pub struct IniDoc {
    entries: Vec<IniEntry>,
    /// Info-level notes (skipped `{libdir}` includes).
    pub notes: Vec<String>,
}

impl IniDoc {
    /// Parses `text` (the contents of `path`), reading includes through `env`.
    pub fn parse(text: &str, path: &Path, env: &dyn RouteEnv) -> Result<IniDoc, ConfigError> {
        let config_dir = path.parent().unwrap_or(Path::new("")).to_path_buf();
        let mut doc = IniDoc::default();
        doc.parse_file(text, path, 0, &config_dir, env)?;
        doc.substitute(&config_dir);
        Ok(doc)
    }

    fn parse_file(
        &mut self,
        text: &str,
        path: &Path,
        depth: usize,
        config_dir: &Path,
        env: &dyn RouteEnv,
    ) -> Result<(), ConfigError> {
        let file = path.display().to_string();
        let mut section = "General".to_string();
        for (i, raw) in text.lines().enumerate() {
            let line = i + 1;
            let err = |message: String| ConfigError::At {
                file: file.clone(),
                line,
                message,
            };
            let t = raw.trim();
            if t.is_empty() || t.starts_with('#') || t.starts_with(';') {
                continue;
            }
            if let Some(rest) = t.strip_prefix('[') {
                let name = rest
                    .strip_suffix(']')
                    .ok_or_else(|| err(format!("unterminated section header \"{t}\"")))?
                    .trim();
                if name.is_empty() {
                    return Err(err("empty section name".to_string()));
                }
                section = name.to_string();
                continue;
            }
            let (key, value) = t
                .split_once('=')
                .ok_or_else(|| err(format!("expected key=value or [section], got \"{t}\"")))?;
            let key = key.trim();
            if key.is_empty() {
                return Err(err(format!("missing key before '=' in \"{t}\"")));
            }
            let value = unquote(value.trim());
            if key == "include" {
                self.include(value, path, depth, config_dir, env)
                    .map_err(err)?;
                continue;
            }
            self.entries.push(IniEntry {
                section: section.clone(),
                key: key.to_string(),
                value: value.to_string(),
                file: file.clone(),
                line,
                depth,
            });
        }
        Ok(())
    }

    fn include(
        &mut self,
        value: &str,
        from: &Path,
        depth: usize,
        config_dir: &Path,
        env: &dyn RouteEnv,
    ) -> Result<(), String> {
        if depth + 1 > INCLUDE_DEPTH_MAX {
            return Err(format!(
                "includes nested deeper than {INCLUDE_DEPTH_MAX} (a cycle?)"
            ));
        }
        let under_libdir = value.contains("{libdir}");
        let expanded = value
            .replace("{libdir}", LIBDIR)
            .replace("{configdir}", &config_dir.display().to_string());
        let target = from.parent().unwrap_or(Path::new("")).join(&expanded);
        match env.read_file(&target) {
            Ok(bytes) => {
                let text = String::from_utf8(bytes)
                    .map_err(|_| format!("include {}: not UTF-8", target.display()))?;
                self.parse_file(&text, &target, depth + 1, config_dir, env)
                    .map_err(|e| format!("in include {}: {e}", target.display()))
            }
            Err(e) if under_libdir && e.kind() == std::io::ErrorKind::NotFound => {
                self.notes.push(format!(
                    "skipped include {} (not found; it only configures Pushpin's internal ZeroMQ sockets)",
                    target.display()
                ));
                Ok(())
            }
            Err(e) => Err(format!("cannot read include {}: {e}", target.display())),
        }
    }

    /// Applies `{configdir}`, `{libdir}`, `{rundir}`, `{ipc_prefix}` to every value.
    fn substitute(&mut self, config_dir: &Path) {
        let rundir = self
            .get("global", "rundir")
            .map_or("run".to_string(), |e| e.value.clone());
        let ipc_prefix = self
            .get("global", "ipc_prefix")
            .map_or("pushpin-".to_string(), |e| e.value.clone());
        let config_dir = config_dir.display().to_string();
        for e in &mut self.entries {
            if e.value.contains('{') {
                e.value = e
                    .value
                    .replace("{configdir}", &config_dir)
                    .replace("{libdir}", LIBDIR)
                    .replace("{rundir}", &rundir)
                    .replace("{ipc_prefix}", &ipc_prefix);
            }
        }
    }

    /// The effective entry for `section.key`: the shallowest file wins, then the last line.
    pub fn get(&self, section: &str, key: &str) -> Option<&IniEntry> {
        // Entries are in reading order (an include's lines sit where the include was), so
        // the larger index is the later line.
        self.entries
            .iter()
            .enumerate()
            .filter(|(_, e)| e.section == section && e.key == key)
            .max_by_key(|&(i, e)| (std::cmp::Reverse(e.depth), i))
            .map(|(_, e)| e)
    }

    /// Every distinct `section.key` not in `known`, sorted.
    pub fn unknown_keys(&self, known: &[(&str, &str)]) -> Vec<String> {
        let mut out: Vec<String> = self
            .entries
            .iter()
            .filter(|e| !known.iter().any(|&(s, k)| s == e.section && k == e.key))
            .map(|e| format!("{}.{}", e.section, e.key))
            .collect();
        out.sort();
        out.dedup();
        out
    }
}

/// Strips one pair of surrounding double quotes.
fn unquote(v: &str) -> &str {
    v.strip_prefix('"')
        .and_then(|s| s.strip_suffix('"'))
        .unwrap_or(v)
}

/// Keys of pushpin.conf that tack reads. Everything else is reported as ignored.
pub const KNOWN_KEYS: &[(&str, &str)] = &[
    ("runner", "http_port"),
    ("runner", "client_maxconn"),
    ("runner", "client_buffer_size"),
    ("runner", "log_level"),
    ("runner", "allow_compression"),
    ("proxy", "routesfile"),
    ("proxy", "sig_key"),
    ("proxy", "sig_iss"),
    ("proxy", "upstream_key"),
    ("proxy", "x_forwarded_for"),
    ("proxy", "x_forwarded_for_trusted"),
    ("proxy", "set_x_forwarded_protocol"),
    ("proxy", "accept_x_forwarded_protocol"),
    ("proxy", "debug"),
    ("proxy", "prometheus_port"),
    ("proxy", "prometheus_prefix"),
    ("proxy", "max_open_requests"),
    ("handler", "push_in_http_addr"),
    ("handler", "push_in_http_port"),
    ("handler", "push_in_http_max_headers_size"),
    ("handler", "push_in_http_max_body_size"),
    ("handler", "message_rate"),
    ("handler", "message_hwm"),
    ("handler", "message_wait"),
    ("handler", "id_cache_ttl"),
    ("handler", "connection_subscription_max"),
    ("handler", "subscription_linger"),
    ("handler", "prometheus_port"),
];

/// What pushpin.conf (or the built-in defaults, when there is no file) says, validated.
/// Keys that the tuning file or CLI may override stay `Option` so precedence is visible.
#[derive(Debug, Clone)]
pub struct PushpinSettings {
    /// `[runner] http_port`; `None` = not set (default 0.0.0.0:7999 applies).
    pub http_listen: Option<Vec<SocketAddr>>,
    /// `[runner] client_maxconn` (instance-wide).
    pub client_maxconn: Option<usize>,
    /// `[runner] client_buffer_size` (bounded like `header_bytes_max`).
    pub client_buffer_size: Option<usize>,
    /// `[runner] log_level` (the most verbose of its entries).
    pub log_level: Option<tracing::Level>,
    /// `[runner] allow_compression`: WebSocket permessage-deflate (default off, as Pushpin).
    pub allow_compression: bool,
    /// `[proxy] routesfile`, resolved against the config file's directory; `None` without a
    /// config file.
    pub routes_file: Option<PathBuf>,
    /// `[proxy]` keys.
    pub proxy: ProxyConfig,
    /// `[handler]` keys.
    pub handler: HandlerConfig,
    /// `[handler] push_in_http_addr:push_in_http_port`.
    pub publish_listen: SocketAddr,
    /// `[proxy] prometheus_port`, else `[handler] prometheus_port`.
    pub prometheus_listen: Option<SocketAddr>,
    /// `[proxy] prometheus_prefix`.
    pub prometheus_prefix: String,
    /// `section.key` entries tack does not use.
    pub ignored_keys: Vec<String>,
    /// Info-level notes from reading the file.
    pub notes: Vec<String>,
}

impl Default for PushpinSettings {
    /// The built-in defaults (no config file). Signing is off: the stock *file* sets
    /// `sig_key=changeme`, but tack does not invent a known key when there is no file.
    fn default() -> Self {
        PushpinSettings {
            http_listen: None,
            client_maxconn: None,
            client_buffer_size: None,
            log_level: None,
            allow_compression: false,
            routes_file: None,
            proxy: ProxyConfig::default(),
            handler: HandlerConfig::default(),
            publish_listen: SocketAddr::new(
                IpAddr::from(DEFAULT_PUBLISH_ADDR),
                DEFAULT_PUBLISH_PORT,
            ),
            prometheus_listen: None,
            prometheus_prefix: String::new(),
            ignored_keys: Vec::new(),
            notes: Vec::new(),
        }
    }
}

impl PushpinSettings {
    /// Reads and validates the keys tack uses. `path` anchors `routesfile` and `file:` keys.
    pub fn from_ini(doc: &IniDoc, path: &Path, env: &dyn RouteEnv) -> Result<Self, ConfigError> {
        let dir = path.parent().unwrap_or(Path::new(""));
        let mut s = PushpinSettings {
            ignored_keys: doc.unknown_keys(KNOWN_KEYS),
            notes: doc.notes.clone(),
            ..PushpinSettings::default()
        };
        let get = |sec: &str, key: &str| doc.get(sec, key);

        if let Some(e) = get("runner", "http_port") {
            let list = split_list(&e.value)
                .map(|item| {
                    parse_listen(item, IpAddr::V4(Ipv4Addr::UNSPECIFIED)).map_err(|m| e.error(m))
                })
                .collect::<Result<Vec<_>, _>>()?;
            s.http_listen = Some(list);
        }
        s.client_maxconn = get("runner", "client_maxconn")
            .map(|e| int_in(e, (1, 10_000_000)))
            .transpose()?;
        s.client_buffer_size = get("runner", "client_buffer_size")
            .map(|e| int_in(e, HEADER_BYTES_MAX_RANGE))
            .transpose()?;
        if let Some(e) = get("runner", "allow_compression") {
            s.allow_compression = boolean(e)?;
        }
        if let Some(e) = get("runner", "log_level") {
            s.log_level = Some(pushpin_log_level(&e.value).map_err(|m| e.error(m))?);
        }

        let routes = get("proxy", "routesfile").map_or("routes", |e| e.value.as_str());
        s.routes_file = Some(dir.join(routes));
        let p = &mut s.proxy;
        if let Some(e) = get("proxy", "sig_key") {
            p.sig_key = key(e, dir, env, KeyUse::Sign)?;
            if e.value == STOCK_SIG_KEY {
                s.notes.push(format!(
                    "{}:{}: sig_key is Pushpin's stock \"{STOCK_SIG_KEY}\": anyone can forge Grip-Sig; set a real secret",
                    e.file, e.line
                ));
            }
        }
        if let Some(e) = get("proxy", "sig_iss") {
            p.sig_iss = e.value.clone();
        }
        if let Some(e) = get("proxy", "upstream_key") {
            p.upstream_key = key(e, dir, env, KeyUse::Verify)?;
        }
        if let Some(e) = get("proxy", "x_forwarded_for") {
            p.xff = xff_rules(&e.value).map_err(|m| e.error(m))?;
        }
        if let Some(e) = get("proxy", "x_forwarded_for_trusted") {
            p.xff_trusted = xff_rules(&e.value).map_err(|m| e.error(m))?;
        }
        if let Some(e) = get("proxy", "set_x_forwarded_protocol") {
            // Pushpin: "proto-only" and "true" are recognised; any other value disables it.
            p.xfp = match e.value.as_str() {
                "proto-only" => XfpMode::ProtoOnly,
                "true" => XfpMode::Both,
                _ => XfpMode::None,
            };
        }
        if let Some(e) = get("proxy", "accept_x_forwarded_protocol") {
            p.accept_xfp = boolean(e)?;
        }
        if let Some(e) = get("proxy", "debug") {
            p.debug = boolean(e)?;
        }
        if let Some(e) = get("proxy", "max_open_requests") {
            let n: i64 = e
                .value
                .parse()
                .map_err(|_| e.error("expected an integer (-1 = unlimited)"))?;
            p.max_open_requests = match n {
                n if n < 0 => None,
                0 => return Err(e.error("must be positive, or -1 for unlimited")),
                n => Some(usize::try_from(n).map_err(|_| e.error("too large"))?),
            };
        }
        if let Some(e) = get("proxy", "prometheus_prefix") {
            s.prometheus_prefix = e.value.clone();
        }
        let prom = |e: &IniEntry| {
            parse_listen(&e.value, IpAddr::V4(Ipv4Addr::UNSPECIFIED)).map_err(|m| e.error(m))
        };
        match (
            get("proxy", "prometheus_port"),
            get("handler", "prometheus_port"),
        ) {
            (Some(e), other) => {
                s.prometheus_listen = non_empty(e).map(prom).transpose()?;
                if other.is_some() {
                    // tack serves one exporter for the whole process.
                    s.ignored_keys.push("handler.prometheus_port".to_string());
                }
            }
            (None, Some(e)) => s.prometheus_listen = non_empty(e).map(prom).transpose()?,
            (None, None) => {}
        }

        let h = &mut s.handler;
        let mut publish_ip = s.publish_listen.ip();
        let mut publish_port = s.publish_listen.port();
        if let Some(e) = get("handler", "push_in_http_addr") {
            publish_ip = e
                .value
                .parse()
                .map_err(|_| e.error("expected an IP address"))?;
        }
        if let Some(e) = get("handler", "push_in_http_port") {
            publish_port = port(e)?;
        }
        s.publish_listen = SocketAddr::new(publish_ip, publish_port);
        if let Some(e) = get("handler", "push_in_http_max_headers_size") {
            h.publish_headers_bytes_max = int_in(e, PUBLISH_HEADERS_BYTES_RANGE)?;
        }
        if let Some(e) = get("handler", "push_in_http_max_body_size") {
            h.publish_body_bytes_max = int_in(e, PUBLISH_BODY_BYTES_RANGE)?;
        }
        if let Some(e) = get("handler", "message_rate") {
            h.message_rate = optional_limit(e)?;
        }
        if let Some(e) = get("handler", "message_hwm") {
            h.message_hwm = optional_limit(e)?;
        }
        if let Some(e) = get("handler", "message_wait") {
            h.message_wait_ms = int_in(e, (0, MESSAGE_WAIT_MS_MAX as usize))? as u64;
        }
        if let Some(e) = get("handler", "id_cache_ttl") {
            h.id_cache_ttl_s = int_in(e, (0, ID_CACHE_TTL_S_MAX as usize))? as u64;
        }
        if let Some(e) = get("handler", "connection_subscription_max") {
            h.connection_subscription_max = int_in(e, CONNECTION_SUBSCRIPTION_MAX_RANGE)?;
        }
        if let Some(e) = get("handler", "subscription_linger") {
            h.subscription_linger_s = int_in(e, (0, SUBSCRIPTION_LINGER_S_MAX as usize))? as u64;
        }
        Ok(s)
    }
}

/// Comma list items, trimmed, empty items dropped.
fn split_list(v: &str) -> impl Iterator<Item = &str> {
    v.split(',').map(str::trim).filter(|s| !s.is_empty())
}

fn non_empty(e: &IniEntry) -> Option<&IniEntry> {
    (!e.value.is_empty()).then_some(e)
}

fn int_in(e: &IniEntry, (lo, hi): (usize, usize)) -> Result<usize, ConfigError> {
    let n: usize = e
        .value
        .parse()
        .map_err(|_| e.error("expected a non-negative integer"))?;
    if n < lo || n > hi {
        return Err(e.error(format!("must be between {lo} and {hi}")));
    }
    Ok(n)
}

fn port(e: &IniEntry) -> Result<u16, ConfigError> {
    e.value
        .parse::<u16>()
        .ok()
        .filter(|&p| p != 0)
        .ok_or_else(|| e.error("expected a port 1-65535"))
}

/// Pushpin's rate/hwm style value: a negative number means unlimited.
fn optional_limit(e: &IniEntry) -> Result<Option<u32>, ConfigError> {
    let n: i64 = e
        .value
        .parse()
        .map_err(|_| e.error("expected an integer (-1 = unlimited)"))?;
    match n {
        n if n < 0 => Ok(None),
        0 => Err(e.error("must be positive, or -1 for unlimited")),
        n => u32::try_from(n).map(Some).map_err(|_| e.error("too large")),
    }
}

fn boolean(e: &IniEntry) -> Result<bool, ConfigError> {
    match e.value.to_ascii_lowercase().as_str() {
        "true" | "yes" | "1" | "on" => Ok(true),
        "false" | "no" | "0" | "off" | "" => Ok(false),
        _ => Err(e.error("expected true or false")),
    }
}

/// A `sig_key` / `upstream_key` value (`file:` relative to the config file's directory).
fn key(
    e: &IniEntry,
    dir: &Path,
    env: &dyn RouteEnv,
    key_use: KeyUse,
) -> Result<Option<SigKey>, ConfigError> {
    parse_key(&e.value, dir, env, key_use).map_err(|m| e.error(m))
}

/// `truncate:N` / `append` comma list.
fn xff_rules(v: &str) -> Result<Vec<XffRule>, String> {
    split_list(v)
        .map(|item| match item.split_once(':') {
            None if item == "append" => Ok(XffRule::Append),
            Some(("truncate", n)) => n
                .trim()
                .parse()
                .map(XffRule::Truncate)
                .map_err(|_| format!("truncate needs a count, got \"{item}\"")),
            _ => Err(format!(
                "unknown rule \"{item}\" (expected truncate:N or append)"
            )),
        })
        .collect()
}

/// Pushpin log level: `N` or `service:N` items; the most verbose item wins.
pub(crate) fn pushpin_log_level(v: &str) -> Result<tracing::Level, String> {
    let mut best: Option<u8> = None;
    for item in split_list(v) {
        let n = item.rsplit_once(':').map_or(item, |(_, n)| n).trim();
        let n: u8 = n
            .parse()
            .map_err(|_| format!("log level \"{item}\" is not a number 0-3"))?;
        best = Some(best.map_or(n, |b| b.max(n)));
    }
    best.map(level_from_number)
        .ok_or_else(|| "empty log level".to_string())
}

/// Pushpin numbering: 0 error, 1 warning, 2 info, 3 (and above) debug.
pub(crate) fn level_from_number(n: u8) -> tracing::Level {
    match n {
        0 => tracing::Level::ERROR,
        1 => tracing::Level::WARN,
        2 => tracing::Level::INFO,
        _ => tracing::Level::DEBUG,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::route::tests::FakeEnv;

    fn doc(text: &str, env: &FakeEnv) -> Result<IniDoc, ConfigError> {
        IniDoc::parse(text, Path::new("/etc/pushpin/pushpin.conf"), env)
    }

    #[test]
    fn sections_comments_and_values() {
        let env = FakeEnv::default();
        let d = doc(
            "top=1\n# comment\n; other comment\n\n[runner]\n  http_port = 7999 \nq=\"a b\"\n[ proxy ]\nsig_key=\n",
            &env,
        )
        .unwrap();
        let e = d.get("runner", "http_port").unwrap();
        assert_eq!(
            (e.value.as_str(), e.line, e.file.as_str()),
            ("7999", 6, "/etc/pushpin/pushpin.conf")
        );
        assert_eq!(d.get("runner", "q").unwrap().value, "a b");
        assert_eq!(d.get("proxy", "sig_key").unwrap().value, "");
        assert_eq!(d.get("General", "top").unwrap().value, "1");
        assert_eq!(d.get("runner", "missing"), None);
        assert_eq!(
            d.unknown_keys(&[("runner", "http_port")]),
            ["General.top", "proxy.sig_key", "runner.q"]
        );
    }

    #[test]
    fn later_line_wins_and_substitutions() {
        let env = FakeEnv::default();
        let d = doc("[global]\nrundir=/run/p\nipc_prefix=x-\n[a]\nk=1\nk=2\nspec=ipc://{rundir}/{ipc_prefix}c\ndir={configdir}/r\nlib={libdir}/i\n", &env).unwrap();
        assert_eq!(d.get("a", "k").unwrap().value, "2");
        assert_eq!(d.get("a", "spec").unwrap().value, "ipc:///run/p/x-c");
        assert_eq!(d.get("a", "dir").unwrap().value, "/etc/pushpin/r");
        assert_eq!(d.get("a", "lib").unwrap().value, "/usr/lib/pushpin/i");
    }

    #[test]
    fn includes() {
        let mut env = FakeEnv::default();
        env.files.insert(
            "/etc/pushpin/more.conf".into(),
            b"[runner]\nhttp_port=1\nclient_maxconn=5\n".to_vec(),
        );
        env.files.insert(
            "/etc/pushpin/sub/a.conf".into(),
            b"include=b.conf\n".to_vec(),
        );
        env.files
            .insert("/etc/pushpin/sub/b.conf".into(), b"[x]\ny=z\n".to_vec());
        env.files.insert(
            "/etc/pushpin/loop.conf".into(),
            b"include=loop.conf\n".to_vec(),
        );
        env.files.insert(
            "/etc/pushpin/bad.conf".into(),
            b"[ok]\nnot a line\n".to_vec(),
        );
        // Included keys lose against the including file, whatever the order.
        let d = doc("[runner]\nhttp_port=2\n[global]\ninclude=more.conf\ninclude=sub/a.conf\ninclude={libdir}/internal.conf\n", &env).unwrap();
        assert_eq!(d.get("runner", "http_port").unwrap().value, "2");
        assert_eq!(
            d.get("runner", "client_maxconn").unwrap().file,
            "/etc/pushpin/more.conf"
        );
        // Nested includes resolve relative to the including file.
        assert_eq!(d.get("x", "y").unwrap().file, "/etc/pushpin/sub/b.conf");
        assert_eq!(
            d.notes,
            ["skipped include /usr/lib/pushpin/internal.conf (not found; it only configures Pushpin's internal ZeroMQ sockets)"]
        );
        let e = doc("include=missing.conf\n", &env).unwrap_err().to_string();
        assert_eq!(
            e,
            "/etc/pushpin/pushpin.conf:1: cannot read include /etc/pushpin/missing.conf: not found"
        );
        let e = doc("include=loop.conf\n", &env).unwrap_err().to_string();
        assert!(e.contains("includes nested deeper than 8"), "{e}");
        let e = doc("\ninclude=bad.conf\n", &env).unwrap_err().to_string();
        assert_eq!(
            e,
            "/etc/pushpin/pushpin.conf:2: in include /etc/pushpin/bad.conf: /etc/pushpin/bad.conf:2: expected key=value or [section], got \"not a line\""
        );
    }

    #[test]
    fn bad_lines() {
        let env = FakeEnv::default();
        let cases = [
            (
                "[runner\n",
                "/etc/pushpin/pushpin.conf:1: unterminated section header \"[runner\"",
            ),
            ("\n[]\n", "/etc/pushpin/pushpin.conf:2: empty section name"),
            (
                "[a]\n\njust words\n",
                "/etc/pushpin/pushpin.conf:3: expected key=value or [section], got \"just words\"",
            ),
            (
                "=v\n",
                "/etc/pushpin/pushpin.conf:1: missing key before '=' in \"=v\"",
            ),
        ];
        for (text, want) in cases {
            assert_eq!(doc(text, &env).unwrap_err().to_string(), want);
        }
    }

    #[test]
    fn pem_and_hex_key_files_relative_to_the_config() {
        let mut env = FakeEnv::default();
        env.files.insert(
            "/etc/pushpin/keys/ec.pem".into(),
            include_bytes!("../sig/testdata/ec.pem").to_vec(),
        );
        env.files.insert(
            "/etc/pushpin/pub.pem".into(),
            include_bytes!("../sig/testdata/rsa-pub.pem").to_vec(),
        );
        env.files
            .insert("/etc/pushpin/secret.hex".into(), b"6b6579\n".to_vec());
        env.files.insert(
            "/etc/pushpin/bad.pem".into(),
            b"-----BEGIN PUBLIC KEY-----\nAAAA\n-----END PUBLIC KEY-----\n".to_vec(),
        );
        let path = Path::new("/etc/pushpin/pushpin.conf");
        let load = |text: &str| PushpinSettings::from_ini(&doc(text, &env)?, path, &env);
        let s = load("[proxy]\nsig_key=file:keys/ec.pem\nupstream_key=file:pub.pem\n").unwrap();
        let sig_key = s.proxy.sig_key.unwrap();
        assert_eq!(sig_key.alg(), crate::sig::Alg::Es256);
        assert!(sig_key.can_sign());
        let upstream = s.proxy.upstream_key.unwrap();
        assert_eq!(upstream.alg(), crate::sig::Alg::Rs256);
        assert!(!upstream.can_sign());
        let s =
            load("[proxy]\nsig_key=file:secret.hex\nupstream_key=file:/etc/pushpin/secret.hex\n")
                .unwrap();
        assert_eq!(s.proxy.sig_key, Some(SigKey::Secret(b"key".to_vec())));
        assert_eq!(s.proxy.upstream_key, Some(SigKey::Secret(b"key".to_vec())));
        // A bad key is an error naming the config line and the key file.
        assert_eq!(
            load("[proxy]\n\nsig_key=file:pub.pem\n").unwrap_err().to_string(),
            "/etc/pushpin/pushpin.conf:3: sig_key = \"file:pub.pem\": key file /etc/pushpin/pub.pem: \
             line 1: a public key cannot sign: a signing key must be the private key (PRIVATE KEY, \
             EC PRIVATE KEY or RSA PRIVATE KEY); the public key is for the backend (or a \
             downstream proxy's upstream_key) to verify with"
        );
        assert_eq!(
            load("[proxy]\nupstream_key=file:bad.pem\n")
                .unwrap_err()
                .to_string(),
            "/etc/pushpin/pushpin.conf:2: upstream_key = \"file:bad.pem\": key file \
             /etc/pushpin/bad.pem: line 1: malformed DER: expected a SubjectPublicKeyInfo"
        );
    }

    #[test]
    fn typed_values_and_errors() {
        let env = FakeEnv::default();
        let path = Path::new("/etc/pushpin/pushpin.conf");
        let load = |text: &str| PushpinSettings::from_ini(&doc(text, &env)?, path, &env);
        let s = load(concat!(
            "[runner]\nhttp_port=7999,127.0.0.1:8000,[::1]:8001\nlog_level=1,proxy:3\n",
            "[proxy]\nx_forwarded_for=truncate:0,append\nset_x_forwarded_protocol=true\nmax_open_requests=-1\n",
            "routesfile=../r/routes\nupstream_key=base64:AQI=\nprometheus_port=127.0.0.1:9000\n",
            "[handler]\nmessage_rate=-1\nprometheus_port=9001\npush_in_http_addr=0.0.0.0\npush_in_http_port=6000\n",
        ))
        .unwrap();
        assert_eq!(
            s.http_listen.unwrap(),
            vec![
                "0.0.0.0:7999".parse::<SocketAddr>().unwrap(),
                "127.0.0.1:8000".parse().unwrap(),
                "[::1]:8001".parse().unwrap()
            ]
        );
        assert_eq!(s.log_level, Some(tracing::Level::DEBUG));
        assert_eq!(s.proxy.xff, vec![XffRule::Truncate(0), XffRule::Append]);
        assert_eq!(s.proxy.xfp, XfpMode::Both);
        assert_eq!(s.proxy.max_open_requests, None);
        assert_eq!(s.proxy.upstream_key, Some(SigKey::Secret(vec![1, 2])));
        assert_eq!(
            s.routes_file,
            Some(PathBuf::from("/etc/pushpin/../r/routes"))
        );
        assert_eq!(s.prometheus_listen, Some("127.0.0.1:9000".parse().unwrap()));
        assert_eq!(s.ignored_keys, ["handler.prometheus_port"]);
        assert_eq!(s.handler.message_rate, None);
        assert_eq!(s.publish_listen, "0.0.0.0:6000".parse().unwrap());
        assert_eq!(
            load("[proxy]\nset_x_forwarded_protocol=nope\n")
                .unwrap()
                .proxy
                .xfp,
            XfpMode::None
        );

        let cases = [
            ("[runner]\nhttp_port=abc\n", "/etc/pushpin/pushpin.conf:2: http_port = \"abc\": expected [addr:]port, got \"abc\""),
            ("[runner]\nclient_buffer_size=100\n", "/etc/pushpin/pushpin.conf:2: client_buffer_size = \"100\": must be between 1024 and 1048576"),
            ("[runner]\nlog_level=loud\n", "/etc/pushpin/pushpin.conf:2: log_level = \"loud\": log level \"loud\" is not a number 0-3"),
            ("[proxy]\nx_forwarded_for=prepend\n", "/etc/pushpin/pushpin.conf:2: x_forwarded_for = \"prepend\": unknown rule \"prepend\" (expected truncate:N or append)"),
            ("[proxy]\ndebug=maybe\n", "/etc/pushpin/pushpin.conf:2: debug = \"maybe\": expected true or false"),
            ("[proxy]\nsig_key=file:nokey\n", "/etc/pushpin/pushpin.conf:2: sig_key = \"file:nokey\": cannot read key file /etc/pushpin/nokey: not found"),
            ("[handler]\npush_in_http_port=0\n", "/etc/pushpin/pushpin.conf:2: push_in_http_port = \"0\": expected a port 1-65535"),
            ("[handler]\nmessage_hwm=0\n", "/etc/pushpin/pushpin.conf:2: message_hwm = \"0\": must be positive, or -1 for unlimited"),
            ("[handler]\nconnection_subscription_max=0\n", "/etc/pushpin/pushpin.conf:2: connection_subscription_max = \"0\": must be between 1 and 10000"),
        ];
        for (text, want) in cases {
            assert_eq!(load(text).unwrap_err().to_string(), want);
        }
    }
}
