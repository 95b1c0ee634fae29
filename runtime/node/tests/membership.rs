//! The head's own node following its head's membership in process
//! (`rayr_node::membership::follow_in_process`): it reports what the node has free each
//! period, and stops when asked.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use parking_lot::Mutex;

#[test]
fn the_head_node_reports_what_it_has_free_each_period_until_stopped() {
    let tmp = std::env::temp_dir().join(format!("rayr-membership-{}", std::process::id()));
    let session = rayr_logs::Session::create(&tmp).unwrap();
    let mut cfg = rayr_node::NodeConfig::local(session.clone(), 3.0);
    cfg.store_capacity = 8 << 20;
    cfg.store_prefault = 0;
    let node = rayr_node::start_node(cfg).unwrap();
    let beats = Arc::new(AtomicUsize::new(0));
    let seen: Arc<Mutex<Option<rayr_node::resources::Resources>>> = Default::default();
    let (b, s) = (beats.clone(), seen.clone());
    let following = rayr_node::membership::follow_in_process(&node, "127.0.0.1:1", Duration::from_millis(5), move |available| {
        b.fetch_add(1, Ordering::SeqCst);
        *s.lock() = Some(available);
        (Vec::new(), Vec::new())
    })
    .unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    while beats.load(Ordering::SeqCst) < 3 && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(5));
    }
    assert!(beats.load(Ordering::SeqCst) >= 3, "the node beat {} times in 10 s", beats.load(Ordering::SeqCst));
    assert_eq!(seen.lock().as_ref().and_then(|r| r.get("CPU")).copied(), Some(3.0), "no lease is held: all its CPUs are free");
    following.stop();
    let after = beats.load(Ordering::SeqCst);
    std::thread::sleep(Duration::from_millis(50));
    assert_eq!(beats.load(Ordering::SeqCst), after, "it beat after it was stopped");
    node.shutdown();
    let _ = std::fs::remove_dir_all(&tmp);
}
