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
    // A prefix as a user types it (the short form's six digits a side are not unique among
    // tens of millions of ids of one process).
    let t = Instant::now();
    let prefix = &rayr_logs::hex(&id)[..16];
    assert_eq!(index.resolve_unique(prefix).expect("resolve"), id);
    figure("index_resolve_prefix_ms", format!("{:.1}", t.elapsed().as_secs_f64() * 1e3), "ms");
}

/// A child with an embedded cluster running trivial tasks as fast as it can for a few
/// seconds, while a thread asks its head for the live task counts (`Summary`, live: no
/// catching up first) every 20 ms. A sample that counts F finished tasks of the load,
/// taken at time t, trails the cluster by t minus the time the driver had F results.
/// Prints the lag's median and maximum over the steady part of the load (after its first
/// half second), and the load's rate.
pub(crate) fn lag_child() -> rayr::Result<()> {
    use rayr::ObjectRef;
    use std::sync::Arc;
    use std::sync::atomic::{AtomicBool, Ordering};
    rayr::init()?;
    let session = rayr_logs::Session::latest(&rayr_logs::tmpdir()).expect("the embedded cluster's session");
    let addr = session.head_address().expect("the embedded head's address");
    let warm: Vec<ObjectRef<u64>> = (0..2_000).map(crate::noop::remote).collect();
    rayr::get_all(&warm)?;
    drop(warm);
    let stop = Arc::new(AtomicBool::new(false));
    let finished = |reply: &rayr_proto::SummaryReply| -> u64 { reply.groups.iter().filter_map(|g| g.states.get("FINISHED")).sum() };
    let (samples_tx, samples_rx) = std::sync::mpsc::channel::<(Instant, u64)>();
    let sampler = {
        let stop = stop.clone();
        std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("a tokio runtime");
            rt.block_on(async move {
                let mut client = rayr_proto::head_client::HeadClient::connect(format!("http://{addr}")).await.expect("connect to the head");
                while !stop.load(Ordering::Acquire) {
                    let t = Instant::now();
                    let req = rayr_proto::SummaryRequest { entity: "tasks".into(), live: true };
                    if let Ok(r) = client.summary(req).await {
                        let _ = samples_tx.send((t, finished(r.get_ref())));
                    }
                    tokio::time::sleep(std::time::Duration::from_millis(20)).await;
                }
            });
        })
    };
    // The warmup's tasks counted before the load starts.
    let mut base = 0;
    let deadline = Instant::now() + std::time::Duration::from_secs(20);
    while base < 2_000 && Instant::now() < deadline {
        if let Ok((_, f)) = samples_rx.recv_timeout(std::time::Duration::from_secs(1)) {
            base = f;
        }
    }
    let t0 = Instant::now();
    let mut done = vec![(t0, 0u64)];
    while t0.elapsed() < std::time::Duration::from_secs(6) {
        let refs: Vec<ObjectRef<u64>> = (0..10_000).map(crate::noop::remote).collect();
        rayr::get_all(&refs)?;
        done.push((Instant::now(), done.last().unwrap().1 + 10_000));
    }
    let end = Instant::now();
    stop.store(true, Ordering::Release);
    let _ = sampler.join();
    let mut lags: Vec<f64> = Vec::new();
    for (t, f) in samples_rx.try_iter() {
        if t < t0 + std::time::Duration::from_millis(500) || t > end {
            continue;
        }
        let want = f.saturating_sub(base);
        let i = done.partition_point(|(_, n)| *n < want).min(done.len() - 1);
        let at = if i == 0 {
            done[0].0
        } else {
            // Results came in steadily within a chunk: where in it the want-th was.
            let ((ta, na), (tb, nb)) = (done[i - 1], done[i]);
            let part = (want - na) as f64 / (nb - na).max(1) as f64;
            ta + (tb - ta).mul_f64(part.clamp(0.0, 1.0))
        };
        lags.push(t.saturating_duration_since(at).as_secs_f64() * 1e3);
    }
    lags.sort_by(f64::total_cmp);
    if let (Some(mid), Some(max)) = (lags.get(lags.len() / 2), lags.last()) {
        println!("lag_ms_p50 {mid:.1}");
        println!("lag_ms_max {max:.1}");
    }
    println!("lag_load_tasks_per_s {:.0}", done.last().unwrap().1 as f64 / (end - t0).as_secs_f64());
    rayr::shutdown();
    Ok(())
}

/// A job of a million trivial tasks (an embedded cluster in a child), then, the moment its
/// driver has exited, `rayr summary tasks` and `rayr why-died` of one of its results as a
/// user types them: the CLI from its start, reading the session's index.
pub(crate) fn first_query_after_job(tmp: &Path) {
    use std::process::{Command, Stdio};
    let Some(cli) = std::env::current_exe().ok().and_then(|e| Some(e.parent()?.join("rayr"))).filter(|c| c.exists()) else {
        return eprintln!("rayr-bench: first_query_after_1m_tasks_ms skipped: the rayr CLI is not beside this binary");
    };
    let dir = tmp.join("fq");
    let _ = std::fs::create_dir_all(&dir);
    let out = Command::new(std::env::current_exe().unwrap())
        .env(crate::MODE_VAR, "million")
        .env("RAYR_TMPDIR", &dir)
        .env_remove("RAYR_ADDRESS")
        .stdin(Stdio::null())
        .output();
    let stdout = out.map(|o| String::from_utf8_lossy(&o.stdout).to_string()).unwrap_or_default();
    let value = |key: &str| stdout.lines().find_map(|l| l.strip_prefix(key)).map(|v| v.trim().to_string());
    let (Some(tasks), Some(object)) = (value("tasks "), value("object ")) else {
        let _ = std::fs::remove_dir_all(&dir);
        return eprintln!("rayr-bench: first_query_after_1m_tasks_ms skipped: the job failed:\n{stdout}");
    };
    let timed = |args: &[&str]| -> Option<(f64, String)> {
        let t = Instant::now();
        let out = Command::new(&cli).args(args).env("RAYR_TMPDIR", &dir).env_remove("RAYR_ADDRESS").stdin(Stdio::null()).output().ok()?;
        let ms = t.elapsed().as_secs_f64() * 1e3;
        out.status.success().then(|| (ms, String::from_utf8_lossy(&out.stdout).to_string()))
    };
    match timed(&["summary", "tasks", "--json"]) {
        Some((ms, json)) if json.contains(&format!("\"total\":{tasks}")) => figure("first_query_after_1m_tasks_ms", format!("{ms:.0}"), "ms"),
        other => eprintln!("rayr-bench: first_query_after_1m_tasks_ms: the summary did not count {tasks} tasks: {other:?}"),
    }
    match timed(&["why-died", &object, "--json"]) {
        Some((ms, _)) => figure("why_died_after_1m_tasks_ms", format!("{ms:.0}"), "ms"),
        None => eprintln!("rayr-bench: why_died_after_1m_tasks_ms: rayr why-died failed"),
    }
    let _ = std::fs::remove_dir_all(&dir);
}

/// The job `first_query_after_job` queries: 1M trivial tasks, 10k at a time.
pub(crate) fn million_child() -> rayr::Result<()> {
    rayr::init()?;
    let mut first = None;
    let mut n = 0u64;
    while n < 1_000_000 {
        let refs: Vec<rayr::ObjectRef<u64>> = (0..10_000).map(crate::noop::remote).collect();
        rayr::get_all(&refs)?;
        first.get_or_insert_with(|| refs[0].id());
        n += refs.len() as u64;
    }
    println!("tasks {n}");
    println!("object {}", first.expect("a round ran"));
    rayr::shutdown();
    Ok(())
}
