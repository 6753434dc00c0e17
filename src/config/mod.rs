//! Configuration: files and command line → validated, immutable [`Config`] → one
//! [`ShardConfig`] per shard. Configuration flows one way; nothing mutates a `Config`: a
//! reload (`crate::reload`) builds a whole new one and hands it to the shards.
//!
//! # Sources and precedence
//!
//! 1. **Command line** ([`Cli`]) — `--port`, `--route`, `--log-level`/`--verbose`,
//!    `--shards`, `--driver`, `--publish-port`;
//! 2. **tack tuning TOML** (`--tuning`, see [`tuning`]) — engine knobs;
//! 3. **`pushpin.conf`** (`--config`, see [`pushpin`]) — the Pushpin keys tack understands;
//! 4. **built-in defaults** ([`limits`]) — the stock Pushpin values.
//!
//! A higher layer wins per value. Overlaps between layers: `header_bytes_max` (tuning) over
//! `client_buffer_size` (pushpin.conf); `connections_max` per shard (tuning) over
//! `ceil(client_maxconn / shards)` (pushpin.conf); `--route` over the routes file; `--port`
//! over `http_port`; `--publish-port` over `push_in_http_addr`/`port`.
//!
//! With no files at all tack listens on `0.0.0.0:7999` (Pushpin's default), publishes on
//! `127.0.0.1:5561` and routes everything to the built-in test handler (`* test`). Signing is
//! off unless a `sig_key` is configured (the stock pushpin.conf sets `changeme`).
//!
//! # Loading
//!
//! [`Config::load`] reads the files named on the command line (and the routes file, includes
//! and `file:` keys they name); [`Config::from_sources`] takes the file texts directly (tests).
//! Every value is checked against the safety bounds in [`limits`]; errors name the file and
//! line (pushpin.conf, routes) or the file and key (tuning) or the option (command line).
//! Keys tack does not use are returned in [`Config::ignored_keys`] for the caller to log once.

pub mod auth;
pub mod limits;
pub mod pushpin;
pub mod tuning;

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use crate::cli::Cli;
use crate::route::{RouteEnv, RouteError, RouteTable, SigKey, SystemEnv};
use limits::*;
use pushpin::{IniDoc, PushpinSettings};
use tuning::{Tuning, TuningFile, TuningInputs};

/// A configuration error. `Display` says where and what.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ConfigError {
    /// A problem at a line of an INI file: `file:line: message`.
    #[error("{file}:{line}: {message}")]
    At {
        /// File name.
        file: String,
        /// 1-based line.
        line: usize,
        /// What is wrong.
        message: String,
    },
    /// A routes-file (or `--route`) problem.
    #[error(transparent)]
    Routes(#[from] RouteError),
    /// A bad value from a source without line numbers (tuning file key, CLI option).
    #[error("{origin}: {message}")]
    Invalid {
        /// File name or option (`--shards`).
        origin: String,
        /// What is wrong.
        message: String,
    },
    /// A file could not be read.
    #[error("cannot read {path}: {message}")]
    Read {
        /// The file.
        path: String,
        /// The OS error.
        message: String,
    },
}

/// `x_forwarded_for` rules and `set_x_forwarded_protocol` modes: the forwarding layer's types.
pub use crate::http1::forward::{XffRule, XfpMode};

/// `[proxy]` settings.
#[derive(Clone, PartialEq, Eq)]
pub struct ProxyConfig {
    /// Global `Grip-Sig` signing key (secret → HS256, EC → ES256, RSA → RS256); `None` = do
    /// not sign.
    pub sig_key: Option<SigKey>,
    /// JWT issuer.
    pub sig_iss: String,
    /// Key that verifies an upstream GRIP proxy's `Grip-Sig` (a secret, or a public key).
    pub upstream_key: Option<SigKey>,
    /// `x_forwarded_for` (untrusted clients); empty = pass through.
    pub xff: Vec<XffRule>,
    /// `x_forwarded_for_trusted` (signed upstream).
    pub xff_trusted: Vec<XffRule>,
    /// `set_x_forwarded_protocol`.
    pub xfp: XfpMode,
    /// `accept_x_forwarded_protocol`.
    pub accept_xfp: bool,
    /// `debug`: error responses carry detail.
    pub debug: bool,
    /// `max_open_requests`; `None` = unlimited (-1).
    pub max_open_requests: Option<usize>,
}

impl std::fmt::Debug for ProxyConfig {
    // Keys are secrets: show only whether they are set.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ProxyConfig")
            .field("sig_key", &self.sig_key.as_ref().map(|_| "<set>"))
            .field("sig_iss", &self.sig_iss)
            .field("upstream_key", &self.upstream_key.as_ref().map(|_| "<set>"))
            .field("xff", &self.xff)
            .field("xff_trusted", &self.xff_trusted)
            .field("xfp", &self.xfp)
            .field("accept_xfp", &self.accept_xfp)
            .field("debug", &self.debug)
            .field("max_open_requests", &self.max_open_requests)
            .finish()
    }
}

impl Default for ProxyConfig {
    fn default() -> Self {
        ProxyConfig {
            sig_key: None,
            sig_iss: DEFAULT_SIG_ISS.to_string(),
            upstream_key: None,
            xff: Vec::new(),
            xff_trusted: Vec::new(),
            xfp: XfpMode::ProtoOnly,
            accept_xfp: false,
            debug: false,
            max_open_requests: None,
        }
    }
}

/// `[handler]` settings (publishing and subscriptions).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HandlerConfig {
    /// `push_in_http_max_headers_size`.
    pub publish_headers_bytes_max: usize,
    /// `push_in_http_max_body_size`.
    pub publish_body_bytes_max: usize,
    /// `message_rate` per second; `None` = unlimited.
    pub message_rate: Option<u32>,
    /// `message_hwm`; `None` = unlimited.
    pub message_hwm: Option<u32>,
    /// `message_wait` in ms.
    pub message_wait_ms: u64,
    /// `id_cache_ttl` in s (0 = no de-duplication).
    pub id_cache_ttl_s: u64,
    /// `connection_subscription_max`.
    pub connection_subscription_max: usize,
    /// `subscription_linger` in s.
    pub subscription_linger_s: u64,
}

impl Default for HandlerConfig {
    fn default() -> Self {
        HandlerConfig {
            publish_headers_bytes_max: DEFAULT_PUBLISH_HEADERS_BYTES_MAX,
            publish_body_bytes_max: DEFAULT_PUBLISH_BODY_BYTES_MAX,
            message_rate: DEFAULT_MESSAGE_RATE,
            message_hwm: DEFAULT_MESSAGE_HWM,
            message_wait_ms: DEFAULT_MESSAGE_WAIT_MS,
            id_cache_ttl_s: DEFAULT_ID_CACHE_TTL_S,
            connection_subscription_max: DEFAULT_CONNECTION_SUBSCRIPTION_MAX,
            subscription_linger_s: DEFAULT_SUBSCRIPTION_LINGER_S,
        }
    }
}

/// The validated, immutable configuration of one tack process.
#[derive(Debug, Clone)]
pub struct Config {
    /// Client listeners (each shard binds every one with SO_REUSEPORT).
    pub listen: Vec<SocketAddr>,
    /// HTTP publish (control API) listener.
    pub publish_listen: SocketAddr,
    /// Prometheus exporter listener, if configured.
    pub prometheus_listen: Option<SocketAddr>,
    /// `[runner] allow_compression`: negotiate WebSocket permessage-deflate with clients.
    pub allow_compression: bool,
    /// Prometheus metric name prefix (may be empty).
    pub prometheus_prefix: String,
    /// Routes, shared read-only by all shards.
    pub routes: Arc<RouteTable>,
    /// The routes file the routes came from (`None` for `--route` lines or the default
    /// `* test`): the file the reload thread watches (see `crate::reload`).
    pub routes_file: Option<PathBuf>,
    /// Proxy behaviour.
    pub proxy: ProxyConfig,
    /// Publish/subscribe behaviour.
    pub handler: HandlerConfig,
    /// Engine tuning.
    pub tuning: Tuning,
    /// Control-API (and optionally metrics) authentication from the tuning file; `None` =
    /// off, the default.
    pub control_auth: Option<crate::auth::ControlAuth>,
    /// Log level.
    pub log_level: tracing::Level,
    /// Log line format (`--log-format`).
    pub log_format: crate::cli::LogFormat,
    /// `section.key` entries of pushpin.conf tack does not use, and ignored `[shard.N]`
    /// tables; log once at start.
    pub ignored_keys: Vec<String>,
    /// Route warnings (ignored options, skipped duplicates); log once at start.
    pub route_warnings: Vec<String>,
    /// Info-level notes from loading (e.g. a skipped `{libdir}` include).
    pub notes: Vec<String>,
}

/// One shard's slice of the configuration: everything a shard sizes itself from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ShardConfig {
    /// 0-based shard index.
    pub shard_index: usize,
    /// Total shard count.
    pub shards: usize,
    /// Client connections this shard admits.
    pub connections_max: usize,
    /// Client request head limit in bytes.
    pub header_bytes_max: usize,
    /// Per-transfer copy buffer in bytes.
    pub body_buffer_bytes: usize,
    /// Idle pooled backend connections per target address.
    pub backend_pool_idle_max: usize,
    /// Messages per cross-shard ring.
    pub ring_capacity: usize,
    /// Backend connect timeout.
    pub backend_connect_timeout: Duration,
    /// Backend response timeout (504).
    pub backend_response_timeout: Duration,
    /// Idle keep-alive client timeout.
    pub client_idle_timeout: Duration,
    /// Partial request head timeout (408).
    pub client_head_timeout: Duration,
    /// A write to a held client not completed by then is given up (the client is slow).
    pub client_write_timeout: Duration,
    /// Idle pooled backend connection lifetime.
    pub backend_pool_idle_timeout: Duration,
    /// Drain grace period on SIGTERM.
    pub drain_timeout: Duration,
    /// Log one line per request.
    pub access_log: bool,
    /// Published items queued per held connection.
    pub hold_queue_max: usize,
    /// Links followed for one response without a hold (a `Grip-Link` chain).
    pub next_link_chain_max: usize,
    /// Largest backend body buffered to be parsed (GRIP instruct, timeout response, link).
    pub grip_body_max: usize,
    /// Next-link fetches per second per connection, after a burst of as many.
    pub next_link_rate: u32,
    /// Publish batches waiting for delivery on this shard.
    pub pipeline_max: usize,
    /// How long a publish waits for queue room before 503.
    pub publish_wait: Duration,
    /// Largest WebSocket message (1009 beyond).
    pub ws_message_bytes_max: usize,
}

impl Config {
    /// Reads the files named by `cli` (and what they reference) and validates everything.
    pub fn load(cli: &Cli) -> Result<Config, ConfigError> {
        Self::load_with(cli, &SystemEnv)
    }

    /// [`Config::load`] with an explicit environment for file reads and name resolution.
    pub fn load_with(cli: &Cli, env: &dyn RouteEnv) -> Result<Config, ConfigError> {
        let read = |path: &Path| -> Result<String, ConfigError> {
            let bytes = env.read_file(path).map_err(|e| ConfigError::Read {
                path: path.display().to_string(),
                message: e.to_string(),
            })?;
            String::from_utf8(bytes).map_err(|_| ConfigError::Read {
                path: path.display().to_string(),
                message: "not UTF-8".to_string(),
            })
        };
        let conf = cli
            .config
            .as_deref()
            .map(|p| read(p).map(|t| (t, p)))
            .transpose()?;
        let tuning = cli.tuning.as_deref().map(read).transpose()?;
        Self::from_sources_with(
            cli,
            conf.as_ref().map(|(t, p)| (t.as_str(), *p)),
            tuning.as_deref(),
            env,
        )
    }

    /// Builds the configuration from file texts: `pushpin_conf` is (text, path of the file);
    /// `tuning_toml` the TOML text. Includes, the routes file and key files are still read
    /// from disk, and targets resolved, by the system environment.
    pub fn from_sources(
        cli: &Cli,
        pushpin_conf: Option<(&str, &Path)>,
        tuning_toml: Option<&str>,
    ) -> Result<Config, ConfigError> {
        Self::from_sources_with(cli, pushpin_conf, tuning_toml, &SystemEnv)
    }

    /// [`Config::from_sources`] with an explicit environment.
    pub fn from_sources_with(
        cli: &Cli,
        pushpin_conf: Option<(&str, &Path)>,
        tuning_toml: Option<&str>,
        env: &dyn RouteEnv,
    ) -> Result<Config, ConfigError> {
        // Layer 3/4: pushpin.conf over built-in defaults.
        let pp = match pushpin_conf {
            Some((text, path)) => {
                PushpinSettings::from_ini(&IniDoc::parse(text, path, env)?, path, env)?
            }
            None => PushpinSettings::default(),
        };

        // Layer 2: tuning file, fed by pushpin.conf values it overrides and CLI values that
        // override it.
        let tuning_origin = cli
            .tuning
            .as_deref()
            .map_or("tuning".to_string(), |p| p.display().to_string());
        let tuning_file = match tuning_toml {
            Some(text) => TuningFile::parse(text, &tuning_origin)?,
            None => TuningFile::default(),
        };
        let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
        let (tuning, tuning_ignored) = Tuning::resolve(
            &tuning_file,
            &tuning_origin,
            TuningInputs {
                cli_shards: cli.shards,
                cli_driver: cli.driver,
                cores,
                client_maxconn: pp.client_maxconn,
                client_buffer_size: pp.client_buffer_size,
            },
        )?;
        let control_auth = auth::resolve(&tuning_file.tack, &tuning_origin, env)?;

        // Layer 1: command line.
        let listen = if !cli.ports.is_empty() {
            cli.ports.clone()
        } else {
            pp.http_listen.clone().unwrap_or_else(|| {
                vec![SocketAddr::new(
                    IpAddr::V4(Ipv4Addr::UNSPECIFIED),
                    DEFAULT_HTTP_PORT,
                )]
            })
        };
        let publish_listen = cli.publish_port.unwrap_or(pp.publish_listen);
        check_listeners(
            &listen,
            publish_listen,
            cli.metrics_port.or(pp.prometheus_listen),
        )?;

        let routes = if !cli.routes.is_empty() {
            RouteTable::from_lines_with(&cli.routes, "--route", env)?
        } else if let Some(path) = &pp.routes_file {
            let bytes = env.read_file(path).map_err(|e| ConfigError::Read {
                path: format!("routes file {}", path.display()),
                message: e.to_string(),
            })?;
            let text = String::from_utf8(bytes).map_err(|_| ConfigError::Read {
                path: format!("routes file {}", path.display()),
                message: "not UTF-8".to_string(),
            })?;
            RouteTable::parse_with(&text, &path.display().to_string(), env)?
        } else {
            RouteTable::from_lines_with(&["* test".to_string()], "default route", env)?
        };

        let log_level = cli
            .log_level
            .or(cli.verbose.then_some(tracing::Level::DEBUG))
            .or(pp.log_level)
            .unwrap_or(tracing::Level::INFO);

        let mut ignored_keys = pp.ignored_keys;
        ignored_keys.extend(tuning_ignored);
        let config = Config {
            listen,
            publish_listen,
            prometheus_listen: cli.metrics_port.or(pp.prometheus_listen),
            allow_compression: pp.allow_compression,
            prometheus_prefix: pp.prometheus_prefix,
            route_warnings: routes.warnings().to_vec(),
            routes: Arc::new(routes),
            routes_file: if cli.routes.is_empty() {
                pp.routes_file.clone()
            } else {
                None
            },
            proxy: pp.proxy,
            handler: pp.handler,
            tuning,
            control_auth,
            log_level,
            log_format: cli.log_format.unwrap_or_default(),
            ignored_keys,
            notes: pp.notes,
        };
        debug_assert!(!config.listen.is_empty() && config.listen.len() <= LISTENERS_MAX);
        debug_assert!(config.tuning.shards >= 1);
        Ok(config)
    }

    /// The slice of configuration for shard `shard_index` (0-based, `< tuning.shards`),
    /// with its `[shard.N]` overrides applied.
    pub fn shard_config(&self, shard_index: usize) -> ShardConfig {
        debug_assert!(
            shard_index < self.tuning.shards,
            "shard {shard_index} of {}",
            self.tuning.shards
        );
        let t = &self.tuning;
        let o = t
            .shard_overrides
            .get(&shard_index)
            .cloned()
            .unwrap_or_default();
        ShardConfig {
            shard_index,
            shards: t.shards,
            connections_max: o.connections_max.unwrap_or(t.connections_max),
            header_bytes_max: o.header_bytes_max.unwrap_or(t.header_bytes_max),
            body_buffer_bytes: o.body_buffer_bytes.unwrap_or(t.body_buffer_bytes),
            backend_pool_idle_max: o.backend_pool_idle_max.unwrap_or(t.backend_pool_idle_max),
            ring_capacity: t.ring_capacity,
            backend_connect_timeout: t.backend_connect_timeout,
            backend_response_timeout: t.backend_response_timeout,
            client_idle_timeout: t.client_idle_timeout,
            client_head_timeout: t.client_head_timeout,
            client_write_timeout: t.client_write_timeout,
            backend_pool_idle_timeout: t.backend_pool_idle_timeout,
            drain_timeout: t.drain_timeout,
            access_log: t.access_log,
            hold_queue_max: t.hold_queue_max,
            next_link_chain_max: t.next_link_chain_max,
            grip_body_max: t.grip_body_max,
            next_link_rate: t.next_link_rate,
            pipeline_max: t.pipeline_max,
            publish_wait: t.publish_wait,
            ws_message_bytes_max: t.ws_message_bytes_max,
        }
    }
}

/// `[addr:]port` → socket address; a bare port uses `default_ip`. Port 0 is refused: every
/// shard must bind the same, known port.
pub fn parse_listen(s: &str, default_ip: IpAddr) -> Result<SocketAddr, String> {
    let s = s.trim();
    let addr = match s.parse::<u16>() {
        Ok(port) => SocketAddr::new(default_ip, port),
        Err(_) => s
            .parse::<SocketAddr>()
            .map_err(|_| format!("expected [addr:]port, got \"{s}\""))?,
    };
    if addr.port() == 0 {
        return Err(format!("\"{s}\": port 0 is not allowed"));
    }
    Ok(addr)
}

/// Rejects listener sets that cannot all be bound: none, too many, or two on one port with
/// overlapping addresses.
fn check_listeners(
    listen: &[SocketAddr],
    publish: SocketAddr,
    prometheus: Option<SocketAddr>,
) -> Result<(), ConfigError> {
    let invalid = |message: String| ConfigError::Invalid {
        origin: "listeners".to_string(),
        message,
    };
    if listen.is_empty() {
        return Err(invalid(
            "no client listener (http_port is empty and no --port given)".to_string(),
        ));
    }
    if listen.len() > LISTENERS_MAX {
        return Err(invalid(format!(
            "{} client listeners; at most {LISTENERS_MAX}",
            listen.len()
        )));
    }
    let named = listen
        .iter()
        .map(|a| ("client", *a))
        .chain(std::iter::once(("publish", publish)))
        .chain(prometheus.map(|a| ("prometheus", a)));
    let all: Vec<(&str, SocketAddr)> = named.collect();
    for (i, (na, a)) in all.iter().enumerate() {
        for (nb, b) in &all[i + 1..] {
            let overlap = a.ip() == b.ip() || a.ip().is_unspecified() || b.ip().is_unspecified();
            if a.port() == b.port() && overlap {
                return Err(invalid(format!(
                    "{na} listener {a} conflicts with {nb} listener {b}"
                )));
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests;
