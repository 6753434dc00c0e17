//! `tack`: CLI → validated config → one shard per core → wait for SIGINT/SIGTERM → drain;
//! SIGHUP and a changed routes file reload the configuration on the reload thread
//! (`tack::reload`). `--check-config` only loads and validates, then exits 0 or 2.
//! `tack publish …` publishes one item instead (see `tack::cli::publish`).

use std::process::ExitCode;
use std::sync::atomic::AtomicBool;
use std::sync::{mpsc, Arc};
use std::time::Duration;

use clap::Parser;

use tack::cli::{Cli, Command};
use tack::config::tuning::Driver;
use tack::config::Config;
use tack::metrics::AllCounters;
use tack::reload::{ReloadSlot, Reloader, Trigger};
use tack::shard::{self, Shared};

#[cfg(not(feature = "alloc-census"))]
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[cfg(feature = "alloc-census")]
#[global_allocator]
static GLOBAL: tack::census::Census<mimalloc::MiMalloc> = tack::census::Census(mimalloc::MiMalloc);

/// How long shards may take to bind their listeners before start-up is declared failed.
const READY_TIMEOUT: Duration = Duration::from_secs(10);

fn main() -> ExitCode {
    // From the first instruction on, a SIGHUP sets this flag instead of killing tack (its
    // default action); the reload thread reloads when it finds it set (see `tack::reload`).
    let early_hangup = Arc::new(AtomicBool::new(false));
    if let Err(e) = signal_hook::flag::register(signal_hook::consts::SIGHUP, early_hangup.clone()) {
        eprintln!("tack: cannot handle SIGHUP: {e}");
    }
    let cli = Cli::parse();
    if let Some(Command::Publish(args)) = &cli.command {
        return tack::cli::publish::run(args);
    }
    if cli.check_config {
        let (report, status) = tack::reload::check_config(&cli);
        if status == 0 {
            print!("{report}");
        } else {
            eprint!("{report}");
        }
        return ExitCode::from(status);
    }
    let config = match Config::load(&cli) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("tack: configuration error: {e}");
            return ExitCode::from(2);
        }
    };
    init_logging(&config);
    #[cfg(feature = "alloc-census")]
    tack::census::start_reporter();
    set_huge_pages(config.tuning.huge_pages);
    for key in &config.ignored_keys {
        tracing::info!(key = %key, "config key not implemented by tack: ignored");
    }
    for w in &config.route_warnings {
        tracing::warn!("routes: {w}");
    }
    match run(config, cli, early_hangup) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!("{e}");
            eprintln!("tack: {e}");
            ExitCode::from(1)
        }
    }
}

/// Transparent huge pages off unless the tuning file asks for them. The allocator's arena is
/// eligible for THP, and a held connection touches memory a few hundred bytes at a time: with
/// THP every table or arena region touched is backed by a whole 2 MiB page (measured: 25 MiB
/// resident at start instead of 5, and ~0.6 KB more per held connection at 10,000 holds). Done
/// before the shards start, so their tables and heaps are faulted in 4 KiB pages.
fn set_huge_pages(on: bool) {
    if on {
        tracing::info!("transparent huge pages allowed (huge_pages = true)");
        return;
    }
    // SAFETY: prctl(PR_SET_THP_DISABLE, 1, 0, 0, 0) only sets a flag on this process.
    let rc = unsafe { libc::prctl(libc::PR_SET_THP_DISABLE, 1, 0, 0, 0) };
    if rc != 0 {
        tracing::warn!(error = %std::io::Error::last_os_error(), "could not opt out of transparent huge pages");
    }
}

fn init_logging(config: &Config) {
    let filter = tracing_subscriber::EnvFilter::try_from_env("TACK_LOG").unwrap_or_else(|_| {
        tracing_subscriber::EnvFilter::new(config.log_level.to_string().to_lowercase())
    });
    let fmt = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    match config.log_format {
        tack::cli::LogFormat::Text => fmt
            .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
            .with_target(false)
            .init(),
        // Fields at the top level next to `timestamp`, `level`, `target` (`access` for the
        // access log) and `message`.
        tack::cli::LogFormat::Json => fmt
            .json()
            .flatten_event(true)
            .with_current_span(false)
            .init(),
    }
}

fn run(config: Config, cli: Cli, early_hangup: Arc<AtomicBool>) -> Result<(), String> {
    let t = &config.tuning;
    let engine_cfg = shards::EngineConfig {
        shards: t.shards,
        pin: t.pin_cores,
        driver: match t.driver {
            Driver::Auto => shards::DriverRequest::Auto,
            Driver::IoUring => shards::DriverRequest::IoUring,
            Driver::Legacy => shards::DriverRequest::Legacy,
        },
        uring_entries: t.uring_entries,
        sqpoll_idle_ms: t.sqpoll_idle.map(|d| d.as_millis() as u32),
        ring_capacity: t.ring_capacity,
        thread_name: "tack-shard".into(),
    };
    let shard_count = t.shards;
    let listen = config.listen.clone();
    let publish = config.publish_listen;
    let sessions = tack::conn::session::Sessions::new(tack::session::StoreLimits {
        sessions_max: t.sessions_max,
        ttl_ms: t.session_ttl.as_millis() as u64,
        rules_max: t.session_rules_max,
    });
    let stall_threshold = t.stall_threshold;
    let config = Arc::new(config);
    let counters = Arc::new(AllCounters::new(shard_count));
    let slot = Arc::new(ReloadSlot::new(shard_count, config.clone()));
    let beats = tack::stall::Beats::new(shard_count, stall_threshold);
    let watched = counters.clone();
    beats
        .watch(move |shard, phase, ms, over| {
            if over {
                tracing::warn!(
                    shard,
                    stalled_ms = ms,
                    "shard back at its driver after a stall"
                );
            } else {
                // The watchdog is this counter's only writer.
                watched.shards[shard].inc(tack::metrics::Counter::ShardStalls);
                tracing::warn!(
                    shard,
                    phase = phase.name(),
                    stalled_ms = ms,
                    "shard stalled: it has not come back to its driver"
                );
            }
        })
        .map_err(|e| format!("cannot start the stall watchdog: {e}"))?;
    let shared = Arc::new(Shared {
        counters: counters.clone(),
        beats,
        config: config.clone(),
        sessions: Arc::new(sessions),
        reload: slot.clone(),
    });
    let (ready_tx, ready_rx) = mpsc::channel::<Result<(), String>>();
    let engine = shards::run(engine_cfg, move |s| {
        shard::run(s, shared.clone(), ready_tx.clone())
    })
    .map_err(|e| format!("cannot start shards: {e}"))?;
    for _ in 0..shard_count {
        let outcome = match ready_rx.recv_timeout(READY_TIMEOUT) {
            Ok(r) => r,
            Err(_) => Err("a shard did not start in time".to_string()),
        };
        if let Err(e) = outcome {
            engine.request_shutdown();
            let _ = engine.join();
            return Err(e);
        }
    }
    let listen_list: Vec<String> = listen.iter().map(|a| a.to_string()).collect();
    tracing::info!(
        proxy = %listen_list.join(","),
        publish = %publish,
        driver = %engine.driver(),
        shards = shard_count,
        "tack ready"
    );
    // The reload thread: SIGHUP (handed over by this thread) and the routes-file watch. It
    // ends when `triggers` is dropped; it is not joined (a reload under way when tack stops
    // has nothing left to reload).
    let (triggers, reload_rx) = mpsc::channel::<Trigger>();
    let reloader = Reloader::new(cli, config, slot, engine.notice_handle(), counters);
    std::thread::Builder::new()
        .name("tack-reload".into())
        .spawn(move || reloader.run(reload_rx, early_hangup))
        .map_err(|e| format!("cannot start the reload thread: {e}"))?;
    engine
        .wait_for_signal_with(|| {
            let _ = triggers.send(Trigger::Hangup);
        })
        .map_err(|e| format!("cannot wait for signals: {e}"))?;
    drop(triggers);
    tracing::info!("shutdown requested: draining");
    engine.join().map_err(|e| format!("shard failed: {e}"))?;
    tracing::info!("stopped");
    Ok(())
}
