//! The static registry of remote functions, and the glue generated code calls.

use std::collections::HashMap;
use std::sync::OnceLock;

use serde::Serialize;
use serde::de::DeserializeOwned;


/// One `#[rayr::remote]` function: its stable name and how to run it from task arguments.
pub struct RemoteFunction {
    pub name: &'static str,
    pub invoke: fn(&mut ArgReader<'_>) -> Returned,
}

inventory::collect!(RemoteFunction);

pub(crate) fn lookup(name: &str) -> Option<&'static RemoteFunction> {
    static TABLE: OnceLock<HashMap<&'static str, &'static RemoteFunction>> = OnceLock::new();
    TABLE
        .get_or_init(|| inventory::iter::<RemoteFunction>.into_iter().map(|f| (f.name, f)).collect())
        .get(name)
        .copied()
}

/// One `#[rayr::actor]` type: its stable name and how to construct it from the creation's
/// arguments.
pub struct ActorClass {
    pub name: &'static str,
    pub construct: fn(&mut ArgReader<'_>) -> Result<Box<dyn std::any::Any + Send>, Returned>,
    /// Whether the type is `Sync`: only then may its `&self` methods run on several threads
    /// at once (`max_concurrency` > 1).
    pub sync: fn() -> bool,
}

/// One method of an actor type, under `class::method`.
pub struct ActorMethod {
    pub name: &'static str,
    pub invoke: fn(&mut (dyn std::any::Any + Send), &mut ArgReader<'_>) -> Returned,
    /// A `&self` method: callable with shared access (concurrently, in an actor whose type
    /// is `Sync`); `None` for `&mut self`.
    pub shared: Option<fn(&(dyn std::any::Any + Send), &mut ArgReader<'_>) -> Returned>,
}

/// Autoref specialization for [`ActorClass::sync`]: `(&SyncProbe::<T>::new()).__rayr_is_sync()`
/// is true exactly when `T: Sync` (generated code calls it with a concrete type).
pub struct SyncProbe<T>(std::marker::PhantomData<T>);

impl<T> SyncProbe<T> {
    #[allow(clippy::new_without_default)]
    pub fn new() -> Self {
        SyncProbe(std::marker::PhantomData)
    }
}

pub trait IsSync {
    fn __rayr_is_sync(&self) -> bool {
        true
    }
}
impl<T: Sync> IsSync for SyncProbe<T> {}

pub trait NotSync {
    fn __rayr_is_sync(&self) -> bool {
        false
    }
}
impl<T> NotSync for &SyncProbe<T> {}

inventory::collect!(ActorClass);
inventory::collect!(ActorMethod);

pub(crate) fn actor_class(name: &str) -> Option<&'static ActorClass> {
    static TABLE: OnceLock<HashMap<&'static str, &'static ActorClass>> = OnceLock::new();
    TABLE.get_or_init(|| inventory::iter::<ActorClass>.into_iter().map(|c| (c.name, c)).collect()).get(name).copied()
}

pub(crate) fn actor_method(name: &str) -> Option<&'static ActorMethod> {
    static TABLE: OnceLock<HashMap<&'static str, &'static ActorMethod>> = OnceLock::new();
    TABLE.get_or_init(|| inventory::iter::<ActorMethod>.into_iter().map(|m| (m.name, m)).collect()).get(name).copied()
}

/// The bytes of each argument of a task, ready to be deserialized in place.
pub struct ArgReader<'a> {
    pub(crate) args: Vec<ArgBytes<'a>>,
}

pub(crate) struct ArgBytes<'a> {
    pub bytes: std::borrow::Cow<'a, [u8]>,
    pub format: u32,
}

impl ArgReader<'_> {
    /// Deserializes argument `i`.
    pub fn arg<T: DeserializeOwned>(&mut self, i: usize) -> Result<T, String> {
        let a = self.args.get(i).ok_or_else(|| format!("the task has no argument {i}"))?;
        crate::codec::decode(&a.bytes, a.format)
    }
}

/// What a task produced: a serialized value or an error in the user's code.
pub enum Returned {
    Value(Vec<u8>),
    ApplicationError(String),
    BadArgument(String),
}

impl Returned {
    pub fn value<T: Serialize>(v: &T) -> Returned {
        match crate::codec::encode(v) {
            Ok(b) => Returned::Value(b),
            Err(e) => Returned::BadArgument(format!("the return value cannot be serialized: {e}")),
        }
    }
    pub fn application_error<E: std::fmt::Display>(e: &E) -> Returned {
        Returned::ApplicationError(e.to_string())
    }
    pub fn bad_argument(i: usize, e: String) -> Returned {
        Returned::BadArgument(format!(
            "argument {i} cannot be deserialized: {e} (was the driver built from the same source as this worker?)"
        ))
    }
}

/// The option builders every generated `f::options()` type has (see `TaskOptions`).
#[macro_export]
#[doc(hidden)]
macro_rules! option_builders {
    () => {
        pub fn num_cpus(mut self, n: f64) -> Self { self.options = self.options.num_cpus(n); self }
        pub fn num_gpus(mut self, n: f64) -> Self { self.options = self.options.num_gpus(n); self }
        pub fn memory(mut self, bytes: f64) -> Self { self.options = self.options.memory(bytes); self }
        pub fn resource(mut self, name: &str, amount: f64) -> Self { self.options = self.options.resource(name, amount); self }
        pub fn max_retries(mut self, n: i32) -> Self { self.options = self.options.max_retries(n); self }
        pub fn retry_exceptions(mut self, yes: bool) -> Self { self.options = self.options.retry_exceptions(yes); self }
        pub fn name(mut self, name: &str) -> Self { self.options = self.options.name(name); self }
        pub fn scheduling_strategy(mut self, s: &str) -> Self { self.options = self.options.scheduling_strategy(s); self }
        pub fn namespace(mut self, ns: &str) -> Self { self.options = self.options.namespace(ns); self }
        pub fn max_restarts(mut self, n: i32) -> Self { self.options = self.options.max_restarts(n); self }
        pub fn max_task_retries(mut self, n: i32) -> Self { self.options = self.options.max_task_retries(n); self }
        pub fn max_concurrency(mut self, n: u32) -> Self { self.options = self.options.max_concurrency(n); self }
        pub fn lifetime_detached(mut self) -> Self { self.options = self.options.lifetime_detached(); self }
    };
}
