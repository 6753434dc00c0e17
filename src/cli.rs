//! Command line, modelled on the `pushpin` runner (grip-spec §10 "Runner command line").
//!
//! `--port` replaces the config's `http_port` list (repeatable); `--route` replaces the routes
//! file (repeatable, one rule each); `--verbose` means debug logging unless `--log-level` is
//! also given; `--publish-port` replaces `push_in_http_addr`/`push_in_http_port`.
//!
//! One subcommand: `tack publish` ([`publish`]), the equivalent of `pushpin-publish`. It
//! conflicts with the server options, so `tack --port 80 publish` is a usage error.

pub mod publish;

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::PathBuf;

use clap::Parser;

use crate::config::parse_listen;
use crate::config::tuning::Driver;

/// `tack` command-line arguments.
#[derive(Debug, Clone, Default, PartialEq, Eq, Parser)]
#[command(
    name = "tack",
    version,
    about = "A realtime reverse proxy speaking GRIP, Pushpin-compatible, thread-per-core on io_uring",
    args_conflicts_with_subcommands = true,
    after_help = "Signals: SIGTERM or SIGINT stops gracefully (new connections refused, held ones \
ended, in-flight requests given drain_timeout_ms; a second one exits at once). SIGHUP reloads the \
configuration: routes, keys and per-request limits apply to new requests on every shard, held \
connections and WebSocket sessions stay; a file with an error is refused (logged as file:line) \
and the running configuration stays. The routes file is also watched and reloaded about 1-2 s \
after it changes. Ports, shard count and capacities need a restart (a reload logs them as \
ignored). `tack --check-config` validates the same files without starting (exit 0 or 2)."
)]
pub struct Cli {
    /// `tack publish …`; `None` runs the proxy.
    #[command(subcommand)]
    pub command: Option<Command>,

    /// Pushpin configuration file (pushpin.conf, INI).
    #[arg(long, value_name = "FILE")]
    pub config: Option<PathBuf>,

    /// tack tuning file (TOML; see the README for keys).
    #[arg(long, value_name = "FILE")]
    pub tuning: Option<PathBuf>,

    /// Client listener; replaces http_port from the config. Repeatable. A bare port binds
    /// 0.0.0.0.
    #[arg(long = "port", value_name = "[ADDR:]PORT", value_parser = parse_client_listen)]
    pub ports: Vec<SocketAddr>,

    /// A routes-file line; replaces the routes file. Repeatable.
    #[arg(long = "route", value_name = "LINE")]
    pub routes: Vec<String>,

    /// Log level: Pushpin's 0-3 (error, warn, info, debug) or a name (error, warn, info,
    /// debug, trace).
    #[arg(long, alias = "loglevel", value_name = "N|NAME", value_parser = parse_log_level)]
    pub log_level: Option<tracing::Level>,

    /// Debug logging (same as --log-level 3).
    #[arg(long)]
    pub verbose: bool,

    /// Log line format on stderr: `text` (default) or `json` (one object a line, with the
    /// event's fields: shard, route, connection id, error, …).
    #[arg(long, value_enum, value_name = "FORMAT")]
    pub log_format: Option<LogFormat>,

    /// Number of shards (threads), 1-1024; overrides the tuning file.
    #[arg(long, value_name = "N")]
    pub shards: Option<usize>,

    /// I/O driver; overrides the tuning file.
    #[arg(long, value_enum, value_name = "DRIVER")]
    pub driver: Option<Driver>,

    /// HTTP publish (control API) listener; replaces push_in_http_addr/port. A bare port
    /// binds 127.0.0.1.
    #[arg(long, value_name = "[ADDR:]PORT", value_parser = parse_publish_listen)]
    pub publish_port: Option<SocketAddr>,

    /// Prometheus metrics listener; replaces prometheus_port. A bare port binds 127.0.0.1.
    #[arg(long, value_name = "[ADDR:]PORT", value_parser = parse_publish_listen)]
    pub metrics_port: Option<SocketAddr>,

    /// Load and validate the configuration as a start would (pushpin.conf, routes, tuning,
    /// keys, target names), print OK or the error, and exit 0 (valid) or 2 (invalid) without
    /// binding any port, like `nginx -t`.
    #[arg(long)]
    pub check_config: bool,
}

/// `--log-format`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, clap::ValueEnum)]
pub enum LogFormat {
    /// Human-readable lines.
    #[default]
    Text,
    /// One JSON object a line.
    Json,
}

/// Subcommands.
#[derive(Debug, Clone, PartialEq, Eq, clap::Subcommand)]
pub enum Command {
    /// Publish one item to a GRIP control API (tack's or Pushpin's), like pushpin-publish.
    Publish(publish::PublishArgs),
}

fn parse_client_listen(s: &str) -> Result<SocketAddr, String> {
    parse_listen(s, IpAddr::V4(Ipv4Addr::UNSPECIFIED))
}

fn parse_publish_listen(s: &str) -> Result<SocketAddr, String> {
    parse_listen(s, IpAddr::V4(Ipv4Addr::LOCALHOST))
}

/// `0`-`3` (Pushpin numbering, higher numbers mean debug) or a level name.
pub fn parse_log_level(s: &str) -> Result<tracing::Level, String> {
    if let Ok(n) = s.parse::<u8>() {
        return Ok(crate::config::pushpin::level_from_number(n));
    }
    match s.to_ascii_lowercase().as_str() {
        "error" => Ok(tracing::Level::ERROR),
        "warn" | "warning" => Ok(tracing::Level::WARN),
        "info" => Ok(tracing::Level::INFO),
        "debug" => Ok(tracing::Level::DEBUG),
        "trace" => Ok(tracing::Level::TRACE),
        _ => Err(format!(
            "\"{s}\" is not a log level (0-3, error, warn, info, debug, trace)"
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::error::ErrorKind;

    fn parse(args: &[&str]) -> Result<Cli, clap::Error> {
        Cli::try_parse_from(std::iter::once("tack").chain(args.iter().copied()))
    }

    #[test]
    fn no_arguments() {
        assert_eq!(parse(&[]).unwrap(), Cli::default());
    }

    #[test]
    fn every_option() {
        let cli = parse(&[
            "--config",
            "/etc/pushpin/pushpin.conf",
            "--tuning",
            "t.toml",
            "--port",
            "8000",
            "--port",
            "127.0.0.1:8001",
            "--port",
            "[::1]:8002",
            "--route",
            "* test",
            "--route",
            "example.com localhost:80",
            "--log-level",
            "3",
            "--verbose",
            "--shards",
            "2",
            "--driver",
            "io_uring",
            "--publish-port",
            "6000",
        ])
        .unwrap();
        assert_eq!(
            cli,
            Cli {
                config: Some("/etc/pushpin/pushpin.conf".into()),
                tuning: Some("t.toml".into()),
                ports: vec![
                    "0.0.0.0:8000".parse().unwrap(),
                    "127.0.0.1:8001".parse().unwrap(),
                    "[::1]:8002".parse().unwrap()
                ],
                routes: vec!["* test".to_string(), "example.com localhost:80".to_string()],
                log_level: Some(tracing::Level::DEBUG),
                verbose: true,
                log_format: None,
                shards: Some(2),
                driver: Some(Driver::IoUring),
                publish_port: Some("127.0.0.1:6000".parse().unwrap()),
                metrics_port: None,
                check_config: false,
                command: None,
            }
        );
        let cli = parse(&[
            "--publish-port=0.0.0.0:7000",
            "--driver=legacy",
            "--loglevel",
            "warn",
        ])
        .unwrap();
        assert_eq!(cli.publish_port, Some("0.0.0.0:7000".parse().unwrap()));
        assert_eq!(cli.driver, Some(Driver::Legacy));
        assert_eq!(cli.log_level, Some(tracing::Level::WARN));
    }

    #[test]
    fn log_levels() {
        let want = [
            ("0", tracing::Level::ERROR),
            ("1", tracing::Level::WARN),
            ("2", tracing::Level::INFO),
            ("3", tracing::Level::DEBUG),
            ("9", tracing::Level::DEBUG),
            ("Trace", tracing::Level::TRACE),
            ("warning", tracing::Level::WARN),
        ];
        for (arg, level) in want {
            assert_eq!(parse_log_level(arg), Ok(level), "{arg}");
        }
        assert_eq!(
            parse_log_level("loud"),
            Err("\"loud\" is not a log level (0-3, error, warn, info, debug, trace)".to_string())
        );
    }

    #[test]
    fn rejects_bad_input() {
        let kind = |args: &[&str]| parse(args).unwrap_err().kind();
        assert_eq!(kind(&["--port", "http"]), ErrorKind::ValueValidation);
        assert_eq!(kind(&["--port", "0"]), ErrorKind::ValueValidation);
        assert_eq!(
            kind(&["--port", "localhost:80"]),
            ErrorKind::ValueValidation
        );
        assert_eq!(kind(&["--driver", "uring"]), ErrorKind::InvalidValue);
        assert_eq!(kind(&["--shards", "two"]), ErrorKind::ValueValidation);
        assert_eq!(kind(&["--log-level", "loud"]), ErrorKind::ValueValidation);
        assert_eq!(kind(&["--frobnicate"]), ErrorKind::UnknownArgument);
        assert_eq!(kind(&["--version"]), ErrorKind::DisplayVersion);
        assert_eq!(kind(&["--help"]), ErrorKind::DisplayHelp);
        assert_eq!(
            kind(&["--port", "80", "publish", "ch", "x"]),
            ErrorKind::ArgumentConflict
        );
    }

    #[test]
    fn publish_subcommand() {
        let cli = parse(&["publish", "ch", "hello", "--id", "1"]).unwrap();
        let Some(Command::Publish(p)) = cli.command else {
            panic!("no subcommand: {cli:?}");
        };
        assert_eq!(
            (p.channel.as_str(), p.content.as_deref()),
            ("ch", Some("hello"))
        );
        assert_eq!(p.id.as_deref(), Some("1"));
        // The server options are untouched by the subcommand.
        assert_eq!(parse(&["--route", "* test"]).unwrap().command, None);
    }
}
