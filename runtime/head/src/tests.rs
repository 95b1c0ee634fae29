//! Tests of the index over real event logs, and of the gRPC service end to end.

use rayr_logs::{EventLogWriter, Session};
use rayr_proto::event::Detail;
use rayr_proto::{
    Event, EventKind, Filter, ListRequest, TaskDetail, WorkerExit, WorkerExitType, WorkerStart,
};

use crate::{EventIndex, HeadError, start_head};

fn id(process: u8, n: u64) -> Vec<u8> {
    let mut v = vec![process; 8];
    v.extend_from_slice(&n.to_be_bytes());
    v
}

/// Events of one task's life on worker `w`; `fail` makes its one attempt fail for good.
fn task_life(task: u64, function: &str, fail: bool, t0: i64) -> Vec<Event> {
    let base = |kind: EventKind, n: i64| Event {
        id: id(0xee, task * 100 + n as u64),
        time_us: t0 + n,
        node_id: id(0xaa, 1),
        source_worker: id(0xd1, 1),
        kind: kind as i32,
        task_id: id(0xd0, task),
        job_id: id(0xbb, 1),
        worker_id: if kind == EventKind::TaskSubmitted { vec![] } else { id(0xc0, task % 3) },
        detail: Some(Detail::Task(TaskDetail {
            function: function.into(),
            r#final: fail,
            error: if kind == EventKind::TaskFailed { "panicked at 'boom'".into() } else { String::new() },
            error_type: if kind == EventKind::TaskFailed { rayr_proto::TaskErrorKind::Panic as i32 } else { 0 },
            pid: 4000 + task as u32,
            ..Default::default()
        })),
        ..Default::default()
    };
    let end = if fail { EventKind::TaskFailed } else { EventKind::TaskFinished };
    vec![
        base(EventKind::TaskSubmitted, 0),
        base(EventKind::TaskScheduled, 1),
        base(EventKind::TaskStarted, 2),
        base(end, 3),
    ]
}

fn append(session: &Session, node: &str, events: &[Event]) {
    let mut frames = Vec::new();
    for e in events {
        rayr_logs::encode_single_run_frame(e, &mut frames);
    }
    EventLogWriter::open(&session.event_log(node)).unwrap().append(&frames).unwrap();
}

fn tasks(filters: &[(&str, &str)], offset: u64, limit: u32) -> ListRequest {
    ListRequest {
        entity: "tasks".into(),
        filters: filters.iter().map(|(k, v)| Filter { key: k.to_string(), value: v.to_string() }).collect(),
        offset,
        limit,
    }
}

/// 30 tasks: every third fails; functions alternate between two names.
fn thirty_tasks() -> Vec<Event> {
    (0..30u64)
        .flat_map(|t| {
            task_life(t, if t % 2 == 0 { "demo::square" } else { "demo::cube" }, t % 3 == 0, 1_000 * t as i64)
        })
        .collect()
}

#[test]
fn lists_tasks_with_filters_and_paging() {
    let tmp = tempfile::tempdir().unwrap();
    let session = Session::create(tmp.path()).unwrap();
    append(&session, "n1", &thirty_tasks());
    let index = EventIndex::open(&session).unwrap();
    assert_eq!(index.catch_up(&session).unwrap(), 120);
    assert_eq!(index.events_indexed().unwrap(), 120);

    let all = index.list(&tasks(&[], 0, 0)).unwrap();
    assert_eq!((all.total, all.tasks.len()), (30, 30));
    let failed = index.list(&tasks(&[("state", "failed")], 0, 0)).unwrap();
    assert_eq!(failed.total, 10);
    assert!(failed.tasks.iter().all(|t| t.state == "FAILED" && t.error_type == "panic" && t.finished_us > 0));
    // `function` matches the full path or its last segment; filters combine with AND.
    let sq = index.list(&tasks(&[("function", "square"), ("state", "FINISHED")], 0, 0)).unwrap();
    assert_eq!(sq.total, 10); // even t, not divisible by 3: 15 - 5
    assert_eq!(index.list(&tasks(&[("function", "demo::cube")], 0, 0)).unwrap().total, 15);
    assert_eq!(index.list(&tasks(&[("function", "ube")], 0, 0)).unwrap().total, 0);
    // Id filters take prefixes and the short form.
    let w = rayr_logs::hex(&id(0xc0, 1));
    assert_eq!(index.list(&tasks(&[("worker_id", &w)], 0, 0)).unwrap().total, 10);
    let short = crate::short_id(&id(0xc0, 1));
    assert_eq!(index.list(&tasks(&[("worker_id", &short)], 0, 0)).unwrap().total, 10);
    assert_eq!(index.list(&tasks(&[("pid", "4007")], 0, 0)).unwrap().total, 1);
    let row = &index.list(&tasks(&[("pid", "4007")], 0, 0)).unwrap().tasks[0];
    assert_eq!(row.owner, id(0xd1, 1));
    assert_eq!(row.submitted_us, 7_000);
    assert_eq!(row.function, "demo::cube");
    assert_eq!(row.job_id, id(0xbb, 1));

    // Pages cover every row exactly once; `total` counts all matches on every page.
    let mut seen = Vec::new();
    let mut offset = 0;
    loop {
        let page = index.list(&tasks(&[], offset, 7)).unwrap();
        assert_eq!(page.total, 30);
        if page.tasks.is_empty() {
            break;
        }
        offset += page.tasks.len() as u64;
        seen.extend(page.tasks.into_iter().map(|t| t.task_id));
    }
    seen.sort();
    seen.dedup();
    assert_eq!(seen.len(), 30);

    // Bad input names what is valid.
    let err = index.list(&tasks(&[("colour", "red")], 0, 0)).unwrap_err().to_string();
    assert!(err.contains("colour") && err.contains("function") && err.contains("state"), "{err}");
    let err = index.list(&ListRequest { entity: "gizmos".into(), ..Default::default() }).unwrap_err().to_string();
    assert!(err.contains("tasks, objects, workers, nodes, jobs, actors"), "{err}");
    assert!(index.list(&tasks(&[("pid", "many")], 0, 0)).is_err());
}

#[test]
fn reopening_indexes_only_what_the_logs_gained() {
    let tmp = tempfile::tempdir().unwrap();
    let session = Session::create(tmp.path()).unwrap();
    let events = thirty_tasks();
    append(&session, "n1", &events[..40]);
    append(&session, "n2", &events[40..60]);
    {
        let index = EventIndex::open(&session).unwrap();
        assert_eq!(index.catch_up(&session).unwrap(), 60);
        assert_eq!(index.catch_up(&session).unwrap(), 0);
    }
    // While the head was down both logs grew; a torn frame sits at the end of one.
    append(&session, "n1", &events[60..100]);
    append(&session, "n2", &events[100..]);
    let mut torn = Vec::new();
    rayr_logs::encode_single_run_frame(&events[0], &mut torn);
    std::fs::OpenOptions::new()
        .append(true)
        .open(session.event_log("n2"))
        .and_then(|mut f| std::io::Write::write_all(&mut f, &torn[..torn.len() - 3]))
        .unwrap();

    let index = EventIndex::open(&session).unwrap();
    assert_eq!(index.catch_up(&session).unwrap(), 60);
    assert_eq!(index.events_indexed().unwrap(), 120);
    assert_eq!(index.list(&tasks(&[], 0, 0)).unwrap().total, 30);
    // The torn frame is not indexed; the offset stops before it.
    let n2 = index.offsets().unwrap().into_iter().find(|(n, _)| n == "events-n2.log").unwrap().1;
    assert_eq!(n2 + torn.len() as u64 - 3, std::fs::metadata(session.event_log("n2")).unwrap().len());
    // Each event id names exactly one event: nothing was indexed twice.
    for e in &events {
        assert_eq!(index.events(Some(&e.id), e.kind, 0, 0).unwrap().len(), 1);
    }
}

/// Tasks by state (the head's `rayr_tasks` gauge) count what an earlier head indexed too,
/// and move with what this one indexes.
#[test]
fn tasks_by_state_count_rows_an_earlier_head_indexed() {
    let tmp = tempfile::tempdir().unwrap();
    let session = Session::create(tmp.path()).unwrap();
    let events = thirty_tasks();
    // An earlier head indexed the first ten tasks' submissions and starts only.
    let started: Vec<Event> = events[..40].iter().filter(|e| e.kind != EventKind::TaskFinished as i32 && e.kind != EventKind::TaskFailed as i32).cloned().collect();
    append(&session, "n1", &started);
    EventIndex::open(&session).unwrap().catch_up(&session).unwrap();
    let index = EventIndex::open(&session).unwrap();
    let count = |index: &EventIndex, state: &str| index.task_states().into_iter().find(|(s, _)| s == state).map_or(0, |(_, n)| n);
    assert_eq!(count(&index, "RUNNING"), 10);
    // This head indexes their ends and twenty more tasks.
    let ends: Vec<Event> = events[..40].iter().filter(|e| e.kind == EventKind::TaskFinished as i32 || e.kind == EventKind::TaskFailed as i32).cloned().collect();
    append(&session, "n1", &ends);
    append(&session, "n1", &events[40..]);
    index.catch_up(&session).unwrap();
    assert_eq!(count(&index, "RUNNING"), 0);
    assert_eq!(count(&index, "FINISHED") + count(&index, "FAILED"), 30);
    assert_eq!(count(&index, "FAILED"), 10);
}

#[test]
fn a_second_opener_is_told_the_index_is_in_use() {
    let tmp = tempfile::tempdir().unwrap();
    let session = Session::create(tmp.path()).unwrap();
    let _first = EventIndex::open(&session).unwrap();
    match EventIndex::open(&session) {
        Err(e @ HeadError::Locked { .. }) => assert!(e.to_string().contains("--address"), "{e}"),
        Err(e) => panic!("expected Locked, got {e}"),
        Ok(_) => panic!("expected Locked, got an index"),
    }
}

#[test]
fn events_by_id_kind_time_and_cursor() {
    let tmp = tempfile::tempdir().unwrap();
    let session = Session::create(tmp.path()).unwrap();
    let mut events = thirty_tasks();
    // An event caused by another names its cause: asking for the cause finds both.
    events[5].cause = events[3].id.clone();
    append(&session, "n1", &events);
    let index = EventIndex::open_in_memory().unwrap();
    index.catch_up(&session).unwrap();

    let task1 = index.events(Some(&id(0xd0, 1)), 0, 0, 0).unwrap();
    assert_eq!(task1.len(), 4);
    assert!(task1.windows(2).all(|w| w[0].0 < w[1].0));
    let caused = index.events(Some(&events[3].id), 0, 0, 0).unwrap();
    assert_eq!(caused.len(), 2);
    assert_eq!(index.events(None, EventKind::TaskFailed as i32, 0, 0).unwrap().len(), 10);
    assert_eq!(index.events(None, 0, 29_000, 0).unwrap().len(), 4);
    let after = index.events(None, 0, 0, 100).unwrap();
    assert_eq!(after.len(), 20);
    assert_eq!(after[0].0, 101);
    // A worker's id finds the tasks it ran (10 tasks × 3 events naming it).
    assert_eq!(index.events(Some(&id(0xc0, 2)), 0, 0, 0).unwrap().len(), 30);
}

#[test]
fn resolves_prefixes_and_short_forms() {
    let tmp = tempfile::tempdir().unwrap();
    let session = Session::create(tmp.path()).unwrap();
    append(&session, "n1", &thirty_tasks());
    let index = EventIndex::open_in_memory().unwrap();
    index.catch_up(&session).unwrap();

    let task7 = id(0xd0, 7);
    let full = rayr_logs::hex(&task7);
    assert_eq!(index.resolve_unique(&full).unwrap(), task7);
    assert_eq!(index.resolve_unique(&crate::short_id(&task7)).unwrap(), task7);
    // Odd lengths work: only one node id starts with aaa.
    assert_eq!(index.resolve_unique("aaa").unwrap(), id(0xaa, 1));
    match index.resolve_unique(&full[..full.len() - 1]) {
        Err(HeadError::AmbiguousId { total, .. }) => assert_eq!(total, 16), // tasks 0x00..=0x0f
        other => panic!("{other:?}"),
    }
    // All of process 0xd0's ids share 16 digits: a prefix that short is ambiguous.
    match index.resolve_unique("d0d0d0d0") {
        Err(e @ HeadError::AmbiguousId { .. }) => {
            let HeadError::AmbiguousId { total, candidates, kinds, .. } = &e else { unreachable!() };
            assert_eq!(*total, 30);
            assert_eq!(candidates.len(), crate::MAX_ID_MATCHES);
            // Each candidate says what it is: these are tasks.
            assert!(kinds.iter().all(|k| *k == "task"), "{kinds:?}");
            assert!(e.to_string().lines().skip(1).all(|l| l.ends_with("(task)")), "{e}");
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(index.resolve_prefix("d0d0").unwrap().len(), crate::MAX_ID_MATCHES);
    assert!(matches!(index.resolve_unique("1234"), Err(HeadError::UnknownId { .. })));
    assert!(matches!(index.resolve_unique("not-hex"), Err(HeadError::BadRequest(_))));
}

#[test]
fn views_agree_whatever_order_the_logs_deliver() {
    // The same task's events split over two node logs, the end before the start.
    let tmp = tempfile::tempdir().unwrap();
    let session = Session::create(tmp.path()).unwrap();
    let life = task_life(1, "demo::square", false, 0);
    append(&session, "a", &life[2..]);
    append(&session, "b", &life[..2]);
    // A worker exits before its start is indexed.
    let worker = id(0xc0, 9);
    let started = Event {
        kind: EventKind::WorkerStarted as i32,
        worker_id: worker.clone(),
        node_id: id(0xaa, 1),
        detail: Some(Detail::WorkerStart(WorkerStart { pid: 77, ..Default::default() })),
        time_us: 1,
        ..Default::default()
    };
    let exited = Event {
        kind: EventKind::WorkerExited as i32,
        worker_id: worker.clone(),
        detail: Some(Detail::WorkerExit(WorkerExit {
            exit_type: WorkerExitType::NodeOutOfMemory as i32,
            exit_code: -1,
            signal: 9,
            ..Default::default()
        })),
        time_us: 2,
        ..Default::default()
    };
    append(&session, "a", std::slice::from_ref(&exited));
    append(&session, "b", std::slice::from_ref(&started));

    let index = EventIndex::open_in_memory().unwrap();
    index.catch_up(&session).unwrap();
    let row = &index.list(&tasks(&[], 0, 0)).unwrap().tasks[0];
    assert_eq!(row.state, "FINISHED");
    assert_eq!(row.worker_id, id(0xc0, 1));
    assert_eq!(row.submitted_us, 0);
    assert_eq!(row.finished_us, 3);

    let workers = index.list(&ListRequest { entity: "workers".into(), ..Default::default() }).unwrap();
    let w = &workers.workers[0];
    assert_eq!((w.state.as_str(), w.pid, w.signal), ("DEAD", 77, 9));
    assert_eq!(w.exit_type, "NODE_OUT_OF_MEMORY");
    let oom = ListRequest {
        entity: "workers".into(),
        filters: vec![Filter { key: "exit_type".into(), value: "node_out_of_memory".into() }],
        ..Default::default()
    };
    assert_eq!(index.list(&oom).unwrap().total, 1);
}

#[test]
fn head_serves_list_and_events_over_grpc() {
    use rayr_proto::head_client::HeadClient;
    use rayr_proto::{ClusterInfoRequest, EventsRequest};

    let tmp = tempfile::tempdir().unwrap();
    let session = Session::create(tmp.path()).unwrap();
    let events = thirty_tasks();
    append(&session, "n1", &events[..60]);
    let head = start_head(session.clone(), "127.0.0.1:0".parse().unwrap()).unwrap();
    let addr = head.address();
    assert_ne!(addr.port(), 0);
    assert_eq!(session.head_address().unwrap(), addr.to_string());

    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    rt.block_on(async {
        let mut client = HeadClient::connect(format!("http://{addr}")).await.unwrap();
        let info = client.cluster_info(ClusterInfoRequest::default()).await.unwrap().into_inner();
        assert_eq!(info.events_indexed, 60);
        assert_eq!(info.head_pid, std::process::id());

        // Start following task 20's events before they are written.
        let follow = EventsRequest { id: id(0xd0, 20), follow: true, ..Default::default() };
        let mut stream = client.events(follow).await.unwrap().into_inner();

        // The indexer picks up what the log gains while the head runs.
        append(&session, "n1", &events[60..]);
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        loop {
            let reply = client.list(tasks(&[], 0, 0)).await.unwrap().into_inner();
            if reply.total == 30 {
                break;
            }
            assert!(std::time::Instant::now() < deadline, "indexer did not catch up");
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        }
        for want in
            [EventKind::TaskSubmitted, EventKind::TaskScheduled, EventKind::TaskStarted, EventKind::TaskFinished]
        {
            let ev = stream.message().await.unwrap().unwrap();
            assert_eq!(ev.kind, want as i32);
        }

        // An id pattern goes in metadata; the reply says which id it named.
        let mut req = tonic::Request::new(EventsRequest::default());
        req.metadata_mut()
            .insert(crate::ID_PATTERN_METADATA, crate::short_id(&id(0xd0, 3)).replace('…', "..").parse().unwrap());
        let resp = client.events(req).await.unwrap();
        assert_eq!(resp.metadata().get(crate::ID_PATTERN_METADATA).unwrap(), rayr_logs::hex(&id(0xd0, 3)).as_str());
        let mut stream3 = resp.into_inner();
        let mut n = 0;
        while stream3.message().await.unwrap().is_some() {
            n += 1;
        }
        assert_eq!(n, 4);

        let mut req = tonic::Request::new(EventsRequest::default());
        req.metadata_mut().insert(crate::ID_PATTERN_METADATA, "d0d0".parse().unwrap());
        let err = client.events(req).await.unwrap_err();
        assert_eq!(err.code(), tonic::Code::InvalidArgument);
        assert!(err.message().contains("matches"), "{}", err.message());

        let err = client.list(tasks(&[("nope", "1")], 0, 0)).await.unwrap_err();
        assert_eq!(err.code(), tonic::Code::InvalidArgument);
    });

    // Stopping finishes promptly once clients hang up, and removes the address file.
    drop(rt);
    let t = std::time::Instant::now();
    head.shutdown();
    assert!(t.elapsed() < std::time::Duration::from_secs(1), "{:?}", t.elapsed());
    assert!(session.head_address().is_none());
    let index = EventIndex::open(&session).unwrap();
    assert_eq!(index.catch_up(&session).unwrap(), 0);
    assert_eq!(index.events_indexed().unwrap(), 120);
}

/// Set in the child of `a_crash_loses_no_events_and_indexes_none_twice`.
const CRASH_CHILD_ENV: &str = "RAYR_HEAD_TEST_CRASH_SESSION";

/// The child half of the crash test: indexes, makes part of it durable, indexes more with
/// cheap commits, and dies without closing the database.
#[test]
fn crash_child() {
    let Some(dir) = std::env::var_os(CRASH_CHILD_ENV) else { return };
    let session = Session::open(dir);
    let events = thirty_tasks();
    let index = EventIndex::open(&session).unwrap();
    append(&session, "n1", &events[..40]);
    assert_eq!(index.catch_up(&session).unwrap(), 40);
    index.flush().unwrap();
    append(&session, "n1", &events[40..60]);
    append(&session, "n2", &events[60..80]);
    assert_eq!(index.catch_up(&session).unwrap(), 40);
    // SAFETY: ends the process at once, as a crash would: no destructor closes the index.
    unsafe { libc::_exit(0) }
}

#[test]
fn a_crash_loses_no_events_and_indexes_none_twice() {
    let tmp = tempfile::tempdir().unwrap();
    let session = Session::create(tmp.path()).unwrap();
    let status = std::process::Command::new(std::env::current_exe().unwrap())
        .args(["--exact", "tests::crash_child", "--nocapture", "--test-threads=1"])
        .env(CRASH_CHILD_ENV, &session.dir)
        .status()
        .unwrap();
    assert!(status.success());

    let events = thirty_tasks();
    append(&session, "n2", &events[80..]);
    let index = EventIndex::open(&session).unwrap();
    // The durable part survived; the cheap commits after it may or may not have.
    let survived = index.events_indexed().unwrap();
    assert!(survived == 40 || survived == 80, "{survived}");
    assert_eq!(index.catch_up(&session).unwrap(), 120 - survived);
    assert_eq!(index.events_indexed().unwrap(), 120);
    for e in &events {
        assert_eq!(index.events(Some(&e.id), e.kind, 0, 0).unwrap().len(), 1);
    }
    assert_eq!(index.list(&tasks(&[("state", "failed")], 0, 0)).unwrap().total, 10);
}
