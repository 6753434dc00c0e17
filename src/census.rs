//! Development aid (feature `alloc-census`, off by default): a global allocator wrapper that
//! counts live heap blocks by requested size, printed to stderr every 5 s as the biggest
//! size classes by live bytes. Used to find what a held connection costs (loadtest/RESULTS.md).

use std::alloc::{GlobalAlloc, Layout};
use std::sync::atomic::{AtomicI64, Ordering};

/// Sizes are counted in 16-byte steps up to this; larger blocks share the last bucket.
const EXACT_MAX: usize = 8192;
const BUCKETS: usize = EXACT_MAX / 16 + 1;

pub struct Census<A>(pub A);

#[allow(clippy::declare_interior_mutable_const)]
const ZERO: AtomicI64 = AtomicI64::new(0);
static COUNT: [AtomicI64; BUCKETS] = [ZERO; BUCKETS];
static BYTES: [AtomicI64; BUCKETS] = [ZERO; BUCKETS];

fn bucket(size: usize) -> usize {
    (size.div_ceil(16)).min(BUCKETS - 1)
}

/// `TACK_CENSUS_TRACE=SIZE`: print where the first few blocks of exactly SIZE bytes come from.
static TRACE_SIZE: AtomicI64 = AtomicI64::new(-1);
static TRACED: AtomicI64 = AtomicI64::new(0);

std::thread_local! {
    static IN_TRACE: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
}

fn trace(size: usize) {
    if TRACE_SIZE.load(Ordering::Relaxed) != size as i64 || TRACED.load(Ordering::Relaxed) >= 3 {
        return;
    }
    let _ = IN_TRACE.try_with(|t| {
        if t.replace(true) {
            return;
        }
        TRACED.fetch_add(1, Ordering::Relaxed);
        eprintln!(
            "alloc-census trace {size}B:\n{}",
            std::backtrace::Backtrace::force_capture()
        );
        t.set(false);
    });
}

fn note(size: usize, sign: i64) {
    if sign > 0 {
        trace(size);
    }
    let b = bucket(size);
    COUNT[b].fetch_add(sign, Ordering::Relaxed);
    BYTES[b].fetch_add(sign * size as i64, Ordering::Relaxed);
}

// SAFETY: forwards every call to the inner allocator unchanged; only counts on the side.
unsafe impl<A: GlobalAlloc> GlobalAlloc for Census<A> {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        note(layout.size(), 1);
        // SAFETY: same contract as ours.
        unsafe { self.0.alloc(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        note(layout.size(), -1);
        // SAFETY: same contract as ours.
        unsafe { self.0.dealloc(ptr, layout) }
    }
    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        note(layout.size(), 1);
        // SAFETY: same contract as ours.
        unsafe { self.0.alloc_zeroed(layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        note(layout.size(), -1);
        note(new_size, 1);
        // SAFETY: same contract as ours.
        unsafe { self.0.realloc(ptr, layout, new_size) }
    }
}

/// Prints the census every 5 s from a background thread.
pub fn start_reporter() {
    // Traces start 2 s in, past start-up's own allocations.
    if let Some(n) = std::env::var("TACK_CENSUS_TRACE")
        .ok()
        .and_then(|v| v.parse().ok())
    {
        let _ = std::thread::Builder::new().spawn(move || {
            std::thread::sleep(std::time::Duration::from_secs(2));
            TRACE_SIZE.store(n, Ordering::Relaxed);
        });
    }
    let _ = std::thread::Builder::new()
        .name("alloc-census".into())
        .spawn(|| loop {
            std::thread::sleep(std::time::Duration::from_secs(5));
            let mut rows: Vec<(i64, i64, usize)> = (0..BUCKETS)
                .map(|b| {
                    (
                        BYTES[b].load(Ordering::Relaxed),
                        COUNT[b].load(Ordering::Relaxed),
                        b * 16,
                    )
                })
                .filter(|r| r.1 > 0)
                .collect();
            let total: i64 = rows.iter().map(|r| r.0).sum();
            rows.sort_unstable_by_key(|r| std::cmp::Reverse(r.0));
            let top: Vec<String> = rows
                .iter()
                .take(24)
                .map(|(bytes, n, size)| format!("{size}B×{n}={bytes}"))
                .collect();
            eprintln!("alloc-census total={total} {}", top.join(" "));
        });
}
