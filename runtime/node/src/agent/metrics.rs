//! The node's metrics, as Prometheus text (the `rayr start` process serves them on
//! `--metrics-export-port`): workers, leases, the object store, transfers between nodes,
//! the event log, memory, and worker exits by how they ended.

use std::collections::BTreeMap;
use std::fmt::Write;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};

use super::Agent;

/// Counters the agent bumps as things happen.
#[derive(Default)]
pub(super) struct Counters {
    pub workers_started: AtomicU64,
    /// Worker exits by exit type (`SYSTEM_ERROR`, `NODE_OUT_OF_MEMORY`, …).
    pub exits: parking_lot::Mutex<BTreeMap<String, u64>>,
    pub leases_spilled: AtomicU64,
    pub pulls: AtomicU64,
    pub pulled_bytes: AtomicU64,
    pub evictions: AtomicU64,
}

/// Appends one metric: its help, type and samples (`labels` like `state="idle"`, or empty).
pub fn metric(out: &mut String, name: &str, kind: &str, help: &str, samples: &[(String, f64)]) {
    let _ = writeln!(out, "# HELP {name} {help}");
    let _ = writeln!(out, "# TYPE {name} {kind}");
    for (labels, v) in samples {
        if labels.is_empty() {
            let _ = writeln!(out, "{name} {v}");
        } else {
            let _ = writeln!(out, "{name}{{{labels}}} {v}");
        }
    }
}

/// A label value, escaped as the text format wants.
pub fn label(v: &str) -> String {
    v.replace('\\', "\\\\").replace('"', "\\\"").replace('\n', "\\n")
}

/// Resident memory of a process, from /proc (0 when it is gone).
fn rss_bytes(pid: u32) -> u64 {
    let statm = std::fs::read_to_string(format!("/proc/{pid}/statm")).unwrap_or_default();
    let pages: u64 = statm.split_whitespace().nth(1).and_then(|p| p.parse().ok()).unwrap_or(0);
    // SAFETY: sysconf has no preconditions.
    pages * unsafe { libc::sysconf(libc::_SC_PAGESIZE) }.max(0) as u64
}

fn meminfo(key: &str) -> Option<u64> {
    let text = std::fs::read_to_string("/proc/meminfo").ok()?;
    let line = text.lines().find(|l| l.starts_with(key))?;
    line.split_whitespace().nth(1)?.parse::<u64>().ok().map(|kb| kb * 1024)
}

impl Agent {
    /// The node's metrics now, as Prometheus text.
    pub(super) fn metrics_text(&self) -> String {
        let node = format!("node=\"{}\"", rayr_logs::hex(&self.cfg.node_id));
        let with = |extra: &str| if extra.is_empty() { node.clone() } else { format!("{node},{extra}") };
        let st = self.state.lock();
        let leased = st.pool.clients.values().filter(|c| !c.is_driver && c.lease.is_some()).count();
        let workers = st.pool.clients.values().filter(|c| !c.is_driver).count();
        let starting = st.pool.spawned.values().filter(|s| !s.registered).count();
        let drivers = st.pool.clients.values().filter(|c| c.is_driver).count();
        let worker_pids: Vec<u32> = st.pool.spawned.values().map(|s| s.pid).collect();
        let pending = st.leases.queued();
        let available = st.leases.available().clone();
        drop(st);
        let store = self.store.lock();
        let (used, capacity, objects) = (store.alloc.used(), store.alloc.capacity(), store.objects.len());
        let (copies, copy_bytes) = (store.copies.len(), store.copies.values().map(|c| c.size).sum::<u64>());
        drop(store);
        let mut out = String::new();
        let c = &self.counters;
        metric(&mut out, "rayr_node_workers", "gauge", "Worker processes of this node, by state.", &[
            (with("state=\"leased\""), leased as f64),
            (with("state=\"idle\""), (workers - leased) as f64),
            (with("state=\"starting\""), starting as f64),
        ]);
        metric(&mut out, "rayr_node_drivers", "gauge", "Drivers connected to this node.", &[(node.clone(), drivers as f64)]);
        metric(&mut out, "rayr_node_workers_started_total", "counter", "Worker processes this node started.", &[(
            node.clone(),
            c.workers_started.load(Relaxed) as f64,
        )]);
        let exits: Vec<(String, f64)> =
            c.exits.lock().iter().map(|(k, v)| (with(&format!("exit_type=\"{}\"", label(k))), *v as f64)).collect();
        metric(&mut out, "rayr_node_worker_exits_total", "counter", "Worker exits, by how they ended (SYSTEM_ERROR: killed or crashed; NODE_OUT_OF_MEMORY: killed by the memory monitor; INTENDED_*: asked for).", &exits);
        metric(&mut out, "rayr_node_leases_waiting", "gauge", "Lease requests waiting for resources here.", &[(node.clone(), pending as f64)]);
        metric(&mut out, "rayr_node_leases_spilled_total", "counter", "Lease requests this node sent to another node (spillback).", &[(
            node.clone(),
            c.leases_spilled.load(Relaxed) as f64,
        )]);
        let mut totals: Vec<(&String, &f64)> = self.cfg.resources.iter().collect();
        totals.sort_by(|a, b| a.0.cmp(b.0));
        metric(&mut out, "rayr_node_resources", "gauge", "Resources of this node.", &totals.iter().map(|(k, v)| (with(&format!("resource=\"{}\"", label(k))), **v)).collect::<Vec<_>>());
        let mut free: Vec<(&String, &f64)> = available.iter().collect();
        free.sort_by(|a, b| a.0.cmp(b.0));
        metric(&mut out, "rayr_node_resources_available", "gauge", "Resources of this node no lease holds.", &free.iter().map(|(k, v)| (with(&format!("resource=\"{}\"", label(k))), v.max(0.0))).collect::<Vec<_>>());
        metric(&mut out, "rayr_node_object_store_used_bytes", "gauge", "Bytes of the shm object store in use (copies of other nodes' objects included).", &[(node.clone(), used as f64)]);
        metric(&mut out, "rayr_node_object_store_capacity_bytes", "gauge", "Size of the shm object store.", &[(node.clone(), capacity as f64)]);
        metric(&mut out, "rayr_node_object_store_objects", "gauge", "Objects whose value is in this node's store (not copies).", &[(node.clone(), objects as f64)]);
        metric(&mut out, "rayr_node_object_copies", "gauge", "Copies of other nodes' objects held here.", &[(node.clone(), copies as f64)]);
        metric(&mut out, "rayr_node_object_copy_bytes", "gauge", "Bytes of those copies.", &[(node.clone(), copy_bytes as f64)]);
        metric(&mut out, "rayr_node_objects_pulled_total", "counter", "Objects this node copied from other nodes.", &[(node.clone(), c.pulls.load(Relaxed) as f64)]);
        metric(&mut out, "rayr_node_pulled_bytes_total", "counter", "Bytes this node copied from other nodes.", &[(node.clone(), c.pulled_bytes.load(Relaxed) as f64)]);
        metric(&mut out, "rayr_node_copies_evicted_total", "counter", "Copies dropped to make room in the store.", &[(node.clone(), c.evictions.load(Relaxed) as f64)]);
        // Objects are not spilled to disk (yet): the store fails a put that does not fit.
        metric(&mut out, "rayr_node_spilled_bytes_total", "counter", "Bytes of objects spilled from the store to disk (none: rayr does not spill objects to disk yet).", &[(node.clone(), 0.0)]);
        let log_bytes = std::fs::metadata(self.cfg.session.event_log(&rayr_logs::hex(&self.cfg.node_id))).map(|m| m.len()).unwrap_or(0);
        metric(&mut out, "rayr_node_event_log_bytes", "gauge", "Size of this node's event log (every event its processes recorded).", &[(node.clone(), log_bytes as f64)]);
        metric(&mut out, "rayr_node_agent_rss_bytes", "gauge", "Resident memory of the node agent's process.", &[(node.clone(), rss_bytes(std::process::id()) as f64)]);
        let workers_rss: u64 = worker_pids.iter().map(|p| rss_bytes(*p)).sum();
        metric(&mut out, "rayr_node_workers_rss_bytes", "gauge", "Resident memory of this node's worker processes, together.", &[(node.clone(), workers_rss as f64)]);
        if let (Some(total), Some(avail)) = (meminfo("MemTotal:"), meminfo("MemAvailable:")) {
            metric(&mut out, "rayr_node_memory_total_bytes", "gauge", "Memory of the host.", &[(node.clone(), total as f64)]);
            metric(&mut out, "rayr_node_memory_available_bytes", "gauge", "Memory of the host available to new work (MemAvailable).", &[(node.clone(), avail as f64)]);
        }
        out
    }
}
