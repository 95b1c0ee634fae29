//! Task spans, exported with OpenTelemetry's protocol (OTLP over gRPC) when
//! `OTEL_EXPORTER_OTLP_ENDPOINT` is set in the driver's environment (its workers, on every
//! node, get it from their agent).
//!
//! A task is one trace across processes and nodes: `rayr.task` in the submitter, from the
//! submit to the result (status error when it failed); `rayr.task.schedule` under it, until
//! the task is pushed to a worker; `rayr.task.execute` in the worker that ran it, a child
//! of the submitter's span through the context the task spec carries (`trace_id`,
//! `parent_span_id`). Tasks a task submits are children of its execute span. Nothing is
//! recorded when the variable is not set: the hot path pays one relaxed load.
//!
//! Spans go to a background thread that sends them in batches (at most every 200 ms) with
//! the generated OTLP client (`opentelemetry-proto`); a collector that does not answer
//! costs spans, never the tasks.

use std::cell::Cell;
use std::sync::OnceLock;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::collector::trace::v1::trace_service_client::TraceServiceClient;
use opentelemetry_proto::tonic::common::v1::{AnyValue, InstrumentationScope, KeyValue, any_value};
use opentelemetry_proto::tonic::resource::v1::Resource;
use opentelemetry_proto::tonic::trace::v1::{ResourceSpans, ScopeSpans, Span, Status, span, status};

/// The environment variable OpenTelemetry's SDKs read.
pub const ENDPOINT_VAR: &str = "OTEL_EXPORTER_OTLP_ENDPOINT";

static ENABLED: AtomicBool = AtomicBool::new(false);
static SINK: OnceLock<crossbeam_channel::Sender<Msg>> = OnceLock::new();

enum Msg {
    Span(Box<Span>),
    /// Send what is held, then say so.
    Flush(crossbeam_channel::Sender<()>),
}

thread_local! {
    /// The span of the task this thread runs now: tasks it submits are its children.
    static CURRENT: Cell<Option<([u8; 16], [u8; 8])>> = const { Cell::new(None) };
}

/// Whether spans are recorded in this process.
#[inline]
pub fn enabled() -> bool {
    ENABLED.load(Ordering::Relaxed)
}

/// The collector's address, if tracing is on (what a driver hands its workers).
pub fn endpoint() -> Option<String> {
    std::env::var(ENDPOINT_VAR).ok().filter(|e| !e.trim().is_empty())
}

/// Starts exporting this process's spans if `OTEL_EXPORTER_OTLP_ENDPOINT` is set.
/// `service` names the process (`rayr-driver`, `rayr-worker`), `attrs` describe it.
pub fn init(service: &str, attrs: Vec<(&'static str, String)>) {
    let Some(endpoint) = endpoint() else { return };
    if SINK.get().is_some() {
        return;
    }
    let endpoint = if endpoint.contains("://") { endpoint } else { format!("http://{endpoint}") };
    let (tx, rx) = crossbeam_channel::bounded::<Msg>(16_384);
    let mut resource = vec![kv("service.name", service.to_string()), kv("process.pid", std::process::id().to_string())];
    resource.extend(attrs.into_iter().map(|(k, v)| kv(k, v)));
    let started = std::thread::Builder::new().name("rayr-otlp".into()).spawn(move || export_loop(endpoint, resource, rx));
    if started.is_ok() && SINK.set(tx).is_ok() {
        ENABLED.store(true, Ordering::Relaxed);
    }
}

/// Sends what is held now (waiting up to `limit`): before the process ends.
pub fn flush(limit: Duration) {
    let Some(tx) = SINK.get() else { return };
    let (done_tx, done) = crossbeam_channel::bounded(1);
    if tx.send_timeout(Msg::Flush(done_tx), limit).is_ok() {
        let _ = done.recv_timeout(limit);
    }
}

/// Ids for a new span: in the trace of the task this thread runs, else a new trace.
pub fn new_span() -> (([u8; 16], [u8; 8]), Option<[u8; 8]>) {
    let span = random_span_id();
    match CURRENT.with(Cell::get) {
        Some((trace, parent)) => ((trace, span), Some(parent)),
        None => ((random_trace_id(), span), None),
    }
}

/// Marks (or clears) the span of the task this thread runs.
pub fn set_current(ctx: Option<([u8; 16], [u8; 8])>) {
    CURRENT.with(|c| c.set(ctx));
}

pub fn random_span_id() -> [u8; 8] {
    let id = rayr_logs::new_id();
    let mut s = [0u8; 8];
    s.copy_from_slice(&id[..8]);
    // A span id of zeros is invalid.
    if s == [0; 8] {
        s[7] = 1;
    }
    s
}

fn random_trace_id() -> [u8; 16] {
    rayr_logs::new_id()
}

/// Unix time in nanoseconds.
pub fn now_ns() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_nanos() as u64)
}

fn kv(key: &str, value: String) -> KeyValue {
    KeyValue { key: key.to_string(), value: Some(AnyValue { value: Some(any_value::Value::StringValue(value)) }) }
}

/// One finished span.
pub struct Finished<'a> {
    pub name: &'static str,
    pub ids: ([u8; 16], [u8; 8]),
    pub parent: Option<[u8; 8]>,
    pub start_ns: u64,
    pub end_ns: u64,
    pub kind: span::SpanKind,
    pub attrs: Vec<(&'static str, String)>,
    /// Set: the span failed, with this message.
    pub error: Option<&'a str>,
}

/// Hands a finished span to the exporter (dropped if it is far behind).
pub fn record(s: Finished<'_>) {
    let Some(tx) = SINK.get() else { return };
    let span = Span {
        trace_id: s.ids.0.to_vec(),
        span_id: s.ids.1.to_vec(),
        parent_span_id: s.parent.map(|p| p.to_vec()).unwrap_or_default(),
        name: s.name.to_string(),
        kind: s.kind as i32,
        start_time_unix_nano: s.start_ns,
        end_time_unix_nano: s.end_ns.max(s.start_ns),
        attributes: s.attrs.into_iter().map(|(k, v)| kv(k, v)).collect(),
        status: Some(match s.error {
            Some(m) => Status { message: m.to_string(), code: status::StatusCode::Error as i32 },
            None => Status { message: String::new(), code: status::StatusCode::Ok as i32 },
        }),
        ..Default::default()
    };
    let _ = tx.try_send(Msg::Span(Box::new(span)));
}

fn export_loop(endpoint: String, resource: Vec<KeyValue>, rx: crossbeam_channel::Receiver<Msg>) {
    let Ok(rt) = tokio::runtime::Builder::new_current_thread().enable_all().build() else { return };
    let mut client: Option<TraceServiceClient<tonic::transport::Channel>> = None;
    let mut batch: Vec<Span> = Vec::new();
    let mut sent_at = std::time::Instant::now();
    loop {
        let (msg, closed) = match rx.recv_timeout(Duration::from_millis(200)) {
            Ok(m) => (Some(m), false),
            Err(crossbeam_channel::RecvTimeoutError::Timeout) => (None, false),
            Err(crossbeam_channel::RecvTimeoutError::Disconnected) => (None, true),
        };
        let mut flushed = None;
        match msg {
            Some(Msg::Span(s)) => {
                batch.push(*s);
                // More may be waiting: take them in the same batch.
                while batch.len() < 512 {
                    match rx.try_recv() {
                        Ok(Msg::Span(s)) => batch.push(*s),
                        Ok(Msg::Flush(done)) => {
                            flushed = Some(done);
                            break;
                        }
                        Err(_) => break,
                    }
                }
                // Sent when full, asked for, or 200 ms after the last send.
                if batch.len() < 512 && flushed.is_none() && sent_at.elapsed() < Duration::from_millis(200) {
                    continue;
                }
            }
            Some(Msg::Flush(done)) => flushed = Some(done),
            None => {}
        }
        if !batch.is_empty() {
            sent_at = std::time::Instant::now();
            let request = ExportTraceServiceRequest {
                resource_spans: vec![ResourceSpans {
                    resource: Some(Resource { attributes: resource.clone(), ..Default::default() }),
                    scope_spans: vec![ScopeSpans {
                        scope: Some(InstrumentationScope { name: "rayr".into(), version: env!("CARGO_PKG_VERSION").into(), ..Default::default() }),
                        spans: std::mem::take(&mut batch),
                        schema_url: String::new(),
                    }],
                    schema_url: String::new(),
                }],
            };
            rt.block_on(async {
                if client.is_none() {
                    let connect = tonic::transport::Endpoint::from_shared(endpoint.clone()).map(|e| e.connect_timeout(Duration::from_secs(2)));
                    if let Ok(e) = connect
                        && let Ok(Ok(channel)) = tokio::time::timeout(Duration::from_secs(3), e.connect()).await
                    {
                        client = Some(TraceServiceClient::new(channel));
                    }
                }
                if let Some(c) = client.as_mut()
                    && !matches!(tokio::time::timeout(Duration::from_secs(5), c.export(request)).await, Ok(Ok(_)))
                {
                    // Unreachable or refused: these spans are lost; try a new connection next time.
                    client = None;
                }
            });
        }
        if let Some(done) = flushed {
            let _ = done.send(());
        }
        if closed {
            return;
        }
    }
}
