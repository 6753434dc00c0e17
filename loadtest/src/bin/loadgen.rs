//! `loadgen`: a load generator for held connections (HTTP streams, SSE, long-polls, WebSocket)
//! that measures fan-out: N subscribers on K channels, M published messages, per-delivery
//! latency, fan-out completion, loss, and the target's memory per connection and CPU per
//! delivery from `/proc`. One mio event loop for the subscribers, one thread for the publisher.
//! See `loadtest/README.md` ("Fan-out load generator").

#![recursion_limit = "256"]

use std::collections::{BTreeMap, VecDeque};
use std::io::{self, Read, Write};
use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4};
use std::os::fd::AsRawFd;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use clap::{Parser, ValueEnum};
use loadtest::client::RawClient;
use loadtest::measure::{
    message_line, parse_message, parse_metric, parse_proc_stat, parse_smaps_rollup, Dechunker,
    Histogram, LineSplitter, SeqTracker,
};
use mio::net::TcpStream;
use mio::{Events, Interest, Poll, Token};

/// Subscriber protocol.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
enum Mode {
    /// HTTP/1.1 response stream (chunked or close-delimited).
    Stream,
    /// Same, with `Accept: text/event-stream`.
    Sse,
    /// Long-poll: one message per response, re-poll after each.
    Longpoll,
    /// WebSocket: text frames.
    Ws,
}

/// Publish API of the target.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
enum PublishApi {
    /// tack's publish port (Pushpin's JSON items API).
    Tack,
    /// Pushpin's `push_in_http_port` (`POST /publish/`).
    Pushpin,
    /// Nchan publisher location: raw body POSTed to the channel's URL.
    Nchan,
}

#[derive(Parser, Debug, Clone)]
#[command(about = "Fan-out load generator for held connections")]
struct Args {
    /// Subscriber target, host:port.
    #[arg(long)]
    target: SocketAddr,
    /// Request path template; `{ch}` is replaced by the channel name.
    #[arg(long, default_value = "/stream?channel={ch}")]
    path: String,
    /// Subscriber protocol.
    #[arg(long, value_enum, default_value = "stream")]
    mode: Mode,
    /// Number of subscribers.
    #[arg(long, short = 'n', default_value_t = 1000)]
    subscribers: usize,
    /// Number of channels (subscriber i listens on channel i % K).
    #[arg(long, default_value_t = 1)]
    channels: usize,
    /// Channel name prefix (channel j is PREFIX + j).
    #[arg(long, default_value = "lg")]
    channel_prefix: String,
    /// Messages to publish (per channel).
    #[arg(long, short = 'm', default_value_t = 100)]
    messages: u32,
    /// Publish rate in messages/s; 0 = burst (back to back, each POST waits for its answer).
    #[arg(long, default_value_t = 0.0)]
    rate: f64,
    /// Publish API.
    #[arg(long, value_enum, default_value = "tack")]
    publish: PublishApi,
    /// Publish address, host:port.
    #[arg(long)]
    publish_addr: SocketAddr,
    /// Publish path (`{ch}` is replaced); default `/publish/`, or `/pub/{ch}` for nchan.
    #[arg(long)]
    publish_path: Option<String>,
    /// New subscriber connections per second at most.
    #[arg(long, default_value_t = 3000.0)]
    connect_rate: f64,
    /// Subscribes in flight (connected, no response head yet) at most.
    #[arg(long, default_value_t = 32)]
    inflight: usize,
    /// Source addresses to spread subscribers over: 127.0.0.2, 127.0.0.3, ...
    #[arg(long, default_value_t = 16)]
    src_addrs: u8,
    /// tack's metrics address (host:port or http://host:port/metrics): wait until
    /// `tack_holds_active` reaches the subscribed count before publishing.
    #[arg(long)]
    metrics: Option<String>,
    /// Delay after the last subscriber is in before measuring memory and publishing (ms).
    #[arg(long, default_value_t = 500)]
    settle_ms: u64,
    /// Longest time for the subscribe phase (s).
    #[arg(long, default_value_t = 120)]
    subscribe_timeout_s: u64,
    /// Longest wait for deliveries after the last publish (s).
    #[arg(long, default_value_t = 15)]
    drain_timeout_s: u64,
    /// End the drain early after this long with no delivery (ms).
    #[arg(long, default_value_t = 3000)]
    idle_ms: u64,
    /// Target pids to measure (comma separated).
    #[arg(long, value_delimiter = ',')]
    pids: Vec<u32>,
    /// Target pid whose whole process tree is measured.
    #[arg(long)]
    pid_tree: Option<u32>,
    /// Send `TE: chunked` (Nchan's http-chunked subscriber needs it).
    #[arg(long)]
    te_chunked: bool,
    /// Items carry `id` = the sequence number and `prev-id` = the previous one (tack/Pushpin
    /// publish APIs only): the target's sequencer orders and de-duplicates them.
    #[arg(long)]
    ids: bool,
    /// Publish out of order: after message 0, each window of this many messages is sent in
    /// reverse (the target must hold items until their `prev-id` arrives). 0/1 = in order.
    #[arg(long, default_value_t = 0)]
    out_of_order: u32,
    /// Publish every K-th message twice (same id; the target must drop the repeat). 0 = never.
    #[arg(long, default_value_t = 0)]
    duplicate_every: u32,
    /// Label for the report (e.g. the target's name).
    #[arg(long, default_value = "target")]
    label: String,
    /// Also print a one-line JSON summary (last line of stdout).
    #[arg(long)]
    json: bool,
}

// ------------------------------------------------------------------------------------ /proc

/// The pids to measure: `--pids` plus the current tree under `--pid-tree`.
fn target_pids(args: &Args) -> Vec<u32> {
    let mut pids = args.pids.clone();
    if let Some(root) = args.pid_tree {
        let mut parents: Vec<(u32, u32)> = Vec::new();
        if let Ok(dir) = std::fs::read_dir("/proc") {
            for e in dir.flatten() {
                let Some(pid) = e.file_name().to_str().and_then(|s| s.parse::<u32>().ok()) else {
                    continue;
                };
                if let Some(st) = std::fs::read_to_string(format!("/proc/{pid}/stat"))
                    .ok()
                    .and_then(|t| parse_proc_stat(&t))
                {
                    parents.push((pid, st.ppid));
                }
            }
        }
        let mut tree = vec![root];
        let mut i = 0;
        while i < tree.len() {
            let p = tree[i];
            tree.extend(parents.iter().filter(|(_, pp)| *pp == p).map(|(c, _)| *c));
            i += 1;
        }
        pids.extend(tree);
    }
    pids.sort_unstable();
    pids.dedup();
    pids
}

/// Summed (RSS KiB, PSS KiB) of `pids`.
fn mem_kib(pids: &[u32]) -> (u64, u64) {
    pids.iter()
        .filter_map(|p| std::fs::read_to_string(format!("/proc/{p}/smaps_rollup")).ok())
        .filter_map(|t| parse_smaps_rollup(&t))
        .fold((0, 0), |(r, s), (a, b)| (r + a, s + b))
}

/// Summed utime+stime of `pids` in µs.
fn cpu_us(pids: &[u32]) -> u64 {
    // SAFETY: sysconf has no preconditions.
    let tck = unsafe { libc::sysconf(libc::_SC_CLK_TCK) }.max(1) as u64;
    pids.iter()
        .filter_map(|p| std::fs::read_to_string(format!("/proc/{p}/stat")).ok())
        .filter_map(|t| parse_proc_stat(&t))
        .map(|s| (s.utime + s.stime) * 1_000_000 / tck)
        .sum()
}

/// This process's user+system CPU in µs (all threads).
fn self_cpu_us() -> u64 {
    // SAFETY: getrusage writes into the zeroed struct we own.
    let mut ru: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: valid pointer to a rusage.
    unsafe { libc::getrusage(libc::RUSAGE_SELF, &mut ru) };
    let tv = |t: libc::timeval| t.tv_sec as u64 * 1_000_000 + t.tv_usec as u64;
    tv(ru.ru_utime) + tv(ru.ru_stime)
}

/// Raises the soft open-file limit to the hard one; returns the new soft limit.
fn raise_nofile() -> u64 {
    // SAFETY: getrlimit/setrlimit on a struct we own.
    unsafe {
        let mut r: libc::rlimit = std::mem::zeroed();
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut r) != 0 {
            return 0;
        }
        r.rlim_cur = r.rlim_max;
        libc::setrlimit(libc::RLIMIT_NOFILE, &r);
        libc::getrlimit(libc::RLIMIT_NOFILE, &mut r);
        r.rlim_cur
    }
}

/// Fetches `tack_holds_active` from a metrics address.
fn holds_active(addr: SocketAddr) -> Option<u64> {
    let mut c = RawClient::try_connect(addr).ok()?;
    c.try_send(b"GET /metrics HTTP/1.1\r\nHost: metrics\r\n\r\n")
        .ok()?;
    let r = c.read_response(Duration::from_secs(5)).ok()?;
    parse_metric(&String::from_utf8_lossy(&r.body), "tack_holds_active").map(|v| v as u64)
}

fn parse_metrics_addr(s: &str) -> Result<SocketAddr, String> {
    let s = s.strip_prefix("http://").unwrap_or(s);
    let hostport = s.split('/').next().unwrap_or(s);
    hostport
        .parse()
        .map_err(|e| format!("bad --metrics address {s:?}: {e}"))
}

// ------------------------------------------------------------------------------------ publisher

/// What the publisher thread reports.
#[derive(Default, Debug)]
struct PubReport {
    posts: u64,
    errors: u64,
    statuses: BTreeMap<u16, u64>,
    rtt: Histogram,
    first_send_us: u64,
    last_ack_us: u64,
    last_error: Option<String>,
}

/// Shared between the event loop and the publisher thread.
struct PubShared {
    /// Send time (µs since start, +1 so 0 means "not sent") of each sequence's first POST.
    sent: Vec<AtomicU64>,
    done: AtomicBool,
}

fn json_escape(s: &str) -> String {
    serde_json::to_string(s).unwrap_or_else(|_| "\"\"".to_string())
}

/// The order in which sequence numbers are published: message 0 first (a channel's first item
/// is never held by a sequencer), then windows of `window` messages each sent in reverse; every
/// `dup_every`-th message is sent a second time right after the first.
fn publish_order(messages: u32, window: u32, dup_every: u32) -> Vec<u64> {
    let m = u64::from(messages);
    let w = u64::from(window.max(1));
    let mut order = Vec::with_capacity(messages as usize * 2);
    if m > 0 {
        order.push(0);
    }
    let mut start = 1;
    while start < m {
        let end = (start + w).min(m);
        order.extend((start..end).rev());
        start = end;
    }
    if dup_every > 0 {
        let k = u64::from(dup_every);
        order = order
            .into_iter()
            .flat_map(|s| {
                let twice = s % k == k - 1;
                std::iter::once(s).chain(twice.then_some(s))
            })
            .collect();
    }
    order
}

/// Body of one publish for `seq` on `channels`; with `ids`, items carry `id`/`prev-id`.
fn publish_body(
    api: PublishApi,
    mode: Mode,
    channels: &[String],
    seq: u64,
    t: u64,
    ids: bool,
) -> Vec<u8> {
    let line = message_line(seq, t);
    match api {
        PublishApi::Nchan => line.into_bytes(),
        PublishApi::Tack | PublishApi::Pushpin => {
            let content = if mode == Mode::Sse {
                format!("data: {}\n\n", line.trim_end())
            } else {
                line.clone()
            };
            let items: Vec<String> = channels
                .iter()
                .map(|ch| {
                    let id = match (ids, seq) {
                        (false, _) => String::new(),
                        (true, 0) => "\"id\":\"0\",".to_string(),
                        (true, s) => format!("\"id\":\"{s}\",\"prev-id\":\"{}\",", s - 1),
                    };
                    format!(
                        "{{{id}\"channel\":{},\"formats\":{{\"http-stream\":{{\"content\":{}}},\"http-response\":{{\"body\":{}}},\"ws-message\":{{\"content\":{}}}}}}}",
                        json_escape(ch),
                        json_escape(&content),
                        json_escape(&line),
                        json_escape(line.trim_end())
                    )
                })
                .collect();
            format!("{{\"items\":[{}]}}", items.join(",")).into_bytes()
        }
    }
}

fn run_publisher(
    args: Args,
    channels: Vec<String>,
    start: Instant,
    shared: Arc<PubShared>,
) -> PubReport {
    let mut rep = PubReport::default();
    let now_us = || start.elapsed().as_micros() as u64;
    let path_tpl = args
        .publish_path
        .clone()
        .unwrap_or_else(|| match args.publish {
            PublishApi::Nchan => "/pub/{ch}".to_string(),
            _ => "/publish/".to_string(),
        });
    // One POST per message for the JSON APIs (all channels as items); one per channel for Nchan.
    let groups: Vec<Vec<String>> = match args.publish {
        PublishApi::Nchan => channels.iter().map(|c| vec![c.clone()]).collect(),
        _ => vec![channels.clone()],
    };
    let mut conn: Option<RawClient> = None;
    let t0 = Instant::now();
    let order = publish_order(args.messages, args.out_of_order, args.duplicate_every);
    for (nth, &seq) in order.iter().enumerate() {
        if args.rate > 0.0 {
            let due = t0 + Duration::from_secs_f64(nth as f64 / args.rate);
            let now = Instant::now();
            if due > now {
                std::thread::sleep(due - now);
            }
        }
        for group in &groups {
            let t = now_us();
            if rep.first_send_us == 0 {
                rep.first_send_us = t.max(1);
            }
            let slot = &shared.sent[seq as usize];
            if slot.load(Ordering::Relaxed) == 0 {
                slot.store(t + 1, Ordering::Relaxed);
            }
            let body = publish_body(args.publish, args.mode, group, seq, t, args.ids);
            let path = path_tpl.replace("{ch}", &group[0]);
            let ctype = match args.publish {
                PublishApi::Nchan => "text/plain",
                _ => "application/json",
            };
            let mut req = format!(
                "POST {path} HTTP/1.1\r\nHost: publish\r\nContent-Type: {ctype}\r\nContent-Length: {}\r\n\r\n",
                body.len()
            )
            .into_bytes();
            req.extend_from_slice(&body);
            let mut attempt = 0;
            loop {
                attempt += 1;
                if conn.is_none() {
                    match RawClient::try_connect(args.publish_addr) {
                        Ok(c) => conn = Some(c),
                        Err(e) => {
                            rep.errors += 1;
                            rep.last_error = Some(format!("connect: {e}"));
                            break;
                        }
                    }
                }
                let Some(c) = conn.as_mut() else { break };
                let sent_at = Instant::now();
                let res = c
                    .try_send(&req)
                    .map_err(|e| e.to_string())
                    .and_then(|_| c.read_response(Duration::from_secs(10)));
                match res {
                    Ok(r) => {
                        rep.posts += 1;
                        rep.rtt.record(sent_at.elapsed().as_micros() as u64);
                        *rep.statuses.entry(r.status).or_default() += 1;
                        if !(200..300).contains(&r.status) {
                            rep.errors += 1;
                            rep.last_error = Some(format!("status {}: {}", r.status, r.text()));
                        }
                        if r.header("connection")
                            .is_some_and(|v| v.eq_ignore_ascii_case("close"))
                        {
                            conn = None;
                        }
                        break;
                    }
                    Err(e) => {
                        // A keep-alive connection the server closed: retry once on a new one.
                        conn = None;
                        if attempt >= 2 {
                            rep.errors += 1;
                            rep.last_error = Some(e);
                            break;
                        }
                    }
                }
            }
        }
    }
    rep.last_ack_us = now_us();
    shared.done.store(true, Ordering::Release);
    rep
}

// ------------------------------------------------------------------------------------ subscribers

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Phase {
    /// Not connected (yet, or again for a long-poll).
    Idle,
    /// Connect in progress.
    Connecting,
    /// Writing the request; bytes written so far.
    Writing(usize),
    /// Reading the response head.
    Head,
    /// Reading the body.
    Body,
    /// WebSocket frames.
    WsFrames,
    /// Finished (failed or closed).
    Closed,
}

#[derive(Debug)]
enum Framing {
    Chunked(Dechunker),
    Length(u64),
    Close,
}

struct Sub {
    stream: Option<TcpStream>,
    phase: Phase,
    head: Vec<u8>,
    framing: Framing,
    lines: LineSplitter,
    seqs: SeqTracker,
    subscribed: bool,
    closed_early: bool,
    failed: bool,
    keep_alive: bool,
    etag: Option<String>,
    last_modified: Option<String>,
    ws_buf: Vec<u8>,
}

/// Counters of the event loop.
#[derive(Default)]
struct LoopStats {
    started: usize,
    subscribed: usize,
    failed: usize,
    fail_reasons: BTreeMap<String, u64>,
    closed_early: usize,
    inflight: usize,
    deliveries: u64,
    polls: u64,
    first_connect: Option<Instant>,
    last_subscribed: Option<Instant>,
    last_delivery: Option<Instant>,
    latency: Histogram,
    /// Per sequence: (deliveries, last receive µs).
    per_msg: Vec<(u64, u64)>,
    bad_lines: u64,
}

struct Loop {
    args: Args,
    channels: Vec<String>,
    subs: Vec<Sub>,
    poll: Poll,
    stats: LoopStats,
    start: Instant,
    publishing: bool,
    ending: bool,
    reconnect: VecDeque<usize>,
    buf: Vec<u8>,
    /// Scratch list of (seq, t) parsed from one read.
    found: Vec<(u64, u64)>,
}

/// Adds the message in `line` (if any) to `found`; counts lines that mention `seq=` but do not
/// parse.
fn scan_line(line: &[u8], found: &mut Vec<(u64, u64)>, bad: &mut u64) {
    match parse_message(line) {
        Some(m) => found.push(m),
        None if line.windows(4).any(|w| w == b"seq=") => *bad += 1,
        None => {}
    }
}

const HEAD_MAX: usize = 16 * 1024;

fn header<'a>(h: &'a [httparse::Header<'a>], name: &str) -> Option<&'a str> {
    h.iter()
        .find(|x| x.name.eq_ignore_ascii_case(name))
        .and_then(|x| std::str::from_utf8(x.value).ok())
}

impl Loop {
    fn now_us(&self) -> u64 {
        self.start.elapsed().as_micros() as u64
    }

    fn request(&self, i: usize) -> Vec<u8> {
        let ch = &self.channels[i % self.channels.len()];
        let path = self
            .args
            .path
            .replace("{ch}", ch)
            .replace("{i}", &i.to_string());
        let mut r = format!(
            "GET {path} HTTP/1.1\r\nHost: {}\r\nUser-Agent: loadgen\r\n",
            self.args.target
        );
        match self.args.mode {
            Mode::Sse => r.push_str("Accept: text/event-stream\r\n"),
            Mode::Ws => r.push_str(
                "Upgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n",
            ),
            Mode::Longpoll => {
                let s = &self.subs[i];
                if let Some(e) = &s.etag {
                    r.push_str(&format!("If-None-Match: {e}\r\n"));
                }
                if let Some(m) = &s.last_modified {
                    r.push_str(&format!("If-Modified-Since: {m}\r\n"));
                }
            }
            Mode::Stream => {}
        }
        if self.args.te_chunked {
            r.push_str("TE: chunked\r\n");
        }
        r.push_str("\r\n");
        r.into_bytes()
    }

    fn connect(&mut self, i: usize) -> io::Result<()> {
        let src = Ipv4Addr::new(
            127,
            0,
            0,
            2 + (i % usize::from(self.args.src_addrs.max(1))) as u8,
        );
        let sock = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None)?;
        sock.set_nonblocking(true)?;
        sock.set_nodelay(true)?;
        let one: libc::c_int = 1;
        // SAFETY: setsockopt with a valid fd and a c_int option value.
        unsafe {
            libc::setsockopt(
                sock.as_raw_fd(),
                libc::IPPROTO_IP,
                libc::IP_BIND_ADDRESS_NO_PORT,
                &one as *const libc::c_int as *const libc::c_void,
                std::mem::size_of::<libc::c_int>() as libc::socklen_t,
            );
        }
        sock.bind(&SocketAddr::V4(SocketAddrV4::new(src, 0)).into())?;
        match sock.connect(&self.args.target.into()) {
            Ok(()) => {}
            Err(e) if e.raw_os_error() == Some(libc::EINPROGRESS) => {}
            Err(e) => return Err(e),
        }
        let mut stream = TcpStream::from_std(std::net::TcpStream::from(sock));
        self.poll.registry().register(
            &mut stream,
            Token(i),
            Interest::READABLE | Interest::WRITABLE,
        )?;
        let s = &mut self.subs[i];
        s.stream = Some(stream);
        s.phase = Phase::Connecting;
        s.head.clear();
        Ok(())
    }

    fn fail(&mut self, i: usize, reason: String) {
        let s = &mut self.subs[i];
        if let Some(mut st) = s.stream.take() {
            let _ = self.poll.registry().deregister(&mut st);
        }
        let was_inflight = !s.subscribed && !s.failed;
        if s.subscribed {
            if !s.closed_early && !self.ending {
                s.closed_early = true;
                self.stats.closed_early += 1;
                *self
                    .stats
                    .fail_reasons
                    .entry(format!("closed: {reason}"))
                    .or_default() += 1;
            }
        } else if !s.failed {
            s.failed = true;
            self.stats.failed += 1;
            *self.stats.fail_reasons.entry(reason).or_default() += 1;
        }
        if was_inflight {
            self.stats.inflight = self.stats.inflight.saturating_sub(1);
        }
        s.phase = Phase::Closed;
    }

    fn mark_subscribed(&mut self, i: usize) {
        let s = &mut self.subs[i];
        if !s.subscribed {
            s.subscribed = true;
            self.stats.subscribed += 1;
            self.stats.inflight = self.stats.inflight.saturating_sub(1);
            self.stats.last_subscribed = Some(Instant::now());
        }
    }

    fn deliver(&mut self, i: usize, line: &[u8]) {
        let mut found = Vec::with_capacity(1);
        scan_line(line, &mut found, &mut self.stats.bad_lines);
        for (seq, t) in found {
            self.record(i, seq, t);
        }
    }

    fn record(&mut self, i: usize, seq: u64, t: u64) {
        let now = self.now_us();
        self.subs[i].seqs.observe(seq);
        self.stats.deliveries += 1;
        self.stats.latency.record(now.saturating_sub(t));
        self.stats.last_delivery = Some(Instant::now());
        if let Some(m) = self.stats.per_msg.get_mut(seq as usize) {
            m.0 += 1;
            m.1 = m.1.max(now);
        }
    }

    /// Handles body bytes; returns true when a long-poll response is complete.
    fn on_body(&mut self, i: usize, data: &[u8]) -> Result<bool, String> {
        let mut found = std::mem::take(&mut self.found);
        let bad = &mut self.stats.bad_lines;
        let s = &mut self.subs[i];
        let lines = &mut s.lines;
        let complete = match &mut s.framing {
            Framing::Chunked(dc) => {
                dc.feed(data, |d| lines.feed(d, |l| scan_line(l, &mut found, bad)))
                    .map_err(|e| format!("chunked: {e:?}"))?;
                dc.is_done()
            }
            Framing::Length(left) => {
                let n = (*left).min(data.len() as u64) as usize;
                lines.feed(&data[..n], |l| scan_line(l, &mut found, bad));
                *left -= n as u64;
                *left == 0
            }
            Framing::Close => {
                lines.feed(data, |l| scan_line(l, &mut found, bad));
                false
            }
        };
        if complete {
            lines.flush(|l| scan_line(l, &mut found, bad));
        }
        for (seq, t) in found.drain(..) {
            self.record(i, seq, t);
        }
        self.found = found;
        Ok(complete)
    }

    /// A long-poll response finished: poll again.
    fn repoll(&mut self, i: usize) {
        self.stats.polls += 1;
        if self.ending {
            return;
        }
        let s = &mut self.subs[i];
        if s.keep_alive && s.stream.is_some() {
            s.phase = Phase::Writing(0);
            s.head.clear();
            if let Some(st) = s.stream.as_mut() {
                let _ = self.poll.registry().reregister(
                    st,
                    Token(i),
                    Interest::READABLE | Interest::WRITABLE,
                );
            }
            self.try_write(i);
        } else {
            if let Some(mut st) = s.stream.take() {
                let _ = self.poll.registry().deregister(&mut st);
            }
            s.phase = Phase::Idle;
            self.reconnect.push_back(i);
        }
    }

    fn try_write(&mut self, i: usize) {
        let Phase::Writing(off) = self.subs[i].phase else {
            return;
        };
        let req = self.request(i);
        let s = &mut self.subs[i];
        let Some(st) = s.stream.as_mut() else { return };
        match st.write(&req[off..]) {
            Ok(n) if off + n == req.len() => {
                s.phase = Phase::Head;
                let _ = self
                    .poll
                    .registry()
                    .reregister(st, Token(i), Interest::READABLE);
                if self.args.mode == Mode::Longpoll {
                    self.mark_subscribed(i);
                }
            }
            Ok(n) => s.phase = Phase::Writing(off + n),
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
            Err(e) => self.fail(i, format!("write: {}", e.kind())),
        }
    }

    fn on_head(&mut self, i: usize) -> Result<usize, String> {
        let mut hbuf = [httparse::EMPTY_HEADER; 64];
        let mut resp = httparse::Response::new(&mut hbuf);
        let s = &mut self.subs[i];
        let used = match resp.parse(&s.head) {
            Ok(httparse::Status::Complete(n)) => n,
            Ok(httparse::Status::Partial) => {
                if s.head.len() > HEAD_MAX {
                    return Err("head too big".into());
                }
                return Ok(0);
            }
            Err(e) => return Err(format!("bad head: {e}")),
        };
        let code = resp.code.unwrap_or(0);
        let mode = self.args.mode;
        let ok = match mode {
            Mode::Ws => code == 101,
            Mode::Longpoll => code == 200 || code == 304,
            _ => code == 200,
        };
        if !ok {
            return Err(format!("status {code}"));
        }
        let te_chunked = header(resp.headers, "transfer-encoding")
            .is_some_and(|v| v.to_ascii_lowercase().contains("chunked"));
        let clen =
            header(resp.headers, "content-length").and_then(|v| v.trim().parse::<u64>().ok());
        s.keep_alive =
            !header(resp.headers, "connection").is_some_and(|v| v.eq_ignore_ascii_case("close"));
        if mode == Mode::Longpoll {
            if let Some(e) = header(resp.headers, "etag") {
                s.etag = Some(e.to_string());
            }
            if let Some(m) = header(resp.headers, "last-modified") {
                s.last_modified = Some(m.to_string());
            }
        }
        s.framing = if mode == Mode::Ws {
            Framing::Close
        } else if te_chunked {
            Framing::Chunked(Dechunker::new())
        } else if let Some(n) = clen {
            Framing::Length(n)
        } else if code == 304 {
            Framing::Length(0)
        } else {
            Framing::Close
        };
        s.phase = if mode == Mode::Ws {
            Phase::WsFrames
        } else {
            Phase::Body
        };
        if mode != Mode::Longpoll {
            self.mark_subscribed(i);
        }
        Ok(used)
    }

    /// Parses server-to-client WebSocket frames in the subscriber's buffer.
    fn on_ws(&mut self, i: usize, data: &[u8]) -> Result<(), String> {
        let s = &mut self.subs[i];
        s.ws_buf.extend_from_slice(data);
        let mut msgs: Vec<Vec<u8>> = Vec::new();
        let mut pos = 0;
        loop {
            let b = &s.ws_buf[pos..];
            if b.len() < 2 {
                break;
            }
            let opcode = b[0] & 0x0f;
            let masked = b[1] & 0x80 != 0;
            let (len, mut hdr) = match b[1] & 0x7f {
                126 if b.len() >= 4 => (u64::from(u16::from_be_bytes([b[2], b[3]])), 4),
                127 if b.len() >= 10 => {
                    let mut a = [0u8; 8];
                    a.copy_from_slice(&b[2..10]);
                    (u64::from_be_bytes(a), 10)
                }
                126 | 127 => break,
                n => (u64::from(n), 2),
            };
            if masked {
                hdr += 4;
            }
            if len > 1 << 20 {
                return Err("ws frame too big".into());
            }
            let total = hdr + len as usize;
            if b.len() < total {
                break;
            }
            if opcode == 8 {
                return Err("ws close".into());
            }
            if opcode == 1 || opcode == 2 || opcode == 0 {
                msgs.push(b[hdr..total].to_vec());
            }
            pos += total;
        }
        s.ws_buf.drain(..pos);
        for m in msgs {
            self.deliver(i, &m);
        }
        Ok(())
    }

    fn on_readable(&mut self, i: usize) {
        loop {
            let phase = self.subs[i].phase;
            if !matches!(phase, Phase::Head | Phase::Body | Phase::WsFrames) {
                return;
            }
            let Some(st) = self.subs[i].stream.as_mut() else {
                return;
            };
            let n = match st.read(&mut self.buf) {
                Ok(0) => {
                    // End of stream: completes a close-delimited long-poll body.
                    if self.args.mode == Mode::Longpoll
                        && phase == Phase::Body
                        && matches!(self.subs[i].framing, Framing::Close)
                    {
                        let mut lines = Vec::new();
                        self.subs[i].lines.flush(|l| lines.push(l.to_vec()));
                        for l in lines {
                            self.deliver(i, &l);
                        }
                        self.subs[i].keep_alive = false;
                        self.repoll(i);
                    } else if self.args.mode == Mode::Longpoll
                        && self.subs[i].subscribed
                        && phase == Phase::Head
                        && self.subs[i].head.is_empty()
                    {
                        // Keep-alive connection closed between polls: reconnect.
                        self.subs[i].keep_alive = false;
                        self.repoll(i);
                    } else {
                        self.fail(i, "eof".into());
                    }
                    return;
                }
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => {
                    self.fail(i, format!("read: {}", e.kind()));
                    return;
                }
            };
            let buf = std::mem::take(&mut self.buf);
            let res = self.process(i, &buf[..n]);
            self.buf = buf;
            if let Err(e) = res {
                self.fail(i, e);
                return;
            }
        }
    }

    fn process(&mut self, i: usize, mut data: &[u8]) -> Result<(), String> {
        while !data.is_empty() {
            match self.subs[i].phase {
                Phase::Head => {
                    let before = self.subs[i].head.len();
                    self.subs[i].head.extend_from_slice(data);
                    let used = self.on_head(i)?;
                    if used == 0 {
                        return Ok(());
                    }
                    let rest = &data[used - before..];
                    self.subs[i].head.clear();
                    data = rest;
                    if self.args.mode == Mode::Longpoll
                        && matches!(self.subs[i].framing, Framing::Length(0))
                    {
                        self.repoll(i);
                    }
                }
                Phase::Body => {
                    let consumed_all = match &self.subs[i].framing {
                        Framing::Length(n) => (*n as usize) >= data.len(),
                        _ => true,
                    };
                    let take = match &self.subs[i].framing {
                        Framing::Length(n) => (*n as usize).min(data.len()),
                        _ => data.len(),
                    };
                    let complete = self.on_body(i, &data[..take])?;
                    data = if consumed_all { &[] } else { &data[take..] };
                    if complete {
                        if self.args.mode == Mode::Longpoll {
                            self.repoll(i);
                        } else {
                            return Err("stream ended".into());
                        }
                    }
                }
                Phase::WsFrames => {
                    self.on_ws(i, data)?;
                    return Ok(());
                }
                _ => return Ok(()),
            }
        }
        Ok(())
    }

    fn on_writable(&mut self, i: usize) {
        if self.subs[i].phase == Phase::Connecting {
            let Some(st) = self.subs[i].stream.as_ref() else {
                return;
            };
            match st.take_error() {
                Ok(Some(e)) | Err(e) => {
                    self.fail(i, format!("connect: {}", e.kind()));
                    return;
                }
                Ok(None) => {}
            }
            match st.peer_addr() {
                Ok(_) => self.subs[i].phase = Phase::Writing(0),
                Err(e) if e.kind() == io::ErrorKind::NotConnected => return,
                Err(e) => {
                    self.fail(i, format!("connect: {}", e.kind()));
                    return;
                }
            }
        }
        self.try_write(i);
    }

    /// Starts new connections within the rate and in-flight bounds.
    fn start_more(&mut self, t0: Instant) {
        while let Some(i) = self.reconnect.pop_front() {
            if let Err(e) = self.connect(i) {
                self.subs[i].phase = Phase::Closed;
                self.fail(i, format!("reconnect: {}", e.kind()));
            }
        }
        let n = self.args.subscribers;
        let allowed = ((t0.elapsed().as_secs_f64() * self.args.connect_rate) as usize + 1).min(n);
        while self.stats.started < allowed && self.stats.inflight < self.args.inflight {
            let i = self.stats.started;
            self.stats.started += 1;
            self.stats.inflight += 1;
            self.stats.first_connect.get_or_insert_with(Instant::now);
            if let Err(e) = self.connect(i) {
                self.fail(i, format!("connect: {}", e.kind()));
            }
        }
    }

    fn turn(&mut self, events: &mut Events, timeout: Duration) {
        if let Err(e) = self.poll.poll(events, Some(timeout)) {
            if e.kind() != io::ErrorKind::Interrupted {
                eprintln!("loadgen: poll: {e}");
            }
            return;
        }
        let ready: Vec<(usize, bool, bool)> = events
            .iter()
            .map(|e| {
                (
                    e.token().0,
                    e.is_readable() || e.is_read_closed() || e.is_error(),
                    e.is_writable(),
                )
            })
            .collect();
        for (i, r, w) in ready {
            if i >= self.subs.len() {
                continue;
            }
            if w {
                self.on_writable(i);
            }
            if r {
                if self.subs[i].phase == Phase::Connecting {
                    self.on_writable(i);
                }
                self.on_readable(i);
            }
        }
    }

    fn all_received(&self) -> bool {
        let m = self.args.messages;
        self.subs
            .iter()
            .filter(|s| s.subscribed && !s.closed_early)
            .all(|s| s.seqs.received >= m)
    }
}

// ------------------------------------------------------------------------------------ main

fn main() {
    let args = Args::parse();
    if let Err(e) = run(args) {
        eprintln!("loadgen: error: {e}");
        std::process::exit(1);
    }
}

fn run(args: Args) -> Result<(), String> {
    if args.publish == PublishApi::Nchan && (args.ids || args.out_of_order > 1) {
        return Err("--ids/--out-of-order need a GRIP publish API (tack or pushpin)".into());
    }
    if args.out_of_order > 1 && !args.ids {
        return Err("--out-of-order needs --ids (without ids nothing can reorder)".into());
    }
    let nofile = raise_nofile();
    if args.subscribers + 64 > nofile as usize {
        return Err(format!(
            "{} subscribers need more than the open-file limit {nofile}",
            args.subscribers
        ));
    }
    let metrics = args
        .metrics
        .as_deref()
        .map(parse_metrics_addr)
        .transpose()?;
    let start = Instant::now();
    let channels: Vec<String> = (0..args.channels.max(1))
        .map(|j| format!("{}{j}", args.channel_prefix))
        .collect();
    let pids = target_pids(&args);
    let mem_before = mem_kib(&pids);
    let self_cpu0 = self_cpu_us();

    let poll = Poll::new().map_err(|e| format!("poll: {e}"))?;
    let subs = (0..args.subscribers)
        .map(|_| Sub {
            stream: None,
            phase: Phase::Idle,
            head: Vec::new(),
            framing: Framing::Close,
            lines: LineSplitter::default(),
            seqs: SeqTracker::new(args.messages),
            subscribed: false,
            closed_early: false,
            failed: false,
            keep_alive: true,
            etag: None,
            last_modified: None,
            ws_buf: Vec::new(),
        })
        .collect();
    let mut lp = Loop {
        args: args.clone(),
        channels: channels.clone(),
        subs,
        poll,
        stats: LoopStats {
            per_msg: vec![(0, 0); args.messages as usize],
            ..LoopStats::default()
        },
        start,
        publishing: false,
        ending: false,
        reconnect: VecDeque::new(),
        buf: vec![0; 64 * 1024],
        found: Vec::new(),
    };
    let mut events = Events::with_capacity(1024);

    // Subscribe phase.
    let t_sub = Instant::now();
    let sub_deadline = t_sub + Duration::from_secs(args.subscribe_timeout_s);
    let mut last_metrics = Instant::now() - Duration::from_secs(1);
    let mut holds_seen: Option<u64> = None;
    let mut settled_at: Option<Instant> = None;
    loop {
        lp.start_more(t_sub);
        lp.turn(&mut events, Duration::from_millis(5));
        let done = lp.stats.subscribed + lp.stats.failed >= args.subscribers;
        if Instant::now() > sub_deadline {
            eprintln!(
                "loadgen: subscribe phase timed out: {} subscribed, {} failed of {}",
                lp.stats.subscribed, lp.stats.failed, args.subscribers
            );
            break;
        }
        if !done {
            continue;
        }
        if let Some(m) = metrics {
            if holds_seen
                .is_none_or(|h| h < lp.stats.subscribed as u64 - lp.stats.closed_early as u64)
            {
                if last_metrics.elapsed() >= Duration::from_millis(100) {
                    last_metrics = Instant::now();
                    holds_seen = holds_active(m);
                }
                continue;
            }
        }
        let at = *settled_at.get_or_insert_with(Instant::now);
        if at.elapsed() >= Duration::from_millis(args.settle_ms) {
            break;
        }
    }
    let subscribe_s = match (lp.stats.first_connect, lp.stats.last_subscribed) {
        (Some(a), Some(b)) => b.duration_since(a).as_secs_f64(),
        _ => 0.0,
    };
    let pids = target_pids(&args);
    let mem_after = mem_kib(&pids);
    let subscribed = lp.stats.subscribed;

    // Publish phase.
    let shared = Arc::new(PubShared {
        sent: (0..args.messages).map(|_| AtomicU64::new(0)).collect(),
        done: AtomicBool::new(false),
    });
    let cpu0 = cpu_us(&pids);
    let self_pub0 = self_cpu_us();
    let t_pub = Instant::now();
    lp.publishing = true;
    let publisher = {
        let (a, c, s) = (args.clone(), channels.clone(), Arc::clone(&shared));
        std::thread::Builder::new()
            .name("publisher".into())
            .spawn(move || run_publisher(a, c, start, s))
            .map_err(|e| format!("spawn publisher: {e}"))?
    };
    let mut pub_done_at: Option<Instant> = None;
    loop {
        lp.start_more(t_sub);
        lp.turn(&mut events, Duration::from_millis(5));
        if pub_done_at.is_none() && shared.done.load(Ordering::Acquire) {
            pub_done_at = Some(Instant::now());
        }
        if let Some(d) = pub_done_at {
            let idle = lp
                .stats
                .last_delivery
                .map_or(d.elapsed(), |l| l.max(d).elapsed());
            if (args.mode != Mode::Longpoll && lp.all_received())
                || idle >= Duration::from_millis(args.idle_ms)
                || d.elapsed() >= Duration::from_secs(args.drain_timeout_s)
            {
                break;
            }
        }
        if t_pub.elapsed() > Duration::from_secs(args.drain_timeout_s + 600) {
            break;
        }
    }
    lp.ending = true;
    let cpu1 = cpu_us(&pids);
    let self_pub1 = self_cpu_us();
    let pubrep = publisher
        .join()
        .map_err(|_| "publisher panicked".to_string())?;
    let self_cpu1 = self_cpu_us();

    // Report.
    let st = &lp.stats;
    let m = args.messages;
    let live: Vec<&Sub> = lp.subs.iter().filter(|s| s.subscribed).collect();
    let missed: u64 = live.iter().map(|s| u64::from(s.seqs.missed_in(0, m))).sum();
    let subs_missing = live.iter().filter(|s| s.seqs.missed_in(0, m) > 0).count();
    let dups: u64 = live.iter().map(|s| u64::from(s.seqs.duplicates)).sum();
    let reord: u64 = live.iter().map(|s| u64::from(s.seqs.reordered)).sum();
    let mut completion = Histogram::new();
    let mut complete_msgs = 0u64;
    for (seq, (count, last)) in st.per_msg.iter().enumerate() {
        let sent = shared.sent[seq].load(Ordering::Relaxed);
        if *count > 0 && sent > 0 {
            completion.record(last.saturating_sub(sent - 1));
        }
        if *count > 0 && *count >= live.len() as u64 {
            complete_msgs += 1;
        }
    }
    let first_send = pubrep.first_send_us;
    let last_recv = st.per_msg.iter().map(|x| x.1).max().unwrap_or(0);
    let fanout_s = last_recv.saturating_sub(first_send) as f64 / 1e6;
    let deliveries_per_s = if fanout_s > 0.0 {
        st.deliveries as f64 / fanout_s
    } else {
        0.0
    };
    let n_div = subscribed.max(1) as f64;
    let rss_per = (mem_after.0 as f64 - mem_before.0 as f64) * 1024.0 / n_div;
    let pss_per = (mem_after.1 as f64 - mem_before.1 as f64) * 1024.0 / n_div;
    let cpu_pub = cpu1.saturating_sub(cpu0);
    let cpu_per_delivery = if st.deliveries > 0 {
        cpu_pub as f64 / st.deliveries as f64
    } else {
        0.0
    };
    let loadavg = std::fs::read_to_string("/proc/loadavg")
        .ok()
        .map(|s| s.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_default();
    let subscribe_rate = if subscribe_s > 0.0 {
        subscribed as f64 / subscribe_s
    } else {
        0.0
    };

    println!(
        "loadgen {} mode={:?} subscribers={} channels={} messages={} rate={} publish={:?} ids={} out_of_order={} duplicate_every={}",
        args.label,
        args.mode,
        args.subscribers,
        channels.len(),
        m,
        if args.rate > 0.0 {
            format!("{}/s", args.rate)
        } else {
            "burst".into()
        },
        args.publish,
        args.ids,
        args.out_of_order,
        args.duplicate_every
    );
    println!("  subscribed            {subscribed} ({} failed) in {subscribe_s:.2} s = {subscribe_rate:.0}/s", st.failed);
    for (k, v) in &st.fail_reasons {
        println!("    {v:>7} × {k}");
    }
    println!("  target pids           {pids:?}");
    println!(
        "  memory/conn           RSS {:.0} B, PSS {:.0} B  (RSS {} → {} KiB, PSS {} → {} KiB)",
        rss_per, pss_per, mem_before.0, mem_after.0, mem_before.1, mem_after.1
    );
    println!(
        "  publish               {} posts, {} errors, statuses {:?}, post rtt p50 {} µs p99 {} µs{}",
        pubrep.posts,
        pubrep.errors,
        pubrep.statuses,
        pubrep.rtt.quantile(0.5),
        pubrep.rtt.quantile(0.99),
        pubrep.last_error.as_deref().map(|e| format!(", last error: {e}")).unwrap_or_default()
    );
    println!(
        "  deliveries            {} of {} expected, {:.0}/s over {:.3} s",
        st.deliveries,
        subscribed as u64 * u64::from(m),
        deliveries_per_s,
        fanout_s
    );
    println!(
        "  latency µs            p50 {} p99 {} max {}",
        st.latency.quantile(0.5),
        st.latency.quantile(0.99),
        st.latency.max()
    );
    println!(
        "  completion µs         p50 {} p99 {} max {}  ({complete_msgs} of {m} messages reached every subscriber)",
        completion.quantile(0.5),
        completion.quantile(0.99),
        completion.max()
    );
    println!(
        "  loss                  missed {missed} (subscribers missing any: {subs_missing}), duplicates {dups}, reordered {reord}, closed early {}",
        st.closed_early
    );
    if args.mode == Mode::Longpoll {
        println!("  long-poll responses   {}", st.polls);
    }
    println!(
        "  target CPU            {} µs over the publish phase = {:.2} µs/delivery",
        cpu_pub, cpu_per_delivery
    );
    println!(
        "  loadgen CPU           {:.2} s total, {:.2} s in the publish phase; loadavg {loadavg}",
        (self_cpu1 - self_cpu0) as f64 / 1e6,
        (self_pub1 - self_pub0) as f64 / 1e6
    );
    if args.json {
        let j = serde_json::json!({
            "label": args.label,
            "mode": format!("{:?}", args.mode).to_lowercase(),
            "subscribers": args.subscribers,
            "channels": channels.len(),
            "messages": m,
            "rate": args.rate,
            "ids": args.ids,
            "out_of_order": args.out_of_order,
            "duplicate_every": args.duplicate_every,
            "subscribed": subscribed,
            "subscribe_failed": st.failed,
            "subscribe_s": subscribe_s,
            "subscribe_rate": subscribe_rate,
            "rss_per_conn_b": rss_per.round(),
            "pss_per_conn_b": pss_per.round(),
            "rss_kib_before": mem_before.0,
            "rss_kib_after": mem_after.0,
            "publish_posts": pubrep.posts,
            "publish_errors": pubrep.errors,
            "publish_rtt_p50_us": pubrep.rtt.quantile(0.5),
            "publish_rtt_p99_us": pubrep.rtt.quantile(0.99),
            "publish_s": pubrep.last_ack_us.saturating_sub(pubrep.first_send_us) as f64 / 1e6,
            "deliveries": st.deliveries,
            "expected_deliveries": subscribed as u64 * u64::from(m),
            "deliveries_per_s": deliveries_per_s.round(),
            "latency_p50_us": st.latency.quantile(0.5),
            "latency_p99_us": st.latency.quantile(0.99),
            "latency_max_us": st.latency.max(),
            "completion_p50_us": completion.quantile(0.5),
            "completion_p99_us": completion.quantile(0.99),
            "complete_messages": complete_msgs,
            "missed": missed,
            "subscribers_missing": subs_missing,
            "duplicates": dups,
            "reordered": reord,
            "closed_early": st.closed_early,
            "polls": st.polls,
            "bad_lines": st.bad_lines,
            "target_cpu_us": cpu_pub,
            "cpu_us_per_delivery": (cpu_per_delivery * 100.0).round() / 100.0,
            "loadgen_cpu_s": (self_cpu1 - self_cpu0) as f64 / 1e6,
            "loadgen_pub_cpu_s": (self_pub1 - self_pub0) as f64 / 1e6,
            "loadavg": loadavg,
        });
        println!("{j}");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::publish_order;

    #[test]
    fn publish_order_reverses_windows_after_the_first_and_repeats_every_kth() {
        assert_eq!(publish_order(6, 0, 0), vec![0, 1, 2, 3, 4, 5]);
        assert_eq!(publish_order(8, 3, 0), vec![0, 3, 2, 1, 6, 5, 4, 7]);
        assert_eq!(publish_order(5, 1, 2), vec![0, 1, 1, 2, 3, 3, 4]);
        assert_eq!(publish_order(5, 2, 3), vec![0, 2, 2, 1, 4, 3]);
        assert!(publish_order(0, 4, 2).is_empty());
    }
}
