//! [`PendingSpec`]: a task's spec as its submitter keeps it until the task is done, and
//! its encoding as the `TaskSpec` pushed to a worker.
//!
//! A driver may hold a million tasks queued (behind a dependency, or for a worker), so
//! what each keeps is small: ids inline rather than in `Vec`s, the function's static
//! name rather than a copy, what only actors use boxed, and nothing that every task of
//! this process shares (job, owner, its address and node: encoded once per process, see
//! [`push_tail`], and appended to each push). The wire format is `rayr_proto::TaskSpec`
//! unchanged: a protobuf message may carry its fields in any order.

use prost::encoding::{self, WireType};
use rayr_logs::Id;
use rayr_proto::{Message, TaskArg, TaskSpec};

/// A pending task's spec (see the module doc). Field names follow `TaskSpec`.
#[derive(Clone)]
pub(crate) struct PendingSpec {
    pub task_id: Id,
    pub return_id: Id,
    /// The registered name of its function (generated code names it statically).
    pub function: &'static str,
    pub attempt: u32,
    pub max_retries: u32,
    pub retry_exceptions: bool,
    pub args: Vec<TaskArg>,
    /// An actor's creation or call: the actor.
    pub actor_id: Option<Id>,
    pub actor_creation: bool,
    pub actor_max_concurrency: u32,
    /// A named actor's creation: "namespace/name".
    pub actor_name: Option<Box<str>>,
    /// The TASK_SCHEDULED event of its current push (the worker's cause), once pushed.
    pub scheduled_event: Option<Id>,
    /// Tracing on: its trace id and its submitter's span id.
    pub trace: Option<Box<([u8; 16], [u8; 8])>>,
}

impl PendingSpec {
    /// A spec with no arguments, attempt 0, and nothing set for actors or tracing.
    pub fn new(task_id: Id, return_id: Id, function: &'static str) -> PendingSpec {
        PendingSpec {
            task_id,
            return_id,
            function,
            attempt: 0,
            max_retries: 0,
            retry_exceptions: false,
            args: Vec::new(),
            actor_id: None,
            actor_creation: false,
            actor_max_concurrency: 0,
            actor_name: None,
            scheduled_event: None,
            trace: None,
        }
    }

    /// Bytes of its `TaskSpec` encoding (without a tail).
    pub fn encoded_len(&self) -> usize {
        let t = self.trace.as_deref();
        bytes_len(1, &self.task_id)
            + bytes_len(3, self.function.as_bytes())
            + uint32_len(4, self.attempt)
            + encoding::message::encoded_len_repeated(5, &self.args)
            + self.scheduled_event.as_ref().map_or(0, |e| bytes_len(8, e))
            + uint32_len(9, self.max_retries)
            + bytes_len(10, &self.return_id)
            + bool_len(11, self.retry_exceptions)
            + self.actor_id.as_ref().map_or(0, |a| bytes_len(12, a))
            + bool_len(13, self.actor_creation)
            + self.actor_name.as_deref().map_or(0, |n| bytes_len(14, n.as_bytes()))
            + uint32_len(16, self.actor_max_concurrency)
            + t.map_or(0, |(trace, span)| bytes_len(18, trace) + bytes_len(19, span))
    }

    /// Appends its `TaskSpec` encoding (the message's fields, without a length).
    pub fn encode_raw(&self, buf: &mut Vec<u8>) {
        put_bytes(1, &self.task_id, buf);
        put_bytes(3, self.function.as_bytes(), buf);
        put_uint32(4, self.attempt, buf);
        encoding::message::encode_repeated(5, &self.args, buf);
        if let Some(e) = &self.scheduled_event {
            put_bytes(8, e, buf);
        }
        put_uint32(9, self.max_retries, buf);
        put_bytes(10, &self.return_id, buf);
        put_bool(11, self.retry_exceptions, buf);
        if let Some(a) = &self.actor_id {
            put_bytes(12, a, buf);
        }
        put_bool(13, self.actor_creation, buf);
        if let Some(n) = self.actor_name.as_deref() {
            put_bytes(14, n.as_bytes(), buf);
        }
        put_uint32(16, self.actor_max_concurrency, buf);
        if let Some((trace, span)) = self.trace.as_deref() {
            put_bytes(18, trace, buf);
            put_bytes(19, span, buf);
        }
    }
}

/// Appends `PeerMessage { push: spec }` as a frame, with `tail` (see [`push_tail`]) after
/// the spec's own fields.
pub(crate) fn encode_push_frame(spec: &PendingSpec, tail: &[u8], buf: &mut Vec<u8>) {
    let spec_len = spec.encoded_len() + tail.len();
    let body_len = 1 + encoding::encoded_len_varint(spec_len as u64) + spec_len;
    buf.extend_from_slice(&(body_len as u32).to_le_bytes());
    encoding::encode_key(2, WireType::LengthDelimited, buf);
    encoding::encode_varint(spec_len as u64, buf);
    spec.encode_raw(buf);
    buf.extend_from_slice(tail);
}

/// The `TaskSpec` fields every task submitted by one process shares, encoded: its job,
/// itself as owner, its address and its node.
pub(crate) fn push_tail(job: Id, owner: Id, address: &str, node: Id) -> Vec<u8> {
    let shared = TaskSpec { job_id: job.to_vec(), owner: owner.to_vec(), owner_address: address.to_string(), owner_node: node.to_vec(), ..Default::default() };
    let mut tail = Vec::with_capacity(shared.encoded_len());
    shared.encode_raw(&mut tail);
    tail
}

// Field encoders: proto3 leaves default values out, as prost does.

fn bytes_len(tag: u32, v: &[u8]) -> usize {
    if v.is_empty() { 0 } else { encoding::key_len(tag) + encoding::encoded_len_varint(v.len() as u64) + v.len() }
}

fn put_bytes(tag: u32, v: &[u8], buf: &mut Vec<u8>) {
    if !v.is_empty() {
        encoding::encode_key(tag, WireType::LengthDelimited, buf);
        encoding::encode_varint(v.len() as u64, buf);
        buf.extend_from_slice(v);
    }
}

fn uint32_len(tag: u32, v: u32) -> usize {
    if v == 0 { 0 } else { encoding::key_len(tag) + encoding::encoded_len_varint(v as u64) }
}

fn put_uint32(tag: u32, v: u32, buf: &mut Vec<u8>) {
    if v != 0 {
        encoding::encode_key(tag, WireType::Varint, buf);
        encoding::encode_varint(v as u64, buf);
    }
}

fn bool_len(tag: u32, v: bool) -> usize {
    if v { encoding::key_len(tag) + 1 } else { 0 }
}

fn put_bool(tag: u32, v: bool, buf: &mut Vec<u8>) {
    if v {
        encoding::encode_key(tag, WireType::Varint, buf);
        buf.push(1);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rayr_proto::{PeerMessage, peer_message, task_arg};

    fn decode_push(frame: &[u8]) -> TaskSpec {
        let body_len = u32::from_le_bytes(frame[..4].try_into().unwrap()) as usize;
        assert_eq!(frame.len(), 4 + body_len, "the frame's length prefix covers its body");
        match PeerMessage::decode(&frame[4..]).expect("a PeerMessage").body {
            Some(peer_message::Body::Push(spec)) => spec,
            other => panic!("not a push: {other:?}"),
        }
    }

    #[test]
    fn a_pushed_spec_decodes_as_the_task_spec_with_every_field() {
        let mut s = PendingSpec::new([1; 16], [2; 16], "m::f");
        s.attempt = 3;
        s.max_retries = 4;
        s.retry_exceptions = true;
        s.args = vec![
            TaskArg { arg: Some(task_arg::Arg::InlineValue(vec![9, 8, 7])) },
            TaskArg { arg: Some(task_arg::Arg::InlineValue(Vec::new())) },
        ];
        s.actor_id = Some([5; 16]);
        s.actor_creation = true;
        s.actor_max_concurrency = 8;
        s.actor_name = Some("ns/name".into());
        s.scheduled_event = Some([6; 16]);
        s.trace = Some(Box::new(([7; 16], [8; 8])));
        let tail = push_tail([10; 16], [11; 16], "/tmp/sock|127.0.0.1:5", [12; 16]);
        let mut frame = Vec::new();
        encode_push_frame(&s, &tail, &mut frame);
        let want = TaskSpec {
            task_id: vec![1; 16],
            job_id: vec![10; 16],
            function: "m::f".into(),
            attempt: 3,
            args: s.args.clone(),
            owner: vec![11; 16],
            owner_address: "/tmp/sock|127.0.0.1:5".into(),
            scheduled_event: vec![6; 16],
            max_retries: 4,
            return_id: vec![2; 16],
            retry_exceptions: true,
            actor_id: vec![5; 16],
            actor_creation: true,
            actor_name: "ns/name".into(),
            actor_detached: false,
            actor_max_concurrency: 8,
            owner_node: vec![12; 16],
            trace_id: vec![7; 16],
            parent_span_id: vec![8; 8],
        };
        assert_eq!(decode_push(&frame), want);
        assert_eq!(s.encoded_len() + tail.len(), want.encoded_len());
    }

    #[test]
    fn a_plain_tasks_spec_leaves_actor_and_trace_fields_empty() {
        let s = PendingSpec::new([1; 16], [2; 16], "m::g");
        let mut frame = Vec::new();
        encode_push_frame(&s, &[], &mut frame);
        let got = decode_push(&frame);
        assert_eq!(got, TaskSpec { task_id: vec![1; 16], return_id: vec![2; 16], function: "m::g".into(), ..Default::default() });
        assert_eq!(s.encoded_len(), got.encoded_len());
    }
}
