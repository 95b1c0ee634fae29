//! Figures of the event index (issue #6): how fast it indexes, what it takes on disk, how
//! soon it answers after a large job, and how far its live views trail the cluster.

use std::path::Path;
use std::time::Instant;

use rayr_head::EventIndex;

use crate::figure;
use crate::record::write_job;

/// Tasks in the synthetic record the sustained rate is measured on.
fn record_tasks() -> u64 {
    std::env::var("RAYR_BENCH_INDEX_TASKS").ok().and_then(|v| v.parse().ok()).unwrap_or(10_000_000)
}

/// Indexing a synthetic record of ten million tasks: the rate over the whole and per
/// tenth (the first and last tenth show whether the cost grows with the record), the
/// bytes it takes per task, and how soon a reopened index answers.
pub(crate) fn synthetic(tmp: &Path) {
    let tasks = record_tasks();
    let dir = tmp.join("ix");
    let session = match rayr_logs::Session::create(&dir) {
        Ok(s) => s,
        Err(e) => return eprintln!("rayr-bench: index figures skipped: {e}"),
    };
    let t = Instant::now();
    let log_bytes = match write_job(&session, tasks, 2) {
        Ok(n) => n,
        Err(e) => return eprintln!("rayr-bench: index figures skipped: cannot write the record: {e}"),
    };
    eprintln!("rayr-bench: wrote a {tasks}-task record ({} MB) in {:.1} s", log_bytes >> 20, t.elapsed().as_secs_f64());
    let index = EventIndex::open(&session).expect("open the index");
    let events = tasks * 6;
    let tenth = (events / 10).max(1);
    let mut rates = Vec::new();
    let t = Instant::now();
    let mut indexed = 0u64;
    loop {
        let step = Instant::now();
        let n = index.catch_up_at_most(&session, tenth).expect("index");
        if n == 0 {
            break;
        }
        indexed += n;
        rates.push(n as f64 / step.elapsed().as_secs_f64());
    }
    index.flush().expect("flush");
    let total = t.elapsed().as_secs_f64();
    figure("index_events_per_s", format!("{:.0}", indexed as f64 / total), "events/s");
    figure("index_tasks_per_s", format!("{:.0}", tasks as f64 / total), "tasks/s");
    if rates.len() >= 2 {
        figure("index_events_per_s_first_tenth", format!("{:.0}", rates[0]), "events/s");
        figure("index_events_per_s_last_tenth", format!("{:.0}", rates[rates.len() - 1]), "events/s");
    }
    index.settle();
    figure("index_bytes_per_task", format!("{:.1}", index.disk_bytes() as f64 / tasks as f64), "B");
    figure("index_record_tasks", tasks, "tasks");
    figure("event_log_bytes_per_task_synthetic", format!("{:.1}", log_bytes as f64 / tasks as f64), "B");
    drop(index);
    // A reader that opens the index afresh and asks for the summary, and for one task.
    let t = Instant::now();
    let index = EventIndex::open(&session).expect("reopen the index");
    let summary = index.summary("tasks").expect("summary");
    figure("index_reopen_and_summary_ms", format!("{:.1}", t.elapsed().as_secs_f64() * 1e3), "ms");
    assert_eq!(summary.total, tasks, "the summary counts every task");
    let t = Instant::now();
    let page = index.list(&rayr_proto::ListRequest { entity: "tasks".into(), limit: 1, offset: tasks / 2, ..Default::default() }).expect("list");
    let id = page.tasks[0].task_id.clone();
    let found = index.events(Some(&id), 0, 0, 0).expect("events");
    assert_eq!(found.len(), 5, "a task's four task events and its result's creation");
    figure("index_list_and_task_events_ms", format!("{:.1}", t.elapsed().as_secs_f64() * 1e3), "ms");
    let t = Instant::now();
    let short = rayr_head::short_id(&id);
    assert_eq!(index.resolve_unique(&short).expect("resolve"), id);
    figure("index_resolve_short_id_ms", format!("{:.1}", t.elapsed().as_secs_f64() * 1e3), "ms");
}
