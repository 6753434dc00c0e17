//! yield_now fairness on one shard: a long loop that yields every 1,000 iterations lets another
//! task run and lets a pending accept complete. Both drivers; the looping task runs both as the
//! shard's main future (which monoio re-polls at once after a self-wake) and as a spawned task.

mod common;

use std::cell::Cell;
use std::hint::black_box;
use std::rc::Rc;
use std::sync::mpsc;
use std::time::Duration;

use shards::{run, yield_now, DriverRequest};

const A_ITERATIONS: u64 = 1_000_000;
const A_YIELD_EVERY: u64 = 1_000;

#[derive(Debug)]
struct Outcome {
    /// How often task B got past a yield before A finished.
    b_runs_before_a_done: u64,
    /// A's iteration count when the accept completed (None: not before A finished).
    accepted_at: Option<u64>,
}

fn fairness(driver: DriverRequest, a_in_main_future: bool) -> Outcome {
    let (tx, rx) = mpsc::channel::<Outcome>();
    let engine = run::<(), _, _>(common::config(1, driver, 8), move |_shard| {
        let tx = tx.clone();
        async move {
            let a_done = Rc::new(Cell::new(false));
            let a_iter = Rc::new(Cell::new(0u64));
            let b_runs = Rc::new(Cell::new(0u64));
            let accepted_at = Rc::new(Cell::new(None::<u64>));

            // Task B, spawned before A: counts its own turns.
            let b = {
                let (a_done, b_runs) = (a_done.clone(), b_runs.clone());
                monoio::spawn(async move {
                    while !a_done.get() {
                        yield_now().await;
                        b_runs.set(b_runs.get() + 1);
                    }
                })
            };

            // A client connects (from its own thread) before A starts; the accept below can
            // only complete if the driver gets turns while A runs.
            let listener = monoio::net::TcpListener::bind("127.0.0.1:0").expect("bind");
            let addr = listener.local_addr().expect("addr");
            let client = std::thread::spawn(move || std::net::TcpStream::connect(addr))
                .join()
                .expect("client thread")
                .expect("connect");
            let acceptor = {
                let (a_iter, accepted_at) = (a_iter.clone(), accepted_at.clone());
                monoio::spawn(async move {
                    let (_stream, _peer) = listener.accept().await.expect("accept");
                    accepted_at.set(Some(a_iter.get()));
                })
            };

            let a = {
                let (a_done, a_iter, b_runs) = (a_done.clone(), a_iter.clone(), b_runs.clone());
                async move {
                    for i in 0..A_ITERATIONS {
                        black_box(i);
                        a_iter.set(i);
                        if i % A_YIELD_EVERY == A_YIELD_EVERY - 1 {
                            yield_now().await;
                        }
                    }
                    a_done.set(true);
                    b_runs.get()
                }
            };
            let b_runs_before_a_done = if a_in_main_future {
                a.await
            } else {
                monoio::spawn(a).await
            };
            let accepted = accepted_at.get();
            b.await;
            if accepted.is_some() {
                acceptor.await;
            }
            drop(client);
            tx.send(Outcome {
                b_runs_before_a_done,
                accepted_at: accepted,
            })
            .expect("report");
        }
    })
    .expect("engine starts");
    let outcome = rx.recv_timeout(Duration::from_secs(60)).expect("outcome");
    engine.join().expect("clean exit");
    outcome
}

#[test]
fn yield_now_lets_other_tasks_and_io_run() {
    for driver in common::drivers() {
        for a_in_main_future in [true, false] {
            let o = fairness(driver, a_in_main_future);
            eprintln!("{driver:?}, A in main future: {a_in_main_future}: {o:?}");
            let yields = A_ITERATIONS / A_YIELD_EVERY;
            assert!(
                o.b_runs_before_a_done > yields / 2,
                "{driver:?}/{a_in_main_future}: B ran only {} times during A's {yields} yields",
                o.b_runs_before_a_done
            );
            let at = o
                .accepted_at
                .unwrap_or_else(|| panic!("{driver:?}/{a_in_main_future}: accept starved by A"));
            assert!(at < A_ITERATIONS - 1, "accept completed only at A's end");
        }
    }
}
