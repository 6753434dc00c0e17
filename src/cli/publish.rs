//! `tack publish`: publish one item to a GRIP control API, the equivalent of Pushpin's
//! `pushpin-publish` (grip-spec §4.4; its source is `src/bin/pushpin-publish.rs` and
//! `src/publish/mod.rs` in fastly/pushpin). Same options, same item, same defaults:
//!
//! - content is sent in all three formats: `http-response` (`code`, `body`, `headers` from
//!   `-H`), `http-stream` (`content`) and `ws-message` (`content`); the HTTP payloads get a
//!   newline unless `--no-eol`, the WebSocket message never does; `@FILE` content is sent as
//!   read (no newline; `body-bin`/`content-bin` when it is not UTF-8);
//! - `--patch`: the content is an RFC 6902 JSON Patch, sent as `http-response` `body-patch`
//!   only; `--hint`: `action: hint` in all three formats; `--close`: `action: close` in
//!   `http-stream` and `ws-message`;
//! - `--id`, `--prev-id`, `--no-seq`; `--sender` and `-M k=v` fill `meta`;
//! - `--spec URL` (alias `--uri`), else `GRIP_URL`, else `http://localhost:5561`; the item is
//!   posted to `URL/publish/` as `{"items":[item]}`;
//! - `-u user:pass` (basic) or `--bearer TOKEN` / `--bearer-file PATH`.
//!
//! tack additions: `--format` (repeatable, or comma-separated) keeps only the named formats;
//! `--bearer-file` keeps the token off the command line. Differences: credentials are sent
//! over plain `http://` too (tack's control port speaks only HTTP; `pushpin-publish` refuses
//! auth without https), `https://` and ZeroMQ specs (`tcp://`, `ipc://`) are refused with a
//! message (no TLS client here; ZeroMQ publishing is a separate issue), and usage errors exit
//! with 2 rather than 1.
//!
//! Exit status: 0 when the API answers `200` (its body, e.g. `Published`, goes to stdout);
//! 1 when it answers anything else (status line and body to stderr) or cannot be reached;
//! 2 for usage errors.
//!
//! The HTTP client is a few dozen lines over blocking `std::net`: one request per process
//! needs no async runtime, and a crate such as reqwest would bring tokio, hyper and a TLS
//! stack into a binary that otherwise runs on monoio alone.

use std::io::{Read, Write};
use std::net::{TcpStream, ToSocketAddrs};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

use base64::engine::general_purpose::STANDARD;
use base64::Engine as _;
use serde_json::{json, Map, Value};

/// Where `pushpin-publish` publishes by default.
pub const DEFAULT_SPEC: &str = "http://localhost:5561";
/// Environment variable naming the control API (as `pushpin-publish` and the GRIP libraries).
pub const SPEC_ENV: &str = "GRIP_URL";

const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
const IO_TIMEOUT: Duration = Duration::from_secs(30);
/// Largest answer read from the API (its answers are a line of text).
const ANSWER_BYTES_MAX: usize = 1 << 20;

/// A publish format `--format` can select.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, clap::ValueEnum)]
pub enum Format {
    HttpStream,
    HttpResponse,
    WsMessage,
}

impl Format {
    pub fn key(self) -> &'static str {
        match self {
            Format::HttpStream => "http-stream",
            Format::HttpResponse => "http-response",
            Format::WsMessage => "ws-message",
        }
    }
}

/// `tack publish` arguments (the options of `pushpin-publish`, plus `--format` and
/// `--bearer-file`).
#[derive(Debug, Clone, PartialEq, Eq, clap::Args)]
pub struct PublishArgs {
    /// Channel to send to.
    pub channel: String,

    /// Content for the HTTP body and WebSocket message; @FILE reads a file.
    pub content: Option<String>,

    /// Payload ID.
    #[arg(long, value_name = "ID")]
    pub id: Option<String>,

    /// Previous payload ID.
    #[arg(long, value_name = "ID")]
    pub prev_id: Option<String>,

    /// Sender meta value (for the skip-self filter).
    #[arg(long, value_name = "SENDER")]
    pub sender: Option<String>,

    /// HTTP response code to use (http-response).
    #[arg(long, value_name = "CODE", default_value_t = 200,
          value_parser = clap::value_parser!(u16).range(0..=999))]
    pub code: u16,

    /// Add an HTTP response header (http-response). Repeatable.
    #[arg(short = 'H', long = "header", value_name = "\"K: V\"")]
    pub headers: Vec<String>,

    /// Add a meta variable. Repeatable.
    #[arg(short = 'M', long = "meta", value_name = "K=V")]
    pub meta: Vec<String>,

    /// Send a hint instead of content.
    #[arg(long, conflicts_with_all = ["close", "patch"])]
    pub hint: bool,

    /// Close streaming and WebSocket connections.
    #[arg(long, conflicts_with = "patch")]
    pub close: bool,

    /// Content is a JSON Patch (http-response body-patch).
    #[arg(long)]
    pub patch: bool,

    /// Bypass the sequencing buffer.
    #[arg(long)]
    pub no_seq: bool,

    /// Don't add a newline to HTTP payloads.
    #[arg(long)]
    pub no_eol: bool,

    /// Send only these formats (default: every format the action applies to). Repeatable.
    #[arg(
        long = "format",
        value_enum,
        value_delimiter = ',',
        value_name = "FORMAT"
    )]
    pub formats: Vec<Format>,

    /// GRIP URL of the control API [default: $GRIP_URL, else http://localhost:5561].
    #[arg(long, visible_alias = "uri", value_name = "URL")]
    pub spec: Option<String>,

    /// Authenticate using basic auth.
    #[arg(short = 'u', long, value_name = "USER:PASS",
          conflicts_with_all = ["bearer", "bearer_file"])]
    pub user: Option<String>,

    /// Authenticate using bearer auth.
    #[arg(
        short = 'B',
        long,
        value_name = "TOKEN",
        conflicts_with = "bearer_file"
    )]
    pub bearer: Option<String>,

    /// Authenticate using bearer auth, the token read from a file.
    #[arg(long, value_name = "PATH")]
    pub bearer_file: Option<PathBuf>,
}

/// Reads a file (injected so that the mapping is testable without a disk).
pub type ReadFile<'a> = &'a dyn Fn(&Path) -> std::io::Result<Vec<u8>>;

fn not_empty(s: &Option<String>) -> Option<&str> {
    s.as_deref().filter(|s| !s.is_empty())
}

/// A string payload field, or its `-bin` base64 twin when the bytes are not UTF-8.
fn payload(map: &mut Map<String, Value>, key: &str, bytes: Vec<u8>) {
    match String::from_utf8(bytes) {
        Ok(s) => map.insert(key.to_string(), Value::String(s)),
        Err(e) => map.insert(
            format!("{key}-bin"),
            Value::String(STANDARD.encode(e.into_bytes())),
        ),
    };
}

/// The publish item `pushpin-publish` would send for these arguments. `Err` is a usage error.
pub fn item(args: &PublishArgs, read_file: ReadFile<'_>) -> Result<Value, String> {
    let mut formats: Map<String, Value> = Map::new();
    let action = |a: &str| json!({ "action": a });
    if args.hint {
        for f in [Format::HttpResponse, Format::HttpStream, Format::WsMessage] {
            formats.insert(f.key().to_string(), action("hint"));
        }
    } else if args.close {
        for f in [Format::HttpStream, Format::WsMessage] {
            formats.insert(f.key().to_string(), action("close"));
        }
    } else {
        let content = args
            .content
            .as_deref()
            .ok_or_else(|| "must specify content (or --hint or --close)".to_string())?;
        let mut response = Map::new();
        response.insert("code".to_string(), json!(args.code));
        if args.patch {
            let patch: Value = serde_json::from_str(content)
                .map_err(|e| format!("patch content is not JSON: {e}"))?;
            if !patch.is_array() {
                return Err("patch content must be a JSON array".to_string());
            }
            response.insert("body-patch".to_string(), patch);
        } else {
            let (http, ws) = match content.strip_prefix('@') {
                Some(name) => {
                    let bytes = read_file(Path::new(name))
                        .map_err(|e| format!("can't read file {name}: {e}"))?;
                    (bytes.clone(), bytes)
                }
                None => {
                    let mut http = content.to_string();
                    if !args.no_eol {
                        http.push('\n');
                    }
                    (http.into_bytes(), content.as_bytes().to_vec())
                }
            };
            payload(&mut response, "body", http.clone());
            let mut stream = Map::new();
            payload(&mut stream, "content", http);
            formats.insert(Format::HttpStream.key().to_string(), Value::Object(stream));
            let mut message = Map::new();
            payload(&mut message, "content", ws);
            formats.insert(Format::WsMessage.key().to_string(), Value::Object(message));
        }
        if !args.headers.is_empty() {
            let mut headers = Vec::with_capacity(args.headers.len());
            for h in &args.headers {
                let (name, value) = h
                    .split_once(':')
                    .filter(|(n, _)| !n.trim().is_empty())
                    .ok_or_else(|| format!("header must be in the form \"name: value\": {h:?}"))?;
                headers.push(json!([name.trim(), value.trim()]));
            }
            response.insert("headers".to_string(), Value::Array(headers));
        }
        formats.insert(
            Format::HttpResponse.key().to_string(),
            Value::Object(response),
        );
    }
    if !args.formats.is_empty() {
        let offered: Vec<String> = formats.keys().cloned().collect();
        formats.retain(|k, _| args.formats.iter().any(|f| f.key() == k));
        if formats.is_empty() {
            let asked: Vec<&str> = args.formats.iter().map(|f| f.key()).collect();
            return Err(format!(
                "--format {}: this action applies only to {}",
                asked.join(","),
                offered.join(", ")
            ));
        }
    }
    debug_assert!(!formats.is_empty());

    let mut meta = Map::new();
    if let Some(sender) = not_empty(&args.sender) {
        meta.insert("sender".to_string(), json!(sender));
    }
    for m in &args.meta {
        let (k, v) = m
            .split_once('=')
            .filter(|(k, _)| !k.is_empty())
            .ok_or_else(|| format!("meta must be in the form \"name=value\": {m:?}"))?;
        meta.insert(k.to_string(), json!(v.trim()));
    }

    let mut item = Map::new();
    item.insert("channel".to_string(), json!(args.channel));
    if let Some(id) = not_empty(&args.id) {
        item.insert("id".to_string(), json!(id));
    }
    if let Some(prev) = not_empty(&args.prev_id) {
        item.insert("prev-id".to_string(), json!(prev));
    }
    item.insert("formats".to_string(), Value::Object(formats));
    if !meta.is_empty() {
        item.insert("meta".to_string(), Value::Object(meta));
    }
    if args.no_seq {
        item.insert("no-seq".to_string(), json!(true));
    }
    Ok(Value::Object(item))
}

/// The `Authorization` value the arguments ask for, if any. `Err` is a usage error.
pub fn authorization(
    args: &PublishArgs,
    read_file: ReadFile<'_>,
) -> Result<Option<String>, String> {
    if let Some(user) = &args.user {
        if !user.contains(':') {
            return Err("--user must be user:pass".to_string());
        }
        return Ok(Some(format!("Basic {}", STANDARD.encode(user))));
    }
    let token = match (&args.bearer, &args.bearer_file) {
        (Some(t), _) => t.trim().to_string(),
        (None, Some(path)) => {
            let bytes = read_file(path)
                .map_err(|e| format!("can't read bearer file {}: {e}", path.display()))?;
            String::from_utf8_lossy(&bytes).trim().to_string()
        }
        (None, None) => return Ok(None),
    };
    if token.is_empty() || !token.bytes().all(|b| b.is_ascii_graphic()) {
        return Err("the bearer token must be non-empty visible ASCII without spaces".to_string());
    }
    Ok(Some(format!("Bearer {token}")))
}

/// Where to send the request: from a GRIP URL `http://host[:port][/base][?query]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Target {
    /// The `Host` header (the URL's authority).
    pub authority: String,
    /// Host name or address to connect to (IPv6 without brackets).
    pub host: String,
    pub port: u16,
    /// Request target: the base path, then `/publish/`.
    pub path: String,
}

/// Parse a `--spec`. `Err` is a usage error.
pub fn target(spec: &str) -> Result<Target, String> {
    let spec = spec.trim();
    let Some((scheme, rest)) = spec.split_once("://") else {
        return Err(format!(
            "--spec {spec:?}: expected a URL like {DEFAULT_SPEC}"
        ));
    };
    match scheme.to_ascii_lowercase().as_str() {
        "http" => {}
        "https" => {
            return Err(format!(
                "--spec {spec}: https is not supported by tack publish (no TLS client); \
                 use http:// (tack's control API speaks plain HTTP)"
            ))
        }
        "tcp" | "ipc" | "inproc" => {
            return Err(format!(
                "--spec {spec}: ZeroMQ publishing is not supported yet; \
                 use the HTTP control API ({DEFAULT_SPEC})"
            ))
        }
        other => return Err(format!("--spec {spec}: unsupported scheme {other:?}")),
    }
    let end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
    let authority = &rest[..end];
    let path = &rest[end..];
    let path = path.split(['?', '#']).next().unwrap_or("");
    let (host, port) = if let Some(v6) = authority.strip_prefix('[') {
        let (h, after) = v6
            .split_once(']')
            .ok_or_else(|| format!("--spec {spec}: unclosed '['"))?;
        (h, after.strip_prefix(':'))
    } else {
        match authority.rsplit_once(':') {
            Some((h, p)) => (h, Some(p)),
            None => (authority, None),
        }
    };
    if host.is_empty() {
        return Err(format!("--spec {spec}: no host"));
    }
    let port = match port {
        None => 80,
        Some(p) => p
            .parse::<u16>()
            .ok()
            .filter(|&p| p != 0)
            .ok_or_else(|| format!("--spec {spec}: bad port {p:?}"))?,
    };
    Ok(Target {
        authority: authority.to_string(),
        host: host.to_string(),
        port,
        path: format!("{}/publish/", path.trim_end_matches('/')),
    })
}

/// The API's answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Answer {
    pub status: u16,
    pub reason: String,
    pub body: Vec<u8>,
}

/// POST `body` to the target over one blocking connection (`Connection: close`).
pub fn post(target: &Target, authorization: Option<&str>, body: &[u8]) -> Result<Answer, String> {
    let addrs: Vec<_> = (target.host.as_str(), target.port)
        .to_socket_addrs()
        .map_err(|e| format!("cannot resolve {}: {e}", target.host))?
        .collect();
    let mut last = format!("cannot resolve {}", target.host);
    let mut stream = None;
    for a in addrs {
        match TcpStream::connect_timeout(&a, CONNECT_TIMEOUT) {
            Ok(s) => {
                stream = Some(s);
                break;
            }
            Err(e) => last = format!("cannot connect to {a}: {e}"),
        }
    }
    let mut stream = stream.ok_or(last)?;
    let io = |e: std::io::Error| format!("{}: {e}", target.authority);
    stream.set_read_timeout(Some(IO_TIMEOUT)).map_err(io)?;
    stream.set_write_timeout(Some(IO_TIMEOUT)).map_err(io)?;
    let mut req = format!(
        "POST {} HTTP/1.1\r\nHost: {}\r\nUser-Agent: tack-publish/{}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n",
        target.path,
        target.authority,
        env!("CARGO_PKG_VERSION"),
        body.len()
    );
    if let Some(value) = authorization {
        req.push_str("Authorization: ");
        req.push_str(value);
        req.push_str("\r\n");
    }
    req.push_str("\r\n");
    let mut out = req.into_bytes();
    out.extend_from_slice(body);
    stream.write_all(&out).map_err(io)?;
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        if let Some(answer) = parse_answer(&got, false)? {
            return Ok(answer);
        }
        let n = stream.read(&mut buf).map_err(io)?;
        if n == 0 {
            return parse_answer(&got, true)?.ok_or_else(|| {
                format!("{}: connection closed before an answer", target.authority)
            });
        }
        got.extend_from_slice(&buf[..n]);
        if got.len() > ANSWER_BYTES_MAX {
            return Err(format!("{}: answer too large", target.authority));
        }
    }
}

/// A complete answer in `got` (`eof`: the server closed), `None` if more bytes are needed.
fn parse_answer(got: &[u8], eof: bool) -> Result<Option<Answer>, String> {
    let mut headers = [httparse::EMPTY_HEADER; 64];
    let mut resp = httparse::Response::new(&mut headers);
    let head_len = match resp.parse(got) {
        Ok(httparse::Status::Complete(n)) => n,
        Ok(httparse::Status::Partial) => return Ok(None),
        Err(e) => return Err(format!("invalid answer from the API: {e}")),
    };
    let status = resp.code.unwrap_or(0);
    let reason = resp.reason.unwrap_or("").to_string();
    let header = |name: &str| {
        resp.headers
            .iter()
            .find(|h| h.name.eq_ignore_ascii_case(name))
            .map(|h| String::from_utf8_lossy(h.value).trim().to_ascii_lowercase())
    };
    let rest = &got[head_len..];
    let body = if header("transfer-encoding").is_some_and(|v| v.ends_with("chunked")) {
        match dechunk(rest)? {
            Some(b) => b,
            None if eof => return Err("answer ended inside a chunked body".to_string()),
            None => return Ok(None),
        }
    } else if let Some(len) = header("content-length") {
        let len: usize = len
            .parse()
            .map_err(|_| "invalid Content-Length in the answer".to_string())?;
        if rest.len() < len {
            if eof {
                return Err("answer shorter than its Content-Length".to_string());
            }
            return Ok(None);
        }
        rest[..len].to_vec()
    } else if eof {
        rest.to_vec()
    } else {
        return Ok(None);
    };
    Ok(Some(Answer {
        status,
        reason,
        body,
    }))
}

/// A whole chunked body, or `None` if it is not complete yet.
fn dechunk(mut data: &[u8]) -> Result<Option<Vec<u8>>, String> {
    let mut body = Vec::new();
    loop {
        let Some(eol) = data.windows(2).position(|w| w == b"\r\n") else {
            return Ok(None);
        };
        let line = String::from_utf8_lossy(&data[..eol]);
        let size = usize::from_str_radix(line.split(';').next().unwrap_or("").trim(), 16)
            .map_err(|_| "invalid chunk size in the answer".to_string())?;
        data = &data[eol + 2..];
        if size == 0 {
            return Ok(Some(body));
        }
        if data.len() < size + 2 {
            return Ok(None);
        }
        body.extend_from_slice(&data[..size]);
        data = &data[size + 2..];
    }
}

/// Run `tack publish`; prints the outcome and returns the exit status.
pub fn run(args: &PublishArgs) -> ExitCode {
    let read = |p: &Path| std::fs::read(p);
    let usage = |e: String| {
        eprintln!("tack publish: {e}");
        ExitCode::from(2)
    };
    let item = match item(args, &read) {
        Ok(i) => i,
        Err(e) => return usage(e),
    };
    let auth = match authorization(args, &read) {
        Ok(a) => a,
        Err(e) => return usage(e),
    };
    let spec = args
        .spec
        .clone()
        .or_else(|| {
            std::env::var(SPEC_ENV)
                .ok()
                .filter(|s| !s.trim().is_empty())
        })
        .unwrap_or_else(|| DEFAULT_SPEC.to_string());
    let target = match target(&spec) {
        Ok(t) => t,
        Err(e) => return usage(e),
    };
    let body = json!({ "items": [item] }).to_string();
    match post(&target, auth.as_deref(), body.as_bytes()) {
        Ok(a) if a.status == 200 => {
            let text = String::from_utf8_lossy(&a.body);
            println!(
                "{}",
                if text.trim().is_empty() {
                    "Published"
                } else {
                    text.trim()
                }
            );
            ExitCode::SUCCESS
        }
        Ok(a) => {
            eprintln!(
                "tack publish: {} {}: {}",
                a.status,
                a.reason,
                String::from_utf8_lossy(&a.body).trim()
            );
            ExitCode::from(1)
        }
        Err(e) => {
            eprintln!("tack publish: {e}");
            ExitCode::from(1)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Parser)]
    struct Wrap {
        #[command(flatten)]
        args: PublishArgs,
    }

    fn parse(argv: &[&str]) -> Result<PublishArgs, clap::Error> {
        Wrap::try_parse_from(std::iter::once("publish").chain(argv.iter().copied())).map(|w| w.args)
    }

    fn files(p: &Path) -> std::io::Result<Vec<u8>> {
        match p.to_str() {
            Some("/f/text") => Ok(b"from file".to_vec()),
            Some("/f/bin") => Ok(vec![0xff, 0x00, 0x01]),
            Some("/f/token") => Ok(b" tok-1\n".to_vec()),
            _ => Err(std::io::Error::from(std::io::ErrorKind::NotFound)),
        }
    }

    fn item_of(argv: &[&str]) -> Result<Value, String> {
        item(&parse(argv).map_err(|e| e.to_string())?, &files)
    }

    #[test]
    fn content_goes_to_every_format_like_pushpin_publish() {
        assert_eq!(
            item_of(&["ch", "hello"]).unwrap(),
            json!({
                "channel": "ch",
                "formats": {
                    "http-response": {"code": 200, "body": "hello\n"},
                    "http-stream": {"content": "hello\n"},
                    "ws-message": {"content": "hello"},
                }
            })
        );
        assert_eq!(
            item_of(&[
                "ch",
                "hi",
                "--no-eol",
                "--code",
                "404",
                "-H",
                "X-A: 1",
                "-H",
                "Cache-Control:no-cache",
                "--id",
                "2",
                "--prev-id",
                "1",
                "--sender",
                "al",
                "-M",
                "k=v",
                "--meta",
                "x= y ",
                "--no-seq",
            ])
            .unwrap(),
            json!({
                "channel": "ch",
                "id": "2",
                "prev-id": "1",
                "formats": {
                    "http-response": {"code": 404, "body": "hi",
                                      "headers": [["X-A", "1"], ["Cache-Control", "no-cache"]]},
                    "http-stream": {"content": "hi"},
                    "ws-message": {"content": "hi"},
                },
                "meta": {"sender": "al", "k": "v", "x": "y"},
                "no-seq": true,
            })
        );
        // Empty ids are absent, as in pushpin-publish.
        let v = item_of(&["ch", "x", "--id", ""]).unwrap();
        assert!(v.get("id").is_none(), "{v}");
    }

    #[test]
    fn files_hints_closes_patches_and_formats() {
        assert_eq!(
            item_of(&["ch", "@/f/text"]).unwrap()["formats"],
            json!({
                "http-response": {"code": 200, "body": "from file"},
                "http-stream": {"content": "from file"},
                "ws-message": {"content": "from file"},
            })
        );
        assert_eq!(
            item_of(&["ch", "@/f/bin"]).unwrap()["formats"],
            json!({
                "http-response": {"code": 200, "body-bin": "/wAB"},
                "http-stream": {"content-bin": "/wAB"},
                "ws-message": {"content-bin": "/wAB"},
            })
        );
        assert_eq!(
            item_of(&["ch", "--hint"]).unwrap()["formats"],
            json!({
                "http-response": {"action": "hint"},
                "http-stream": {"action": "hint"},
                "ws-message": {"action": "hint"},
            })
        );
        assert_eq!(
            item_of(&["ch", "--close"]).unwrap()["formats"],
            json!({"http-stream": {"action": "close"}, "ws-message": {"action": "close"}})
        );
        assert_eq!(
            item_of(&["ch", r#"[{"op":"add","path":"/a","value":1}]"#, "--patch"]).unwrap()
                ["formats"],
            json!({"http-response": {"code": 200, "body-patch": [{"op":"add","path":"/a","value":1}]}})
        );
        assert_eq!(
            item_of(&["ch", "x", "--format", "ws-message"]).unwrap()["formats"],
            json!({"ws-message": {"content": "x"}})
        );
        assert_eq!(
            item_of(&["ch", "x", "--format", "http-stream,http-response"]).unwrap()["formats"],
            json!({"http-response": {"code": 200, "body": "x\n"}, "http-stream": {"content": "x\n"}})
        );
        assert_eq!(
            item_of(&[
                "ch",
                "--close",
                "--format",
                "ws-message",
                "--format",
                "http-stream"
            ])
            .unwrap()["formats"],
            json!({"http-stream": {"action": "close"}, "ws-message": {"action": "close"}})
        );
    }

    #[test]
    fn usage_errors() {
        let err = |argv: &[&str]| item_of(argv).unwrap_err();
        assert_eq!(err(&["ch"]), "must specify content (or --hint or --close)");
        assert!(err(&["ch", "@/f/none"]).starts_with("can't read file /f/none: "));
        assert_eq!(
            err(&["ch", "{}", "--patch"]),
            "patch content must be a JSON array"
        );
        assert!(err(&["ch", "x", "-H", "nocolon"]).starts_with("header must be in the form"));
        assert!(err(&["ch", "x", "-M", "novalue"]).starts_with("meta must be in the form"));
        assert_eq!(
            err(&["ch", "--close", "--format", "http-response"]),
            "--format http-response: this action applies only to http-stream, ws-message"
        );
        use clap::error::ErrorKind;
        let kind = |argv: &[&str]| parse(argv).unwrap_err().kind();
        assert_eq!(
            kind(&["ch", "x", "--code", "1000"]),
            ErrorKind::ValueValidation
        );
        assert_eq!(
            kind(&["ch", "--hint", "--close"]),
            ErrorKind::ArgumentConflict
        );
        assert_eq!(
            kind(&["ch", "x", "-u", "a:b", "--bearer", "t"]),
            ErrorKind::ArgumentConflict
        );
        assert_eq!(
            kind(&["ch", "x", "--format", "sse"]),
            ErrorKind::InvalidValue
        );
        assert_eq!(kind(&[]), ErrorKind::MissingRequiredArgument);
    }

    #[test]
    fn credentials() {
        let auth = |argv: &[&str]| authorization(&parse(argv).unwrap(), &files);
        assert_eq!(auth(&["ch"]), Ok(None));
        assert_eq!(
            auth(&["ch", "-B", "t0k"]),
            Ok(Some("Bearer t0k".to_string()))
        );
        assert_eq!(
            auth(&["ch", "--bearer-file", "/f/token"]),
            Ok(Some("Bearer tok-1".to_string()))
        );
        assert_eq!(
            auth(&["ch", "-u", "alice:pw"]),
            Ok(Some("Basic YWxpY2U6cHc=".to_string()))
        );
        assert!(auth(&["ch", "-u", "alice"]).is_err());
        assert!(auth(&["ch", "--bearer", "a b"]).is_err());
        assert!(auth(&["ch", "--bearer-file", "/f/none"]).is_err());
    }

    #[test]
    fn specs() {
        let t = target("http://localhost:5561").unwrap();
        assert_eq!(
            t,
            Target {
                authority: "localhost:5561".into(),
                host: "localhost".into(),
                port: 5561,
                path: "/publish/".into()
            }
        );
        let t = target("http://[::1]:7000/base/?iss=x").unwrap();
        assert_eq!(
            (t.host.as_str(), t.port, t.path.as_str()),
            ("::1", 7000, "/base/publish/")
        );
        assert_eq!(target("http://example.com").unwrap().port, 80);
        assert!(target("tcp://127.0.0.1:5560")
            .unwrap_err()
            .contains("ZeroMQ"));
        assert!(target("https://api.fanout.io/realm/x")
            .unwrap_err()
            .contains("https"));
        assert!(target("localhost:5561").is_err());
        assert!(target("http://h:0").is_err());
        assert!(target("http://:80").is_err());
    }

    #[test]
    fn answers() {
        let a = parse_answer(
            b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nPublished\n",
            false,
        )
        .unwrap()
        .unwrap();
        assert_eq!((a.status, a.body.as_slice()), (200, &b"Published\n"[..]));
        assert_eq!(
            parse_answer(b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nPub", false),
            Ok(None)
        );
        let a = parse_answer(b"HTTP/1.0 401 Unauthorized\r\n\r\nno", true)
            .unwrap()
            .unwrap();
        assert_eq!(
            (a.status, a.reason.as_str(), a.body.as_slice()),
            (401, "Unauthorized", &b"no"[..])
        );
        let a = parse_answer(
            b"HTTP/1.1 400 Bad Request\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\n\r\n",
            false,
        )
        .unwrap()
        .unwrap();
        assert_eq!(a.body, b"abc");
    }
}
