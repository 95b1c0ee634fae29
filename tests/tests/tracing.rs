//! Task spans reach an OTLP receiver (a gRPC TraceService this test serves) with their
//! parent/child links across processes: the driver's `rayr.task` span is the parent of the
//! worker's `rayr.task.execute`, which is the parent of the tasks it submits.

use std::collections::HashMap;
use std::process::Command;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use opentelemetry_proto::tonic::collector::trace::v1::trace_service_server::{TraceService, TraceServiceServer};
use opentelemetry_proto::tonic::collector::trace::v1::{ExportTraceServiceRequest, ExportTraceServiceResponse};
use opentelemetry_proto::tonic::common::v1::any_value::Value;
use opentelemetry_proto::tonic::trace::v1::Span;

mod support;
use support::{run, wait_for};

const SCENARIOS: &str = env!("CARGO_BIN_EXE_scenarios");

/// Every span received, with its process's resource attributes.
type Received = Arc<Mutex<Vec<(HashMap<String, String>, Span)>>>;

struct Receiver(Received);

#[tonic::async_trait]
impl TraceService for Receiver {
    async fn export(&self, request: tonic::Request<ExportTraceServiceRequest>) -> Result<tonic::Response<ExportTraceServiceResponse>, tonic::Status> {
        for rs in request.into_inner().resource_spans {
            let attrs: HashMap<String, String> = rs
                .resource
                .iter()
                .flat_map(|r| r.attributes.iter())
                .filter_map(|kv| match kv.value.as_ref()?.value.as_ref()? {
                    Value::StringValue(s) => Some((kv.key.clone(), s.clone())),
                    _ => None,
                })
                .collect();
            for ss in rs.scope_spans {
                for span in ss.spans {
                    self.0.lock().unwrap().push((attrs.clone(), span));
                }
            }
        }
        Ok(tonic::Response::new(ExportTraceServiceResponse::default()))
    }
}

#[test]
fn task_spans_reach_an_otlp_receiver_linked_across_processes() {
    let received: Received = Default::default();
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(1).enable_all().build().unwrap();
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let address = listener.local_addr().unwrap();
    listener.set_nonblocking(true).unwrap();
    let service = TraceServiceServer::new(Receiver(received.clone()));
    rt.spawn(async move {
        let incoming = tokio_stream::wrappers::TcpListenerStream::new(tokio::net::TcpListener::from_std(listener).unwrap());
        let _ = tonic::transport::Server::builder().add_service(service).serve_with_incoming(incoming).await;
    });
    let tmp = tempfile::tempdir().unwrap();
    let out = run(
        Command::new(SCENARIOS)
            .arg("nested")
            .env("RAYR_TMPDIR", tmp.path())
            .env("OTEL_EXPORTER_OTLP_ENDPOINT", format!("http://{address}"))
            .env_remove("RAYR_ADDRESS")
            .env("RAYR_NUM_CPUS", "2"),
        Duration::from_secs(60),
    );
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let named = |name: &str| -> Vec<(HashMap<String, String>, Span)> {
        received.lock().unwrap().iter().filter(|(_, s)| s.name == name).cloned().collect()
    };
    // level1 → 2 × level2 → 1 × level3 each: five tasks, each submitted and run once.
    wait_for("five task spans and five execute spans", Duration::from_secs(20), || {
        named("rayr.task").len() == 5 && named("rayr.task.execute").len() == 5
    });
    let tasks = named("rayr.task");
    let runs = named("rayr.task.execute");
    let attr = |s: &Span, k: &str| s.attributes.iter().find(|kv| kv.key == k).and_then(|kv| match kv.value.as_ref()?.value.as_ref()? {
        Value::StringValue(v) => Some(v.clone()),
        _ => None,
    });
    // One trace for the whole tree.
    let trace = &tasks[0].1.trace_id;
    assert!(tasks.iter().chain(&runs).all(|(_, s)| &s.trace_id == trace), "one trace");
    // The root: level1, submitted by the driver, with no parent.
    let roots: Vec<&(HashMap<String, String>, Span)> = tasks.iter().filter(|(_, s)| s.parent_span_id.is_empty()).collect();
    assert_eq!(roots.len(), 1);
    let (driver, root) = roots[0];
    assert_eq!(driver["service.name"], "rayr-driver");
    assert!(attr(root, "rayr.function").unwrap().ends_with("::level1"));
    for (worker, exec) in &runs {
        // Each run is a child of the span of the task it ran, in another process.
        let (submitter, task) = tasks.iter().find(|(_, t)| t.span_id == exec.parent_span_id).expect("the execute span's parent is a task span");
        assert_eq!(attr(task, "rayr.task_id"), attr(exec, "rayr.task_id"));
        assert_eq!(worker["service.name"], "rayr-worker");
        assert_ne!(worker["process.pid"], submitter["process.pid"], "parent and child in different processes");
        assert!(exec.start_time_unix_nano >= task.start_time_unix_nano && exec.end_time_unix_nano <= task.end_time_unix_nano);
    }
    // Tasks submitted by a task are children of its run.
    for (_, t) in tasks.iter().filter(|(_, s)| !s.parent_span_id.is_empty()) {
        assert!(runs.iter().any(|(_, r)| r.span_id == t.parent_span_id), "a nested task's parent is the run that submitted it");
    }
    // And the schedule spans hang under their tasks.
    let schedules = named("rayr.task.schedule");
    assert!(schedules.len() >= 5 && schedules.iter().all(|(_, s)| tasks.iter().any(|(_, t)| t.span_id == s.parent_span_id)));
}
