//! django-eventstream (5.3.4, the widely used Django SSE library, with its event store) behind
//! tack and behind Pushpin 1.36, differentially: each scenario runs against tack on both
//! drivers and against a private Pushpin (when installed), each with its own Django backend
//! (`loadtest/tests/django_es/`, see its NOTES.md) and a fresh event store, and what the SSE
//! clients receive (every event's type, id and data, in order; keep-alives aside) must be the
//! same everywhere, and what the library means it to be.
//!
//! Readiness, without sleeps: a client is held and subscribed once tack's
//! `tack_subscriptions_started` counts its channels (`events-<ch>` for each, and `user-<pk>`),
//! or once Pushpin's handler logs `subscribe <uri> channel=events-<ch>` (it subscribes after
//! writing the initial body, so the body alone is no signal). Pushpin 1.36 also fetches a stream's next link
//! once about 1 s after a channel's first subscriber; django-eventstream answers it with an
//! empty body, and Pushpin drops queued items that the answer covers, so it changes nothing a
//! client sees: the comparison holds whether or not it happened yet.
//!
//! The last test does the same with a real browser: headless Chromium's `EventSource`
//! (skipped, loudly, where `chromium` is not installed).

use std::collections::{HashMap, VecDeque};
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use loadtest::client::RawClient;
use loadtest::ports::free_port;

use crate::support::{
    metric, pushpin_available, python_venv, start, temp_file, wait_metric, PipInstall, Pushpin,
    Tack, DRIVERS,
};

/// The proxies' `sig_key`, and the key Django verifies `Grip-Sig` with (`GRIP_VERIFY_KEY`): only
/// requests the proxy under test signed count as proxied (32+ bytes: PyJWT warns below).
const SIG_KEY: &str = "tack-e2e-django-eventstream-signing-key";
const T: Duration = Duration::from_secs(10);

fn backend_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("loadtest/tests/django_es")
}

/// A Python with the backend's pinned requirements (a venv under `target/`, made once).
pub fn django_python() -> PathBuf {
    python_venv(
        "django-es-venv",
        &PipInstall::Requirements(&backend_dir().join("requirements.txt")),
        // Not an import: django-eventstream and django-grip read Django settings on import.
        "from importlib.metadata import version; version('django-eventstream'); \
         version('django-grip'); import django, gripcontrol",
    )
}

/// Lines a child process wrote on one stream, collected by a reader thread.
#[derive(Default)]
struct Lines(Mutex<Vec<String>>);

impl Lines {
    fn snapshot(&self) -> Vec<String> {
        self.0.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }
}

/// The django-eventstream backend (`serve.py`) on a port chosen at run time, publishing to a
/// proxy, with its own event store; killed (by pid) and its store removed when dropped.
pub struct Django {
    child: Child,
    pub addr: SocketAddr,
    /// Django's request log (stderr): one line per request, next-link fetches included.
    log: Arc<Lines>,
    dir: PathBuf,
}

impl Django {
    /// Start the backend on `port`, publishing to `http://<publish>`, and wait for `READY`.
    pub fn start(port: u16, publish: SocketAddr) -> Django {
        let py = django_python();
        let marker = temp_file("django-es", "");
        let dir = marker.parent().expect("temp dir").to_path_buf();
        let _ = std::fs::remove_file(&marker);
        let mut child = Command::new(&py)
            .arg(backend_dir().join("serve.py"))
            .arg(port.to_string())
            .env("ES_DB", dir.join("events.sqlite3"))
            .env("GRIP_URL", format!("http://{publish}"))
            .env("GRIP_VERIFY_KEY", SIG_KEY)
            .env("PYTHONUNBUFFERED", "1")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| panic!("spawn {}: {e}", py.display()));
        let log = Arc::new(Lines::default());
        let sink = Arc::clone(&log);
        let stderr = child.stderr.take().expect("stderr");
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                sink.0.lock().unwrap_or_else(|e| e.into_inner()).push(line);
            }
        });
        let stdout = child.stdout.take().expect("stdout");
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                let _ = tx.send(line);
            }
        });
        let mut d = Django {
            child,
            addr: SocketAddr::from(([127, 0, 0, 1], port)),
            log,
            dir,
        };
        match rx.recv_timeout(Duration::from_secs(60)) {
            Ok(line) if line == format!("READY {port}") => d,
            other => {
                let _ = d.child.kill();
                panic!(
                    "django did not get ready on port {port} ({other:?}); stderr:\n{}",
                    d.log.snapshot().join("\n")
                )
            }
        }
    }

    /// `POST /send/<channel>/?<query>` (`n=COUNT`, `skip=…`, `tag=…`, `async=1`): publishes
    /// through the proxy; returns the answer's JSON.
    pub fn send(&self, channel: &str, query: &str) -> serde_json::Value {
        send_to(self.addr, channel, query)
    }

    /// Request log lines containing every one of `parts`.
    pub fn requests(&self, parts: &[&str]) -> Vec<String> {
        self.log
            .snapshot()
            .into_iter()
            .filter(|l| l.contains("\"GET ") && parts.iter().all(|p| l.contains(p)))
            .collect()
    }
}

/// [`Django::send`] to the backend at `addr` (usable from another thread).
fn send_to(addr: SocketAddr, channel: &str, query: &str) -> serde_json::Value {
    let mut c = RawClient::connect(addr);
    c.send(
        format!(
            "POST /send/{channel}/?{query} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: 0\r\n\r\n"
        )
        .as_bytes(),
    );
    let r = c
        .read_response(Duration::from_secs(60))
        .unwrap_or_else(|e| panic!("send {channel}?{query}: {e}"));
    assert_eq!(r.status, 200, "send {channel}?{query}: {}", r.text());
    serde_json::from_slice(&r.body).expect("send answer is JSON")
}

impl Drop for Django {
    fn drop(&mut self) {
        let _ = self.child.kill(); // SIGKILL by pid: serve.py re-execs in place, same pid
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// One SSE event as a client sees it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Event {
    pub event: String,
    pub id: Option<String>,
    pub data: String,
}

impl std::fmt::Display for Event {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "[{} id={} data={}]",
            self.event,
            self.id.as_deref().unwrap_or("-"),
            self.data
        )
    }
}

fn open_event() -> Event {
    Event {
        event: "stream-open".into(),
        id: None,
        data: String::new(),
    }
}

/// The event `send` publishes: `{"n": n, "pct": "100%"[, "tag": tag]}` with id `<ch>:<id>`.
fn msg(ch: &str, id: u32, n: u32, tag: Option<&str>) -> Event {
    ev(&format!("{ch}:{id}"), n, tag)
}

/// [`msg`] with the whole id given (a multi-channel id: `d:2,a:1`).
fn ev(id: &str, n: u32, tag: Option<&str>) -> Event {
    let tag = tag.map_or(String::new(), |t| format!(", \"tag\": \"{t}\""));
    Event {
        event: "message".into(),
        id: Some(id.to_string()),
        data: format!("{{\"n\": {n}, \"pct\": \"100%\"{tag}}}"),
    }
}

/// An SSE client on a raw socket: decodes the chunked body itself and parses events from it.
pub struct SseClient {
    stream: TcpStream,
    pub head: String,
    /// Wire bytes after the head not decoded yet.
    raw: Vec<u8>,
    /// The decoded body so far (kept whole for [`Self::assert_clean`]).
    body: Vec<u8>,
    /// How much of `body` has been parsed into events.
    parsed: usize,
    ended: bool,
    queue: VecDeque<Event>,
    /// Every event read so far, keep-alives excluded: the transcript.
    pub seen: Vec<Event>,
    /// Keep-alive blocks (their exact text) and when each arrived.
    pub keep_alives: Vec<(String, Instant)>,
}

impl SseClient {
    /// `GET path` with `headers` (complete lines); reads the response head, which must be a
    /// 200 chunked event stream without `Grip-*` headers.
    pub fn open(addr: SocketAddr, path: &str, headers: &str) -> SseClient {
        let mut stream = TcpStream::connect(addr).expect("connect proxy");
        stream.set_nodelay(true).expect("nodelay");
        stream
            .write_all(
                format!(
                    "GET {path} HTTP/1.1\r\nHost: {addr}\r\nAccept: text/event-stream\r\n{headers}\r\n"
                )
                .as_bytes(),
            )
            .expect("send request");
        let mut c = SseClient {
            stream,
            head: String::new(),
            raw: Vec::new(),
            body: Vec::new(),
            parsed: 0,
            ended: false,
            queue: VecDeque::new(),
            seen: Vec::new(),
            keep_alives: Vec::new(),
        };
        let end = Instant::now() + T;
        let at = loop {
            if let Some(p) = find(&c.raw, b"\r\n\r\n") {
                break p;
            }
            assert!(
                c.fill(end),
                "{path}: no response head; got {:?}",
                String::from_utf8_lossy(&c.raw)
            );
        };
        c.head = String::from_utf8_lossy(&c.raw[..at + 4]).into_owned();
        c.raw.drain(..at + 4);
        let lower = c.head.to_ascii_lowercase();
        assert!(c.head.starts_with("HTTP/1.1 200 "), "{path}: {}", c.head);
        assert!(
            lower.contains("\r\ncontent-type: text/event-stream"),
            "{path}: {}",
            c.head
        );
        assert!(
            lower.contains("\r\ntransfer-encoding: chunked"),
            "{path}: {}",
            c.head
        );
        assert!(!lower.contains("\r\ngrip-"), "{path}: {}", c.head);
        // The backend's own headers reach the client.
        for h in ["cache-control: no-cache", "x-accel-buffering: no"] {
            assert!(
                lower.contains(&format!("\r\n{h}\r\n")),
                "{path}: {}",
                c.head
            );
        }
        c
    }

    /// Read once (until `end`); false on EOF or timeout.
    fn fill(&mut self, end: Instant) -> bool {
        let left = end.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return false;
        }
        let _ = self.stream.set_read_timeout(Some(left));
        let mut buf = [0u8; 16384];
        match self.stream.read(&mut buf) {
            Ok(0) | Err(_) => false,
            Ok(n) => {
                self.raw.extend_from_slice(&buf[..n]);
                true
            }
        }
    }

    /// Move complete chunks from `raw` to `body`, then complete events to the queue.
    fn decode(&mut self) {
        while !self.ended {
            let Some(le) = find(&self.raw, b"\r\n") else {
                break;
            };
            let line = String::from_utf8_lossy(&self.raw[..le]).into_owned();
            let size = usize::from_str_radix(line.split(';').next().unwrap_or("").trim(), 16)
                .unwrap_or_else(|_| panic!("bad chunk size line {line:?}"));
            if size == 0 {
                self.ended = true;
                break;
            }
            let end = le + 2 + size;
            if self.raw.len() < end + 2 {
                break;
            }
            assert_eq!(
                &self.raw[end..end + 2],
                b"\r\n",
                "chunk not CRLF-terminated"
            );
            self.body.extend_from_slice(&self.raw[le + 2..end]);
            self.raw.drain(..end + 2);
        }
        while let Some(p) = find(&self.body[self.parsed..], b"\n\n") {
            let block =
                String::from_utf8_lossy(&self.body[self.parsed..self.parsed + p]).into_owned();
            self.parsed += p + 2;
            let mut ev = Event {
                event: String::new(),
                id: None,
                data: String::new(),
            };
            let mut fields = 0;
            let mut data: Vec<&str> = Vec::new();
            for line in block.split('\n') {
                if line.starts_with(':') || line.is_empty() {
                    continue; // a comment (django's 2 KiB padding)
                }
                fields += 1;
                let (name, value) = line.split_once(':').unwrap_or((line, ""));
                let value = value.strip_prefix(' ').unwrap_or(value);
                match name {
                    "event" => ev.event = value.to_string(),
                    "id" => ev.id = Some(value.to_string()),
                    "data" => data.push(value),
                    other => panic!("unexpected SSE field {other:?} in {block:?}"),
                }
            }
            if fields == 0 {
                continue;
            }
            ev.data = data.join("\n");
            if ev.event == "keep-alive" {
                self.keep_alives
                    .push((format!("{block}\n\n"), Instant::now()));
            } else {
                self.queue.push_back(ev);
            }
        }
    }

    /// The next event (keep-alives excluded) before `end`; `None` at the end of the stream or
    /// the deadline.
    fn next_before(&mut self, end: Instant) -> Option<Event> {
        loop {
            self.decode();
            if let Some(e) = self.queue.pop_front() {
                self.seen.push(e.clone());
                return Some(e);
            }
            if self.ended || !self.fill(end) {
                return None;
            }
        }
    }

    /// Read events until one has id `id`; returns the events read by this call.
    pub fn read_until_id(&mut self, id: &str, what: &str) -> Vec<Event> {
        self.read_until(|e| e.id.as_deref() == Some(id), what)
    }

    /// Read events until `done` says so (within 10 s); returns the events read by this call.
    pub fn read_until(&mut self, done: impl Fn(&Event) -> bool, what: &str) -> Vec<Event> {
        let end = Instant::now() + T;
        let from = self.seen.len();
        loop {
            match self.next_before(end) {
                Some(e) if done(&e) => return self.seen[from..].to_vec(),
                Some(_) => {}
                None => panic!(
                    "{what}: stream ended or timed out; events so far:\n{}",
                    show(&self.seen[from..])
                ),
            }
        }
    }

    /// Wait until `within` for a keep-alive.
    pub fn wait_keep_alive(&mut self, within: Duration) -> bool {
        let end = Instant::now() + within;
        loop {
            self.decode();
            if !self.keep_alives.is_empty() || self.ended || !self.fill(end) {
                break;
            }
        }
        !self.keep_alives.is_empty()
    }

    /// The body never showed the publisher's escapes: no `%%`, no `%I`.
    pub fn assert_clean(&self, what: &str) {
        let body = String::from_utf8_lossy(&self.body);
        assert!(
            !body.contains("%%") && !body.contains("%I"),
            "{what}: escapes reached the client: {body}"
        );
    }
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

fn show(events: &[Event]) -> String {
    events
        .iter()
        .enumerate()
        .map(|(i, e)| format!("  {i}: {e}"))
        .collect::<Vec<_>>()
        .join("\n")
}

enum Proxy {
    Tack(Tack),
    Pushpin(Pushpin),
}

/// A proxy (tack on one driver, or Pushpin) in front of its own Django.
pub struct Stack {
    pub name: String,
    proxy: Proxy,
    pub django: Django,
    addr: SocketAddr,
    publish: SocketAddr,
    /// tack: subscriptions `tack_subscriptions_started` must count once every client so far is
    /// held. Pushpin: subscribe lines expected per channel.
    subs: u64,
    logged: HashMap<String, usize>,
}

impl Stack {
    pub fn tack(driver: &str) -> Stack {
        let port = free_port();
        let conf = crate::support::conf_with_routes(
            &format!("[proxy]\nsig_key={SIG_KEY}\nroutesfile=routes\n"),
            &format!("* 127.0.0.1:{port}\n"),
        );
        let tack = start(driver, &["--config".into(), conf.display().to_string()]);
        let django = Django::start(port, tack.publish);
        Stack {
            name: format!("tack/{driver}"),
            addr: tack.addr,
            publish: tack.publish,
            proxy: Proxy::Tack(tack),
            django,
            subs: 0,
            logged: HashMap::new(),
        }
    }

    pub fn pushpin() -> Stack {
        let port = free_port();
        let pushpin = Pushpin::start(&format!("* 127.0.0.1:{port}\n"), SIG_KEY);
        let django = Django::start(port, pushpin.publish);
        Stack {
            name: "pushpin-1.36".into(),
            addr: pushpin.addr,
            publish: pushpin.publish,
            proxy: Proxy::Pushpin(pushpin),
            django,
            subs: 0,
            logged: HashMap::new(),
        }
    }

    pub fn is_tack(&self) -> bool {
        matches!(self.proxy, Proxy::Tack(_))
    }

    /// A tack metric (`None` on Pushpin).
    pub fn tack_metric(&self, name: &str) -> Option<u64> {
        match &self.proxy {
            Proxy::Tack(t) => Some(metric(t.metrics, name)),
            Proxy::Pushpin(_) => None,
        }
    }

    /// Open `/events/<channel>/<query>` with `headers`, read its first event (which must be
    /// `stream-open`, sent in the initial body) and wait until the proxy has subscribed it.
    pub fn connect(&mut self, channel: &str, query: &str, headers: &str) -> SseClient {
        self.connect_path(&format!("/events/{channel}/{query}"), &[channel], headers)
    }

    /// [`Self::connect`] to any path that streams `channels` (django-eventstream's names).
    pub fn connect_path(&mut self, path: &str, channels: &[&str], headers: &str) -> SseClient {
        let mut c = SseClient::open(self.addr, path, headers);
        let what = format!("{} {path}", self.name);
        let first = c.read_until(|_| true, &what);
        assert_eq!(first, [open_event()], "{what}: first event");
        self.wait_held(channels, T, &what);
        c
    }

    /// Wait until one more stream on `channels` is held and subscribed (counted from the
    /// stack's start: every stream opened must be waited for once).
    pub fn wait_held(&mut self, channels: &[&str], within: Duration, what: &str) {
        match &self.proxy {
            Proxy::Tack(t) => {
                // events-<channel> for each, and user-<pk|anonymous>
                self.subs += channels.len() as u64 + 1;
                wait_metric(
                    t.metrics,
                    "tack_subscriptions_started",
                    self.subs,
                    within,
                    &format!("{what}: held"),
                );
            }
            Proxy::Pushpin(p) => {
                for channel in channels {
                    let needle = format!(" channel=events-{channel}");
                    let n = self.logged.entry(needle.clone()).or_default();
                    *n += 1;
                    p.wait_handler_log(&needle, *n, within, &format!("{what}: held"));
                }
            }
        }
    }

    pub fn send(&self, channel: &str, query: &str) -> serde_json::Value {
        self.django.send(channel, query)
    }
}

/// What the clients of one scenario received, by client.
type Transcript = Vec<(&'static str, Vec<Event>)>;

/// Run `scenario` against tack on both drivers, then Pushpin 1.36 (when installed), each on
/// a fresh stack, and require the same transcript from all.
fn differential(scenario: fn(&mut Stack) -> Transcript) {
    let mut runs: Vec<(String, Transcript)> = Vec::new();
    let mut stacks: Vec<Box<dyn Fn() -> Stack>> = DRIVERS
        .iter()
        .map(|(d, _)| Box::new(move || Stack::tack(d)) as Box<dyn Fn() -> Stack>)
        .collect();
    if pushpin_available() {
        stacks.push(Box::new(Stack::pushpin));
    }
    for make in stacks {
        let t0 = Instant::now();
        let mut s = make();
        let t1 = Instant::now();
        let t = scenario(&mut s);
        eprintln!(
            "{}: started in {:?}, scenario ran in {:?}",
            s.name,
            t1 - t0,
            t1.elapsed()
        );
        runs.push((s.name.clone(), t));
    }
    let (base_name, base) = &runs[0];
    for (name, t) in &runs[1..] {
        assert_same(base_name, base, name, t);
    }
    let names: Vec<&str> = runs.iter().map(|(n, _)| n.as_str()).collect();
    eprintln!("same events on {}", names.join(", "));
}

fn assert_same(a_name: &str, a: &Transcript, b_name: &str, b: &Transcript) {
    let clients = |t: &Transcript| t.iter().map(|(c, _)| *c).collect::<Vec<_>>();
    assert_eq!(clients(a), clients(b), "{a_name} vs {b_name}: clients");
    for ((client, ea), (_, eb)) in a.iter().zip(b) {
        if ea == eb {
            continue;
        }
        let at = ea.iter().zip(eb).take_while(|(x, y)| x == y).count();
        panic!(
            "{client}: {a_name} and {b_name} differ at event {at} ({} vs {} events)\n\
             {a_name}:\n{}\n{b_name}:\n{}",
            ea.len(),
            eb.len(),
            show(&ea[at.saturating_sub(2)..(at + 3).min(ea.len())]),
            show(&eb[at.saturating_sub(2)..(at + 3).min(eb.len())]),
        );
    }
}

/// Scenario 1: live events get their real ids from `build-id` and their data unescaped.
fn live_events(s: &mut Stack) -> Transcript {
    let mut c = s.connect("a", "", "");
    let sent = s.send("a", "n=3");
    assert_eq!(sent["last_id"], 3, "{}", s.name);
    let got = c.read_until_id("a:3", &s.name);
    let want: Vec<Event> = (1..=3).map(|i| msg("a", i, i, None)).collect();
    assert_eq!(got, want, "{}", s.name);
    c.assert_clean(&s.name);
    vec![("live", c.seen)]
}

#[test]
fn django_eventstream_live_events_carry_ids_and_unescaped_data() {
    differential(live_events);
}

/// Scenario 2: a client that comes back with `Last-Event-ID` (then with `?lastEventId=`) gets
/// exactly what it missed, from the initial body, then live events.
fn reconnect(s: &mut Stack) -> Transcript {
    let name = s.name.clone();
    let mut first = s.connect("b", "", "");
    s.send("b", "n=3");
    first.read_until_id("b:3", &name);
    first.assert_clean(&name);
    let first_seen = std::mem::take(&mut first.seen);
    drop(first); // the client goes away
    s.send("b", "n=2&tag=missed");
    let mut header = s.connect("b", "", "Last-Event-ID: b:3\r\n");
    s.send("b", "n=1&tag=live");
    header.read_until_id("b:6", &name);
    assert_eq!(
        header.seen,
        [
            open_event(),
            msg("b", 4, 1, Some("missed")),
            msg("b", 5, 2, Some("missed")),
            msg("b", 6, 1, Some("live")),
        ],
        "{name}: Last-Event-ID"
    );
    header.assert_clean(&name);
    let header_seen = std::mem::take(&mut header.seen);
    drop(header);
    s.send("b", "n=2&tag=missed2");
    let mut query = s.connect("b", "?lastEventId=b:6", "");
    s.send("b", "n=1&tag=live2");
    query.read_until_id("b:9", &name);
    assert_eq!(
        query.seen,
        [
            open_event(),
            msg("b", 7, 1, Some("missed2")),
            msg("b", 8, 2, Some("missed2")),
            msg("b", 9, 1, Some("live2")),
        ],
        "{name}: ?lastEventId"
    );
    query.assert_clean(&name);
    vec![
        ("first", first_seen),
        ("header", header_seen),
        ("query", query.seen),
    ]
}

#[test]
fn django_eventstream_reconnect_gets_exactly_what_it_missed() {
    differential(reconnect);
}

/// Scenario 3: 250 events missed: django-eventstream pages them, 100 per response, each page
/// but the last without a hold and with a `lastEventId` next link; the client gets every event
/// once, in order, then live events, after a bounded number of link fetches.
fn long_replay(s: &mut Stack) -> Transcript {
    let name = s.name.clone();
    s.send("d", "n=1&tag=seen");
    s.send("d", "n=250&tag=missed");
    let mut c = s.connect("d", "", "Last-Event-ID: d:1\r\n");
    c.read_until_id("d:251", &name);
    s.send("d", "n=2&tag=live");
    c.read_until_id("d:253", &name);
    let mut want = vec![open_event()];
    want.extend((2..=251).map(|i| msg("d", i, i - 1, Some("missed"))));
    want.extend((252..=253).map(|i| msg("d", i, i - 251, Some("live"))));
    assert_eq!(c.seen.len(), want.len(), "{name}: {}", show(&c.seen));
    assert_eq!(c.seen, want, "{name}");
    c.assert_clean(&name);
    // The two pages after the first were fetched once each; at most one more link fetch
    // (Pushpin 1.36's fetch after a channel's first subscription).
    let pages = s.django.requests(&["/events/d/?link=next&lastEventId="]);
    assert_eq!(pages.len(), 2, "{name}: {pages:#?}");
    assert!(
        pages[0].contains("lastEventId=d%3A101"),
        "{name}: {pages:#?}"
    );
    assert!(
        pages[1].contains("lastEventId=d%3A201"),
        "{name}: {pages:#?}"
    );
    let links = s.django.requests(&["link=next"]);
    assert!(links.len() <= 3, "{name}: {links:#?}");
    if s.is_tack() {
        // Counted by tack too: the client's request and the two pages reached the backend,
        // no link fetch was throttled, cut or made for a recovery.
        let sent = s.tack_metric("tack_backend_connect").unwrap_or(0)
            + s.tack_metric("tack_backend_pool_reuse").unwrap_or(0);
        assert_eq!(sent, 3, "{name}: backend requests");
        assert_eq!(links.len(), 2, "{name}: {links:#?}");
        for m in [
            "tack_next_link_throttled",
            "tack_next_link_chain_cut",
            "tack_stream_recoveries",
        ] {
            assert_eq!(s.tack_metric(m), Some(0), "{name}: {m}");
        }
    }
    vec![("replay", c.seen)]
}

#[test]
fn django_eventstream_long_replay_is_paged_through_next_links() {
    differential(long_replay);
}

/// Scenario 3b: the same replay while the events are still being published (a second thread
/// sends 100 more, one after the other, while the client connects and pages): whatever the
/// timing, every event arrives once and in order.
fn replay_racing_publishes(s: &mut Stack) -> Transcript {
    let name = s.name.clone();
    s.send("r", "n=1&tag=seen");
    s.send("r", "n=150&tag=missed");
    let django = s.django.addr;
    let racing = std::thread::spawn(move || send_to(django, "r", "n=100&tag=racing"));
    let mut c = s.connect("r", "", "Last-Event-ID: r:1\r\n");
    racing.join().expect("racing publisher");
    c.read_until_id("r:251", &name);
    let mut want = vec![open_event()];
    want.extend((2..=151).map(|i| msg("r", i, i - 1, Some("missed"))));
    want.extend((152..=251).map(|i| msg("r", i, i - 151, Some("racing"))));
    assert_eq!(c.seen, want, "{name}");
    c.assert_clean(&name);
    vec![("replay", c.seen)]
}

#[test]
fn django_eventstream_replay_racing_publishes_loses_and_repeats_nothing() {
    differential(replay_racing_publishes);
}

/// Scenario 7: one stream on two channels: the id carries every channel's position
/// (`id_format="d:%(events-d)s,a:%(events-a)s"`, a quoted meta value with a comma), replays go
/// channel by channel, and live events advance their own channel's part only.
fn multi_channel(s: &mut Stack) -> Transcript {
    let name = s.name.clone();
    s.send("a", "n=2&tag=missed");
    s.send("d", "n=2&tag=missed");
    let mut c = s.connect_path(
        "/events/?channel=a&channel=d",
        &["d", "a"],
        "Last-Event-ID: a:1,d:1\r\n",
    );
    s.send("a", "n=1&tag=live");
    s.send("d", "n=1&tag=live");
    c.read_until_id("d:3,a:3", &name);
    assert_eq!(
        c.seen,
        [
            open_event(),
            ev("d:2,a:1", 2, Some("missed")),
            ev("d:2,a:2", 2, Some("missed")),
            ev("d:2,a:3", 1, Some("live")),
            ev("d:3,a:3", 1, Some("live")),
        ],
        "{name}"
    );
    c.assert_clean(&name);
    vec![("two channels", c.seen)]
}

#[test]
fn django_eventstream_multi_channel_ids_carry_every_position() {
    differential(multi_channel);
}

/// Scenario 4: `skip-users`: an event sent with `skip=alice` reaches bob only; the drop
/// advances alice's position, so her next event is no gap (no recovery, no re-delivery).
fn skip_users(s: &mut Stack) -> Transcript {
    let name = s.name.clone();
    let mut alice = s.connect("e", "?user=alice", "");
    let mut bob = s.connect("e", "?user=bob", "");
    let sent = s.send("e", "n=1&skip=alice&tag=skipalice");
    assert_eq!(sent["skip_user_ids"], serde_json::json!(["1"]), "{name}");
    s.send("e", "n=1&tag=all");
    s.send("e", "n=1&tag=all2");
    alice.read_until_id("e:3", &name);
    bob.read_until_id("e:3", &name);
    assert_eq!(
        alice.seen,
        [
            open_event(),
            msg("e", 2, 1, Some("all")),
            msg("e", 3, 1, Some("all2"))
        ],
        "{name}: alice"
    );
    assert_eq!(
        bob.seen,
        [
            open_event(),
            msg("e", 1, 1, Some("skipalice")),
            msg("e", 2, 1, Some("all")),
            msg("e", 3, 1, Some("all2"))
        ],
        "{name}: bob"
    );
    alice.assert_clean(&name);
    bob.assert_clean(&name);
    // No recovery for alice: tack fetched no link; Pushpin at most its first-subscription one.
    let fetched = s.django.requests(&["user=alice&link=next"]);
    let max = if s.is_tack() { 0 } else { 1 };
    assert!(fetched.len() <= max, "{name}: {fetched:#?}");
    if s.is_tack() {
        assert_eq!(s.tack_metric("tack_filter_dropped"), Some(1), "{name}");
    }
    vec![("alice", alice.seen), ("bob", bob.seen)]
}

#[test]
fn django_eventstream_skip_users_skips_without_a_gap() {
    differential(skip_users);
}

/// Scenario 5: a burst of 200 events (the library's background publisher, one publish after
/// the other) reaches a live client complete and in order.
fn burst(s: &mut Stack) -> Transcript {
    let name = s.name.clone();
    let mut c = s.connect("f", "", "");
    s.send("f", "n=200&async=1");
    c.read_until_id("f:200", &name);
    let mut want = vec![open_event()];
    want.extend((1..=200).map(|i| msg("f", i, i, None)));
    assert_eq!(c.seen, want, "{name}");
    c.assert_clean(&name);
    vec![("burst", c.seen)]
}

#[test]
fn django_eventstream_burst_of_200_arrives_in_order() {
    differential(burst);
}

/// Scenario 6: the library asks for an idle keep-alive every 20 s
/// (`Grip-Keep-Alive: event: keep-alive\ndata:\n\n; format=cstring; timeout=20`): an idle
/// client gets it. The only test that waits that long: the stacks run in parallel.
#[test]
fn django_eventstream_idle_stream_gets_keep_alives() {
    let mut stacks: Vec<Box<dyn FnOnce() -> Stack + Send>> = DRIVERS
        .iter()
        .map(|(d, _)| Box::new(move || Stack::tack(d)) as Box<dyn FnOnce() -> Stack + Send>)
        .collect();
    if pushpin_available() {
        stacks.push(Box::new(Stack::pushpin));
    }
    let threads: Vec<_> = stacks
        .into_iter()
        .map(|make| {
            std::thread::spawn(move || {
                let mut s = make();
                let mut c = s.connect("k", "", "");
                let held = Instant::now();
                assert!(
                    c.wait_keep_alive(Duration::from_secs(30)),
                    "{}: no keep-alive within 30 s",
                    s.name
                );
                let (text, at) = c.keep_alives[0].clone();
                let after = at.duration_since(held);
                assert_eq!(text, "event: keep-alive\ndata:\n\n", "{}", s.name);
                // Idle 20 s (Pushpin subtracts up to 1 s of jitter).
                assert!(
                    after >= Duration::from_secs(15) && after <= Duration::from_secs(25),
                    "{}: first keep-alive after {after:?}",
                    s.name
                );
                // Still a live stream after it.
                s.send("k", "n=1");
                c.read_until_id("k:1", &s.name);
                let t: Transcript = vec![("idle", c.seen.clone())];
                (s.name.clone(), t)
            })
        })
        .collect();
    let runs: Vec<(String, Transcript)> = threads
        .into_iter()
        .map(|t| t.join().expect("keep-alive run panicked"))
        .collect();
    assert_eq!(
        runs[0].1,
        vec![("idle", vec![open_event(), msg("k", 1, 1, None)])]
    );
    for (name, t) in &runs[1..] {
        assert_same(&runs[0].0, &runs[0].1, name, t);
    }
}

/// Whether `chromium` (Debian's) is installed; the browser test is skipped, loudly, when not
/// (`.ci/run` installs it and sets `TACK_REQUIRE_CHROMIUM=1`, so there it fails instead).
fn chromium_available() -> bool {
    let found = Command::new("chromium")
        .arg("--version")
        .stderr(Stdio::null())
        .output()
        .is_ok_and(|o| o.status.success());
    if !found {
        assert!(
            std::env::var_os("TACK_REQUIRE_CHROMIUM").is_none(),
            "TACK_REQUIRE_CHROMIUM is set but `chromium` is not installed"
        );
        eprintln!("*** chromium not installed: the browser EventSource test is SKIPPED (apt-get install chromium) ***");
    }
    found
}

/// Headless Chromium showing one page, with a profile of its own; stopped (SIGTERM to its
/// pid, SIGKILL after 5 s) and the profile removed when dropped.
struct Chromium {
    child: Child,
    profile: PathBuf,
}

impl Chromium {
    fn open(url: &str) -> Chromium {
        let marker = temp_file("chromium", "");
        let profile = marker.parent().expect("temp dir").join("profile");
        let _ = std::fs::remove_file(&marker);
        // Debian's launcher execs the browser (same pid) when no temporary profile is asked for.
        let child = Command::new("chromium")
            .args([
                "--headless",
                "--no-sandbox",
                "--disable-gpu",
                "--disable-background-networking",
                "--disable-component-update",
                "--disable-sync",
                "--no-first-run",
            ])
            .arg(format!("--user-data-dir={}", profile.display()))
            .arg(url)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn chromium");
        Chromium { child, profile }
    }
}

impl Drop for Chromium {
    fn drop(&mut self) {
        if let (Ok(None), Ok(pid)) = (self.child.try_wait(), i32::try_from(self.child.id())) {
            // SAFETY: kill(2) on our own child, not reaped yet (try_wait just said so).
            unsafe { libc::kill(pid, libc::SIGTERM) };
            let end = Instant::now() + Duration::from_secs(5);
            while Instant::now() < end && matches!(self.child.try_wait(), Ok(None)) {
                std::thread::sleep(Duration::from_millis(20));
            }
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
        if let Some(dir) = self.profile.parent() {
            let _ = std::fs::remove_dir_all(dir);
        }
    }
}

/// `%XX` and `+` decoding of a query value (what `URLSearchParams` wrote).
fn url_decode(v: &str) -> String {
    let b = v.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        match b[i] {
            b'+' => out.push(b' '),
            b'%' if i + 2 < b.len() => {
                let hex = std::str::from_utf8(&b[i + 1..i + 3]).unwrap_or("");
                out.push(u8::from_str_radix(hex, 16).expect("percent escape"));
                i += 2;
            }
            c => out.push(c),
        }
        i += 1;
    }
    String::from_utf8(out).expect("UTF-8 beacon")
}

/// What the page's `EventSource` reported (`/beacon/?seq=…` in Django's log), in its order.
fn beacons(django: &Django) -> Vec<Event> {
    let mut got: Vec<(u32, Event)> = django
        .requests(&["GET /beacon/?"])
        .iter()
        .map(|line| {
            let query = line
                .split("GET /beacon/?")
                .nth(1)
                .and_then(|r| r.split(' ').next())
                .expect("beacon query");
            let mut seq = 0;
            let mut ev = Event {
                event: String::new(),
                id: None,
                data: String::new(),
            };
            for kv in query.split('&') {
                let (k, v) = kv.split_once('=').unwrap_or((kv, ""));
                let v = url_decode(v);
                match k {
                    "seq" => seq = v.parse().expect("seq"),
                    "type" => ev.event = v,
                    "id" => ev.id = (!v.is_empty()).then_some(v),
                    "data" => ev.data = v,
                    _ => {}
                }
            }
            (seq, ev)
        })
        .collect();
    got.sort_by_key(|(seq, _)| *seq);
    got.into_iter().map(|(_, e)| e).collect()
}

/// Wait (polling Django's log every 10 ms, at most 10 s) until the page reported an event
/// with id `id`; returns the whole report.
fn wait_beacon(s: &Stack, id: &str) -> Vec<Event> {
    let end = Instant::now() + T;
    loop {
        let got = beacons(&s.django);
        if got.iter().any(|e| e.id.as_deref() == Some(id)) {
            return got;
        }
        assert!(
            Instant::now() < end,
            "{}: the browser never reported {id}; reported:\n{}",
            s.name,
            show(&got)
        );
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// A real browser: Chromium's `EventSource` on a page served through the proxy gets live
/// events; the stream is closed (a published `action: close`, as django-eventstream's kick
/// does on `user-<id>`); events sent meanwhile are missed; the browser reconnects by itself
/// with `Last-Event-ID` and gets exactly those, then live ones. Same on tack and Pushpin.
#[test]
fn django_eventstream_in_chromium_reconnects_and_gets_what_it_missed() {
    if !chromium_available() {
        return;
    }
    let mut stacks: Vec<Box<dyn Fn() -> Stack>> = DRIVERS
        .iter()
        .map(|(d, _)| Box::new(move || Stack::tack(d)) as Box<dyn Fn() -> Stack>)
        .collect();
    if pushpin_available() {
        stacks.push(Box::new(Stack::pushpin));
    }
    let mut runs: Vec<(String, Transcript)> = Vec::new();
    for make in stacks {
        let mut s = make();
        let name = s.name.clone();
        let _browser = Chromium::open(&format!("http://{}/page/x/", s.addr));
        s.wait_held(&["x"], Duration::from_secs(30), &format!("{name}: browser"));
        s.send("x", "n=2&tag=live");
        wait_beacon(&s, "x:2");
        let close = r#"{"items":[{"channel":"user-anonymous","http-stream":{"action":"close"}}]}"#;
        assert_eq!(crate::grip::publish(s.publish, close).0, 200, "{name}");
        s.send("x", "n=2&tag=missed");
        s.wait_held(&["x"], T, &format!("{name}: browser reconnected"));
        s.send("x", "n=1&tag=live2");
        let got = wait_beacon(&s, "x:5");
        // Two connections, and the events were missed: the browser reconnected (Django's
        // log is in time order) after they were sent.
        let log = s.django.log.snapshot();
        let streams: Vec<usize> = (0..log.len())
            .filter(|&i| log[i].contains("\"GET /events/x/ "))
            .collect();
        let sent_missed = log
            .iter()
            .position(|l| l.contains("POST /send/x/?n=2&tag=missed"))
            .expect("missed send logged");
        assert_eq!(streams.len(), 2, "{name}: {log:#?}");
        assert!(sent_missed < streams[1], "{name}: {log:#?}");
        let mut open2 = open_event();
        open2.id = Some("x:2".into()); // `lastEventId` carries over to the new connection
        let want = vec![
            open_event(),
            msg("x", 1, 1, Some("live")),
            msg("x", 2, 2, Some("live")),
            Event {
                event: "error".into(),
                id: None,
                data: String::new(),
            },
            open2,
            msg("x", 3, 1, Some("missed")),
            msg("x", 4, 2, Some("missed")),
            msg("x", 5, 1, Some("live2")),
        ];
        assert_eq!(got, want, "{name}: {}", show(&got));
        eprintln!("{name}: the browser got {} events", got.len());
        runs.push((name, vec![("chromium", got)]));
    }
    for (name, t) in &runs[1..] {
        assert_same(&runs[0].0, &runs[0].1, name, t);
    }
}
