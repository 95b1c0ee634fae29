//! What a long queue of lease requests costs in the ledger: bytes per queued request and
//! time per grant, at 10k, 100k and 1M queued. A measurement, not a check of behaviour
//! (`ledger`'s unit tests check that): run with
//! `cargo test -p rayr-node --release --test lease_queue -- --ignored --nocapture`.

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicIsize, Ordering};
use std::time::Instant;

use rayr_node::ledger::{Decision, Ledger, Request};

/// Counts the bytes live on the heap, to weigh the queue.
struct Counting;

static LIVE: AtomicIsize = AtomicIsize::new(0);

unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        LIVE.fetch_add(layout.size() as isize, Ordering::Relaxed);
        // SAFETY: forwarded as is.
        unsafe { System.alloc(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        LIVE.fetch_sub(layout.size() as isize, Ordering::Relaxed);
        // SAFETY: forwarded as is.
        unsafe { System.dealloc(ptr, layout) }
    }
}

#[global_allocator]
static ALLOC: Counting = Counting;

/// Where a reply goes, as the agent's `LeaseFor::Client` is sized: a connection and a
/// request id.
type ReplyTo = (std::sync::Arc<()>, u64);

fn request(conn: &std::sync::Arc<()>, i: u64) -> Request<ReplyTo> {
    Request {
        reply_to: (conn.clone(), i),
        demand: [("CPU".to_string(), 1.0)].into(),
        job: [1; 16],
        requester: Some([2; 16]),
        dedicated: false,
        actor: None,
    }
}

#[test]
#[ignore = "a measurement; run it with --ignored --nocapture"]
fn queued_leases_cost_little() {
    let conn = std::sync::Arc::new(());
    for n in [10_000u64, 100_000, 1_000_000] {
        let before = LIVE.load(Ordering::Relaxed);
        let mut ledger: Ledger<ReplyTo> = Ledger::new([("CPU".to_string(), 4.0)].into());
        let t = Instant::now();
        for i in 0..n {
            ledger.enqueue(request(&conn, i));
        }
        let enqueue_ns = t.elapsed().as_nanos() as f64 / n as f64;
        let bytes = (LIVE.load(Ordering::Relaxed) - before) as f64 / n as f64;
        // Workers register one at a time, each taking the oldest request; the lease ends.
        let grants = 10_000u64.min(n);
        let t = Instant::now();
        let mut examined = 0;
        for _ in 0..grants {
            let mut worker = Some(7u32);
            let pass = ledger.grant(|_| None, |_, _| worker.take());
            examined += pass.examined;
            for d in pass.decisions {
                if let Decision::Granted { request, .. } = d {
                    ledger.release(&request.demand, false);
                }
            }
        }
        let grant_ns = t.elapsed().as_nanos() as f64 / grants as f64;
        // A pass when nothing can be granted (every worker busy).
        let t = Instant::now();
        let pass = ledger.grant(|_| None, |_, _| None::<u32>);
        let idle_pass_ns = t.elapsed().as_nanos();
        // A worker that asked for nothing exits (every worker exit drops its requests).
        let t = Instant::now();
        ledger.drop_requester([3; 16]);
        let exit_ns = t.elapsed().as_nanos();
        println!(
            "{n:>8} queued: {bytes:.0} B/request, enqueue {enqueue_ns:.0} ns, grant {grant_ns:.0} ns ({:.1} looked at), empty pass {idle_pass_ns} ns ({} looked at), a worker's exit {exit_ns} ns",
            examined as f64 / grants as f64,
            pass.examined
        );
        assert_eq!(ledger.queued() as u64, n - grants);
    }
}
