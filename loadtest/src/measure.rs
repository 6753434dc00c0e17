//! Pure building blocks of the `loadgen` fan-out load generator: a log-bucket latency
//! histogram, per-subscriber sequence tracking (missed / duplicated / reordered), an incremental
//! chunked-body decoder, the message line format, and parsers for `/proc` and Prometheus text.
//!
//! Nothing here does I/O or reads a clock: callers pass bytes and times in.

/// Sub-bucket bits of [`Histogram`]: 32 buckets per power of two (relative error ≤ 1/32).
const SUB_BITS: u32 = 5;
/// Number of buckets covering every `u64`.
const BUCKETS: usize = (((63 - SUB_BITS as usize) + 1) << SUB_BITS) + (1 << SUB_BITS);

/// A log-linear histogram of `u64` values (exact below 64, then 32 buckets per power of two).
#[derive(Clone, Debug)]
pub struct Histogram {
    counts: Vec<u64>,
    total: u64,
    min: u64,
    max: u64,
    sum: u128,
}

impl Default for Histogram {
    fn default() -> Self {
        Histogram::new()
    }
}

/// The bucket index of `v`.
fn bucket_of(v: u64) -> usize {
    if v < (2 << SUB_BITS) {
        return v as usize;
    }
    let e = 63 - v.leading_zeros();
    let k = e - SUB_BITS;
    (((k as usize) << SUB_BITS) + (v >> k) as usize).min(BUCKETS - 1)
}

/// The smallest and largest value of bucket `idx`.
fn bucket_bounds(idx: usize) -> (u64, u64) {
    if idx < (2 << SUB_BITS) {
        return (idx as u64, idx as u64);
    }
    let k = (idx >> SUB_BITS) - 1;
    let m = (idx - (k << SUB_BITS)) as u64;
    let lo = m << k;
    let hi = lo.saturating_add((1u64 << k) - 1);
    (lo, hi)
}

impl Histogram {
    /// An empty histogram.
    pub fn new() -> Histogram {
        Histogram {
            counts: vec![0; BUCKETS],
            total: 0,
            min: u64::MAX,
            max: 0,
            sum: 0,
        }
    }

    /// Adds one value.
    pub fn record(&mut self, v: u64) {
        self.counts[bucket_of(v)] += 1;
        self.total += 1;
        self.min = self.min.min(v);
        self.max = self.max.max(v);
        self.sum += u128::from(v);
    }

    /// Adds every value of `other`.
    pub fn merge(&mut self, other: &Histogram) {
        for (a, b) in self.counts.iter_mut().zip(&other.counts) {
            *a += b;
        }
        self.total += other.total;
        self.min = self.min.min(other.min);
        self.max = self.max.max(other.max);
        self.sum += other.sum;
    }

    /// Values recorded.
    pub fn count(&self) -> u64 {
        self.total
    }

    /// Largest value recorded (0 when empty).
    pub fn max(&self) -> u64 {
        self.max
    }

    /// Smallest value recorded (0 when empty).
    pub fn min(&self) -> u64 {
        if self.total == 0 {
            0
        } else {
            self.min
        }
    }

    /// Mean of the values (0 when empty).
    pub fn mean(&self) -> f64 {
        if self.total == 0 {
            0.0
        } else {
            self.sum as f64 / self.total as f64
        }
    }

    /// The value at quantile `q` (0..=1): the upper bound of the bucket holding it, clamped to
    /// the recorded range, so it never understates. 0 when empty.
    pub fn quantile(&self, q: f64) -> u64 {
        if self.total == 0 {
            return 0;
        }
        let rank = ((q.clamp(0.0, 1.0) * self.total as f64).ceil() as u64).max(1);
        let mut seen = 0;
        for (i, c) in self.counts.iter().enumerate() {
            seen += c;
            if seen >= rank {
                return bucket_bounds(i).1.clamp(self.min, self.max);
            }
        }
        self.max
    }
}

/// What one received sequence number was, for a [`SeqTracker`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SeqOutcome {
    /// First time seen, and above every sequence seen before.
    InOrder,
    /// First time seen, but below one seen before.
    Reordered,
    /// Seen before.
    Duplicate,
    /// Outside `0..capacity`: not a sequence this run published.
    OutOfRange,
}

/// Tracks which sequence numbers `0..capacity` one subscriber received.
#[derive(Clone, Debug)]
pub struct SeqTracker {
    seen: Vec<u64>,
    capacity: u32,
    /// Distinct sequences received.
    pub received: u32,
    /// Deliveries of an already-received sequence.
    pub duplicates: u32,
    /// First deliveries that came after a higher sequence.
    pub reordered: u32,
    /// Sequences outside the published range.
    pub out_of_range: u32,
    highest: Option<u32>,
}

impl SeqTracker {
    /// A tracker for sequences `0..capacity`.
    pub fn new(capacity: u32) -> SeqTracker {
        SeqTracker {
            seen: vec![0; (capacity as usize).div_ceil(64)],
            capacity,
            received: 0,
            duplicates: 0,
            reordered: 0,
            out_of_range: 0,
            highest: None,
        }
    }

    /// Records one delivery of `seq`.
    pub fn observe(&mut self, seq: u64) -> SeqOutcome {
        if seq >= u64::from(self.capacity) {
            self.out_of_range += 1;
            return SeqOutcome::OutOfRange;
        }
        let s = seq as u32;
        let (w, b) = ((s / 64) as usize, s % 64);
        if self.seen[w] & (1 << b) != 0 {
            self.duplicates += 1;
            return SeqOutcome::Duplicate;
        }
        self.seen[w] |= 1 << b;
        self.received += 1;
        match self.highest {
            Some(h) if h > s => {
                self.reordered += 1;
                SeqOutcome::Reordered
            }
            _ => {
                self.highest = Some(s);
                SeqOutcome::InOrder
            }
        }
    }

    /// Whether `seq` was received.
    pub fn has(&self, seq: u32) -> bool {
        seq < self.capacity && self.seen[(seq / 64) as usize] & (1 << (seq % 64)) != 0
    }

    /// Sequences in `from..to` never received.
    pub fn missed_in(&self, from: u32, to: u32) -> u32 {
        (from..to.min(self.capacity))
            .filter(|&s| !self.has(s))
            .count() as u32
    }
}

/// Errors of [`Dechunker`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ChunkError {
    /// A chunk-size line that is not hex, or too long.
    BadSize,
    /// Chunk data not followed by CRLF.
    BadTerminator,
}

/// Where a [`Dechunker`] is in the body.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum ChunkState {
    /// Reading a size line; `size` so far, `in_ext` after `;`, `digits` read, `cr` seen.
    Size {
        size: u64,
        digits: u8,
        in_ext: bool,
        cr: bool,
    },
    /// `left` data bytes of the current chunk remain.
    Data { left: u64 },
    /// Expecting the CRLF after chunk data (`cr` seen).
    DataEnd { cr: bool },
    /// In the trailer section; `line_len` bytes on this line, `cr` seen.
    Trailer { line_len: u32, cr: bool },
    /// The last chunk and trailers are done.
    Done,
}

/// Incremental decoder of an HTTP/1.1 chunked body: feed bytes as they arrive, get data slices.
#[derive(Clone, Debug)]
pub struct Dechunker {
    state: ChunkState,
}

impl Default for Dechunker {
    fn default() -> Self {
        Dechunker::new()
    }
}

const SIZE_START: ChunkState = ChunkState::Size {
    size: 0,
    digits: 0,
    in_ext: false,
    cr: false,
};

impl Dechunker {
    /// A decoder at the start of a body.
    pub fn new() -> Dechunker {
        Dechunker { state: SIZE_START }
    }

    /// Whether the terminating chunk and trailers have been read.
    pub fn is_done(&self) -> bool {
        self.state == ChunkState::Done
    }

    /// Decodes `input`, passing each data slice to `out`. Returns the bytes consumed (less than
    /// `input.len()` only once the body is done).
    pub fn feed(&mut self, input: &[u8], mut out: impl FnMut(&[u8])) -> Result<usize, ChunkError> {
        let mut i = 0;
        while i < input.len() {
            match &mut self.state {
                ChunkState::Done => return Ok(i),
                ChunkState::Data { left } => {
                    let n = (*left).min((input.len() - i) as u64) as usize;
                    out(&input[i..i + n]);
                    i += n;
                    *left -= n as u64;
                    if *left == 0 {
                        self.state = ChunkState::DataEnd { cr: false };
                    }
                }
                ChunkState::DataEnd { cr } => {
                    let c = input[i];
                    i += 1;
                    match (c, *cr) {
                        (b'\r', false) => *cr = true,
                        (b'\n', true) => self.state = SIZE_START,
                        _ => return Err(ChunkError::BadTerminator),
                    }
                }
                ChunkState::Size {
                    size,
                    digits,
                    in_ext,
                    cr,
                } => {
                    let c = input[i];
                    i += 1;
                    if *cr {
                        if c != b'\n' || *digits == 0 {
                            return Err(ChunkError::BadSize);
                        }
                        self.state = if *size == 0 {
                            ChunkState::Trailer {
                                line_len: 0,
                                cr: false,
                            }
                        } else {
                            ChunkState::Data { left: *size }
                        };
                    } else if c == b'\r' {
                        *cr = true;
                    } else if *in_ext {
                        // Extensions are skipped.
                    } else if c == b';' {
                        *in_ext = true;
                    } else if let Some(d) = (c as char).to_digit(16) {
                        if *digits >= 15 {
                            return Err(ChunkError::BadSize);
                        }
                        *size = *size * 16 + u64::from(d);
                        *digits += 1;
                    } else if c != b' ' && c != b'\t' {
                        return Err(ChunkError::BadSize);
                    }
                }
                ChunkState::Trailer { line_len, cr } => {
                    let c = input[i];
                    i += 1;
                    if c == b'\r' {
                        *cr = true;
                    } else if c == b'\n' && *cr {
                        if *line_len == 0 {
                            self.state = ChunkState::Done;
                        } else {
                            *line_len = 0;
                            *cr = false;
                        }
                    } else {
                        *line_len = line_len.saturating_add(1);
                        *cr = false;
                    }
                }
            }
        }
        Ok(i)
    }
}

/// Longest message line kept while waiting for its end; longer lines are dropped.
pub const LINE_MAX: usize = 512;

/// Splits a byte stream into `\n`-terminated lines, bounded by [`LINE_MAX`].
#[derive(Clone, Debug, Default)]
pub struct LineSplitter {
    partial: Vec<u8>,
    overflow: bool,
}

impl LineSplitter {
    /// Feeds bytes; calls `line` with each complete line (without its `\n`).
    pub fn feed(&mut self, mut input: &[u8], mut line: impl FnMut(&[u8])) {
        while let Some(pos) = input.iter().position(|&b| b == b'\n') {
            if self.partial.is_empty() && !self.overflow {
                line(&input[..pos]);
            } else {
                if !self.overflow && self.partial.len() + pos <= LINE_MAX {
                    self.partial.extend_from_slice(&input[..pos]);
                    line(&self.partial);
                }
                self.partial.clear();
                self.overflow = false;
            }
            input = &input[pos + 1..];
        }
        if !input.is_empty() && !self.overflow {
            if self.partial.len() + input.len() > LINE_MAX {
                self.partial.clear();
                self.overflow = true;
            } else {
                self.partial.extend_from_slice(input);
            }
        }
    }

    /// Passes the unterminated rest (if any) to `line` and clears it: for bodies that end.
    pub fn flush(&mut self, mut line: impl FnMut(&[u8])) {
        if !self.partial.is_empty() && !self.overflow {
            line(&self.partial);
        }
        self.partial.clear();
        self.overflow = false;
    }
}

/// The message content the publisher sends: `seq=SEQ t=MICROS\n`.
pub fn message_line(seq: u64, t_us: u64) -> String {
    format!("seq={seq} t={t_us}\n")
}

/// Parses `seq=SEQ t=MICROS` anywhere in a line (so `data: seq=…` of SSE works too).
pub fn parse_message(line: &[u8]) -> Option<(u64, u64)> {
    let at = line.windows(4).position(|w| w == b"seq=")?;
    let rest = &line[at + 4..];
    let (seq, rest) = take_number(rest)?;
    let rest = rest.strip_prefix(b" t=")?;
    let (t, _) = take_number(rest)?;
    Some((seq, t))
}

fn take_number(s: &[u8]) -> Option<(u64, &[u8])> {
    let n = s.iter().take_while(|b| b.is_ascii_digit()).count();
    if n == 0 || n > 19 {
        return None;
    }
    let v = std::str::from_utf8(&s[..n]).ok()?.parse().ok()?;
    Some((v, &s[n..]))
}

/// `Rss:` and `Pss:` (KiB) of a `/proc/PID/smaps_rollup` text.
pub fn parse_smaps_rollup(text: &str) -> Option<(u64, u64)> {
    let field = |name: &str| {
        text.lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|v| v.split_whitespace().next())
            .and_then(|v| v.parse::<u64>().ok())
    };
    Some((field("Rss:")?, field("Pss:")?))
}

/// Fields of a `/proc/PID/stat` line that the load generator uses.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ProcStat {
    /// Parent pid (field 4).
    pub ppid: u32,
    /// User-mode clock ticks (field 14).
    pub utime: u64,
    /// Kernel-mode clock ticks (field 15).
    pub stime: u64,
}

/// Parses a `/proc/PID/stat` line (the command name may hold spaces and parentheses).
pub fn parse_proc_stat(text: &str) -> Option<ProcStat> {
    let after = &text[text.rfind(')')? + 1..];
    let f: Vec<&str> = after.split_whitespace().collect();
    // f[0] is field 3 (state); field n is f[n - 3].
    Some(ProcStat {
        ppid: f.get(1)?.parse().ok()?,
        utime: f.get(11)?.parse().ok()?,
        stime: f.get(12)?.parse().ok()?,
    })
}

/// The value of an unlabelled Prometheus sample `name` in an exposition text.
pub fn parse_metric(text: &str, name: &str) -> Option<f64> {
    text.lines().find_map(|l| {
        let rest = l.strip_prefix(name)?.strip_prefix(' ')?;
        rest.split_whitespace().next()?.parse().ok()
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn histogram_buckets_are_contiguous_and_bounded() {
        let mut prev_hi = None;
        for idx in 0..BUCKETS - 1 {
            let (lo, hi) = bucket_bounds(idx);
            if let Some(p) = prev_hi {
                assert_eq!(lo, p + 1, "bucket {idx}");
            }
            assert_eq!(bucket_of(lo), idx);
            assert_eq!(bucket_of(hi), idx);
            prev_hi = Some(hi);
        }
        assert_eq!(bucket_of(u64::MAX), BUCKETS - 1);
        assert_eq!(bucket_of(63), 63);
        assert_eq!(bucket_of(64), 64);
        assert_eq!(bucket_bounds(64), (64, 65));
    }

    #[test]
    fn histogram_quantiles() {
        let mut h = Histogram::new();
        for v in 1..=1000 {
            h.record(v);
        }
        assert_eq!(h.count(), 1000);
        assert_eq!(h.min(), 1);
        assert_eq!(h.max(), 1000);
        assert_eq!(h.quantile(0.0), 1);
        assert_eq!(h.quantile(1.0), 1000);
        // 500 lies in [496, 511] (16-wide buckets between 512 and 1023 are 32 wide).
        assert_eq!(h.quantile(0.5), 503);
        let p99 = h.quantile(0.99);
        assert!((990..=1000).contains(&p99), "{p99}");
        assert!((h.mean() - 500.5).abs() < 1e-9);
        let mut g = Histogram::new();
        g.record(5000);
        g.merge(&h);
        assert_eq!(g.count(), 1001);
        assert_eq!(g.max(), 5000);
        assert_eq!(Histogram::new().quantile(0.5), 0);
    }

    #[test]
    fn seq_tracker_counts_missed_dup_reorder() {
        let mut t = SeqTracker::new(100);
        assert_eq!(t.observe(0), SeqOutcome::InOrder);
        assert_eq!(t.observe(1), SeqOutcome::InOrder);
        assert_eq!(t.observe(3), SeqOutcome::InOrder);
        assert_eq!(t.observe(2), SeqOutcome::Reordered);
        assert_eq!(t.observe(3), SeqOutcome::Duplicate);
        assert_eq!(t.observe(99), SeqOutcome::InOrder);
        assert_eq!(t.observe(100), SeqOutcome::OutOfRange);
        assert_eq!(t.received, 5);
        assert_eq!(t.duplicates, 1);
        assert_eq!(t.reordered, 1);
        assert_eq!(t.out_of_range, 1);
        assert_eq!(t.missed_in(0, 100), 95);
        assert_eq!(t.missed_in(0, 4), 0);
        assert_eq!(t.missed_in(4, 99), 95);
        assert!(t.has(99) && !t.has(98) && !t.has(100));
    }

    #[test]
    fn dechunker_decodes_split_input() {
        let body =
            b"5;ext=1\r\nhello\r\n1A\r\nabcdefghijklmnopqrstuvwxyz\r\n0\r\nX-T: 1\r\n\r\nNEXT";
        for split in 0..body.len() {
            let mut d = Dechunker::new();
            let mut out = Vec::new();
            let a = d
                .feed(&body[..split], |s| out.extend_from_slice(s))
                .unwrap();
            assert!(a == split || d.is_done());
            let b = d.feed(&body[a..], |s| out.extend_from_slice(s)).unwrap();
            assert_eq!(out, b"helloabcdefghijklmnopqrstuvwxyz");
            assert!(d.is_done());
            assert_eq!(&body[a + b..], b"NEXT", "split {split}");
        }
    }

    #[test]
    fn dechunker_rejects_garbage() {
        let mut d = Dechunker::new();
        assert_eq!(d.feed(b"zz\r\n", |_| {}), Err(ChunkError::BadSize));
        let mut d = Dechunker::new();
        assert_eq!(d.feed(b"2\r\nabX", |_| {}), Err(ChunkError::BadTerminator));
        let mut d = Dechunker::new();
        assert_eq!(d.feed(b"\r\n", |_| {}), Err(ChunkError::BadSize));
        let mut d = Dechunker::new();
        assert_eq!(
            d.feed(b"1000000000000000\r\n", |_| {}),
            Err(ChunkError::BadSize)
        );
    }

    #[test]
    fn line_splitter_joins_and_bounds() {
        let mut s = LineSplitter::default();
        let mut lines: Vec<Vec<u8>> = Vec::new();
        s.feed(b"seq=1 t=2\nse", |l| lines.push(l.to_vec()));
        s.feed(b"q=2 t=3", |l| lines.push(l.to_vec()));
        s.feed(b"\n\n", |l| lines.push(l.to_vec()));
        assert_eq!(
            lines,
            vec![b"seq=1 t=2".to_vec(), b"seq=2 t=3".to_vec(), vec![]]
        );
        lines.clear();
        s.feed(&[b'x'; LINE_MAX + 1], |l| lines.push(l.to_vec()));
        s.feed(b"yy\nok\ntail", |l| lines.push(l.to_vec()));
        assert_eq!(lines, vec![b"ok".to_vec()]);
        s.flush(|l| lines.push(l.to_vec()));
        assert_eq!(lines, vec![b"ok".to_vec(), b"tail".to_vec()]);
    }

    #[test]
    fn message_format_round_trips() {
        let line = message_line(17, 1_732_500_000_123_456);
        assert_eq!(line, "seq=17 t=1732500000123456\n");
        assert_eq!(
            parse_message(line.trim_end().as_bytes()),
            Some((17, 1_732_500_000_123_456))
        );
        assert_eq!(parse_message(b"data: seq=3 t=9"), Some((3, 9)));
        assert_eq!(parse_message(b"seq=3"), None);
        assert_eq!(parse_message(b"seq= t=1"), None);
        assert_eq!(parse_message(b"id: 5"), None);
    }

    #[test]
    fn proc_parsers() {
        let smaps = "55d0-7ffd ---p 00000000 00:00 0    [rollup]\nRss:               12345 kB\nPss:                6789 kB\nPss_Anon:           100 kB\n";
        assert_eq!(parse_smaps_rollup(smaps), Some((12345, 6789)));
        assert_eq!(parse_smaps_rollup("Rss: 1 kB\n"), None);
        let stat =
            "4242 (my (odd) proc) S 17 4242 4242 0 -1 4194560 100 0 0 0 321 654 0 0 20 0 3 0 1 2 3";
        assert_eq!(
            parse_proc_stat(stat),
            Some(ProcStat {
                ppid: 17,
                utime: 321,
                stime: 654
            })
        );
        assert_eq!(parse_proc_stat("1 (x) S"), None);
    }

    #[test]
    fn metric_parser_takes_the_unlabelled_sample() {
        let text = "# HELP tack_holds_active x\ntack_holds_active{shard=\"0\"} 3\ntack_holds_active 7\ntack_holds_active_total 9\n";
        assert_eq!(parse_metric(text, "tack_holds_active"), Some(7.0));
        assert_eq!(parse_metric(text, "nope"), None);
    }
}
