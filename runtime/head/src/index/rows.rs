//! The compact rows of the task and object views, and the dictionaries they name things by.
//!
//! There are as many task and object rows as tasks, so they are small: strings that repeat
//! (function names, error types, locations) and ids that repeat (workers, nodes, jobs,
//! owners) are numbers into a dictionary; only text that is each row's own (an error) is
//! kept in the row. `to_proto` gives the rows `rayr list` shows.

use rayr_logs::Id;
use rayr_proto::{ObjectRow, TaskRow};

use super::keys::{FxHashMap, Key};
use super::table::{Reader, varint};

/// Interned strings; 0 is "".
#[derive(Default, Clone)]
pub(crate) struct Names {
    list: Vec<Box<str>>,
    map: FxHashMap<Box<str>, u32>,
}

impl Names {
    pub(crate) fn from_list(list: Vec<String>) -> Names {
        let mut names = Names::default();
        for s in list.into_iter().skip(1) {
            names.push(s.into_boxed_str());
        }
        names
    }

    fn push(&mut self, s: Box<str>) -> u32 {
        if self.list.is_empty() {
            self.list.push("".into());
        }
        let i = self.list.len() as u32;
        self.map.insert(s.clone(), i);
        self.list.push(s);
        i
    }

    #[inline]
    pub(crate) fn intern(&mut self, s: &str) -> u32 {
        if s.is_empty() {
            return 0;
        }
        match self.map.get(s) {
            Some(i) => *i,
            None => self.push(s.into()),
        }
    }

    #[inline]
    pub(crate) fn get(&self, i: u32) -> &str {
        self.list.get(i as usize).map_or("", |s| s)
    }

    pub(crate) fn to_list(&self) -> Vec<String> {
        if self.list.is_empty() { vec![String::new()] } else { self.list.iter().map(|s| s.to_string()).collect() }
    }

}

/// Interned ids (workers, nodes, jobs: few, named by many rows); 0 is "none".
#[derive(Default, Clone)]
pub(crate) struct Ids {
    list: Vec<Id>,
    map: FxHashMap<Key, u32>,
}

impl Ids {
    pub(crate) fn from_list(list: Vec<Id>) -> Ids {
        let mut ids = Ids::default();
        for id in list.into_iter().skip(1) {
            ids.intern(&id);
        }
        ids
    }

    #[inline]
    pub(crate) fn intern(&mut self, id: &Id) -> u32 {
        if self.list.is_empty() {
            self.list.push([0; 16]);
        }
        let next = self.list.len() as u32;
        let i = *self.map.entry(Key::of(id)).or_insert(next);
        if i == next {
            self.list.push(*id);
        }
        i
    }

    #[inline]
    pub(crate) fn intern_opt(&mut self, id: Option<Id>) -> u32 {
        id.map_or(0, |id| self.intern(&id))
    }

    /// The id numbered `i`; empty for 0 (none).
    #[inline]
    pub(crate) fn get(&self, i: u32) -> &[u8] {
        if i == 0 { &[] } else { self.list.get(i as usize).map_or(&[][..], |id| &id[..]) }
    }

    pub(crate) fn find(&self, id: &[u8]) -> Option<u32> {
        let id = <&Id>::try_from(id).ok()?;
        self.map.get(&Key::of(id)).copied()
    }

    pub(crate) fn iter(&self) -> impl Iterator<Item = (u32, &Id)> {
        self.list.iter().enumerate().skip(1).map(|(i, id)| (i as u32, id))
    }

    pub(crate) fn to_list(&self) -> Vec<Id> {
        if self.list.is_empty() { vec![[0; 16]] } else { self.list.clone() }
    }
}

/// Where a task stands (`TaskRow.state`); ordered by how far a task has got, with the two
/// ends equal in rank.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Default, PartialOrd, Ord)]
#[repr(u8)]
pub(crate) enum TaskState {
    #[default]
    None = 0,
    Submitted = 1,
    Scheduled = 2,
    Running = 3,
    Finished = 4,
    Failed = 5,
}

impl TaskState {
    pub(crate) const ALL: [TaskState; 5] =
        [TaskState::Submitted, TaskState::Scheduled, TaskState::Running, TaskState::Finished, TaskState::Failed];

    pub(crate) fn name(self) -> &'static str {
        match self {
            TaskState::None => "",
            TaskState::Submitted => "SUBMITTED",
            TaskState::Scheduled => "SCHEDULED",
            TaskState::Running => "RUNNING",
            TaskState::Finished => "FINISHED",
            TaskState::Failed => "FAILED",
        }
    }

    pub(crate) fn rank(self) -> Option<u8> {
        match self {
            TaskState::None => None,
            TaskState::Submitted => Some(0),
            TaskState::Scheduled => Some(1),
            TaskState::Running => Some(2),
            TaskState::Finished | TaskState::Failed => Some(3),
        }
    }

    fn from_u8(v: u8) -> Option<TaskState> {
        Some(match v {
            0 => TaskState::None,
            1 => TaskState::Submitted,
            2 => TaskState::Scheduled,
            3 => TaskState::Running,
            4 => TaskState::Finished,
            5 => TaskState::Failed,
            _ => return None,
        })
    }
}

/// One task's row.
#[derive(Clone, Debug, Default, PartialEq)]
pub(crate) struct TaskRec {
    pub function: u32,
    pub error_type: u32,
    pub state: TaskState,
    pub attempt: u32,
    pub worker: u32,
    pub node: u32,
    pub job: u32,
    pub owner: u32,
    pub pid: u32,
    pub submitted_us: i64,
    pub finished_us: i64,
    pub error: Option<Box<str>>,
}

impl TaskRec {
    pub(crate) fn encode(&self, out: &mut Vec<u8>) {
        varint(self.function as u64, out);
        varint(self.error_type as u64, out);
        out.push(self.state as u8);
        varint(self.attempt as u64, out);
        varint(self.worker as u64, out);
        varint(self.node as u64, out);
        varint(self.job as u64, out);
        varint(self.owner as u64, out);
        varint(self.pid as u64, out);
        varint(zigzag(self.submitted_us), out);
        varint(zigzag(self.finished_us.wrapping_sub(self.submitted_us)), out);
        let error = self.error.as_deref().unwrap_or("");
        varint(error.len() as u64, out);
        out.extend_from_slice(error.as_bytes());
    }

    pub(crate) fn decode(b: &[u8]) -> Option<TaskRec> {
        let mut r = Reader(b);
        let n32 = |r: &mut Reader<'_>| r.varint().and_then(|v| u32::try_from(v).ok());
        let mut t = TaskRec {
            function: n32(&mut r)?,
            error_type: n32(&mut r)?,
            state: TaskState::from_u8(*r.take(1)?.first()?)?,
            attempt: n32(&mut r)?,
            worker: n32(&mut r)?,
            node: n32(&mut r)?,
            job: n32(&mut r)?,
            owner: n32(&mut r)?,
            pid: n32(&mut r)?,
            submitted_us: unzigzag(r.varint()?),
            ..TaskRec::default()
        };
        t.finished_us = unzigzag(r.varint()?).wrapping_add(t.submitted_us);
        let len = usize::try_from(r.varint()?).ok()?;
        let error = std::str::from_utf8(r.take(len)?).ok()?;
        t.error = (!error.is_empty()).then(|| error.into());
        Some(t)
    }

    pub(crate) fn to_proto(&self, id: &Id, names: &Names, ids: &Ids) -> TaskRow {
        TaskRow {
            task_id: id.to_vec(),
            function: names.get(self.function).to_string(),
            state: self.state.name().to_string(),
            attempt: self.attempt,
            worker_id: ids.get(self.worker).to_vec(),
            node_id: ids.get(self.node).to_vec(),
            job_id: ids.get(self.job).to_vec(),
            error: self.error.as_deref().unwrap_or("").to_string(),
            submitted_us: self.submitted_us,
            finished_us: self.finished_us,
            owner: ids.get(self.owner).to_vec(),
            pid: self.pid,
            error_type: names.get(self.error_type).to_string(),
        }
    }
}

/// Where an object stands (`ObjectRow.state`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Default, PartialOrd, Ord)]
#[repr(u8)]
pub(crate) enum ObjectState {
    #[default]
    None = 0,
    Alive = 1,
    Freed = 2,
    Lost = 3,
}

impl ObjectState {
    pub(crate) const ALL: [ObjectState; 3] = [ObjectState::Alive, ObjectState::Freed, ObjectState::Lost];

    pub(crate) fn name(self) -> &'static str {
        match self {
            ObjectState::None => "",
            ObjectState::Alive => "ALIVE",
            ObjectState::Freed => "FREED",
            ObjectState::Lost => "LOST",
        }
    }

    /// How final a state is: a loss outranks a free, which outranks being alive.
    pub(crate) fn rank(self) -> u8 {
        match self {
            ObjectState::Lost => 2,
            ObjectState::Freed => 1,
            _ => 0,
        }
    }

    fn from_u8(v: u8) -> Option<ObjectState> {
        Some(match v {
            0 => ObjectState::None,
            1 => ObjectState::Alive,
            2 => ObjectState::Freed,
            3 => ObjectState::Lost,
            _ => return None,
        })
    }
}

/// Why an object ended, as its row keeps it.
#[derive(Clone, Debug, Default, PartialEq)]
pub(crate) enum Reason {
    #[default]
    None,
    /// `rayr_logs::event_run::FREED_BY_RELEASE`: nearly every object's.
    Released,
    Text(Box<str>),
}

impl Reason {
    pub(crate) fn of(text: &str) -> Reason {
        match text {
            "" => Reason::None,
            rayr_logs::event_run::FREED_BY_RELEASE => Reason::Released,
            t => Reason::Text(t.into()),
        }
    }

    pub(crate) fn text(&self) -> &str {
        match self {
            Reason::None => "",
            Reason::Released => rayr_logs::event_run::FREED_BY_RELEASE,
            Reason::Text(t) => t,
        }
    }
}

/// One object's row.
#[derive(Clone, Debug, Default, PartialEq)]
pub(crate) struct ObjectRec {
    pub owner: u32,
    pub location: u32,
    pub state: ObjectState,
    pub reason: Reason,
    pub task: Option<Id>,
    pub size: u64,
    pub created_us: i64,
    pub ended_us: i64,
    /// +1 per borrow, -1 per release (sums commute); `ObjectRow.borrowers` clamps it at 0.
    pub balance: i64,
}

impl ObjectRec {
    pub(crate) fn encode(&self, out: &mut Vec<u8>) {
        varint(self.owner as u64, out);
        varint(self.location as u64, out);
        out.push(self.state as u8);
        match &self.reason {
            Reason::None => out.push(0),
            Reason::Released => out.push(1),
            Reason::Text(t) => {
                out.push(2);
                varint(t.len() as u64, out);
                out.extend_from_slice(t.as_bytes());
            }
        }
        match &self.task {
            Some(t) => {
                out.push(1);
                out.extend_from_slice(t);
            }
            None => out.push(0),
        }
        varint(self.size, out);
        varint(zigzag(self.created_us), out);
        varint(zigzag(self.ended_us), out);
        varint(zigzag(self.balance), out);
    }

    pub(crate) fn decode(b: &[u8]) -> Option<ObjectRec> {
        let mut r = Reader(b);
        let n32 = |r: &mut Reader<'_>| r.varint().and_then(|v| u32::try_from(v).ok());
        let owner = n32(&mut r)?;
        let location = n32(&mut r)?;
        let state = ObjectState::from_u8(*r.take(1)?.first()?)?;
        let reason = match *r.take(1)?.first()? {
            0 => Reason::None,
            1 => Reason::Released,
            2 => {
                let len = usize::try_from(r.varint()?).ok()?;
                Reason::Text(std::str::from_utf8(r.take(len)?).ok()?.into())
            }
            _ => return None,
        };
        let task = match *r.take(1)?.first()? {
            0 => None,
            1 => Some(<Id>::try_from(r.take(16)?).ok()?),
            _ => return None,
        };
        Some(ObjectRec {
            owner,
            location,
            state,
            reason,
            task,
            size: r.varint()?,
            created_us: unzigzag(r.varint()?),
            ended_us: unzigzag(r.varint()?),
            balance: unzigzag(r.varint()?),
        })
    }

    pub(crate) fn borrowers(&self) -> u32 {
        self.balance.clamp(0, u32::MAX as i64) as u32
    }

    pub(crate) fn to_proto(&self, id: &Id, names: &Names, ids: &Ids) -> ObjectRow {
        ObjectRow {
            object_id: id.to_vec(),
            owner: ids.get(self.owner).to_vec(),
            size: self.size,
            location: names.get(self.location).to_string(),
            state: self.state.name().to_string(),
            created_us: self.created_us,
            ended_us: self.ended_us,
            reason: self.reason.text().to_string(),
            task_id: self.task.map(|t| t.to_vec()).unwrap_or_default(),
            borrowers: self.borrowers(),
        }
    }
}

#[inline]
pub(crate) fn zigzag(v: i64) -> u64 {
    ((v << 1) ^ (v >> 63)) as u64
}

#[inline]
pub(crate) fn unzigzag(v: u64) -> i64 {
    (v >> 1) as i64 ^ -((v & 1) as i64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rows_round_trip() {
        let t = TaskRec {
            function: 3,
            error_type: 2,
            state: TaskState::Failed,
            attempt: 7,
            worker: 1,
            node: 9,
            job: 4,
            owner: 5,
            pid: 4321,
            submitted_us: 1_700_000_000_000_000,
            finished_us: 1_700_000_000_000_123,
            error: Some("boom ☃".into()),
        };
        let mut b = Vec::new();
        t.encode(&mut b);
        assert_eq!(TaskRec::decode(&b), Some(t));
        assert!(b.len() < 40, "{} bytes", b.len());
        let o = ObjectRec {
            owner: 2,
            location: 1,
            state: ObjectState::Lost,
            reason: Reason::Text("owner died".into()),
            task: Some([7; 16]),
            size: 1 << 40,
            created_us: -5,
            ended_us: 99,
            balance: -2,
        };
        let mut b = Vec::new();
        o.encode(&mut b);
        assert_eq!(ObjectRec::decode(&b), Some(o));
        for cut in 0..b.len() {
            assert!(ObjectRec::decode(&b[..cut]).is_none());
        }
    }
}

/// Rows of the memtable, kept in pages of consecutive counters of one process.
///
/// A process makes ids in counter order, so the rows a run of events touches lie in a
/// few pages: finding a row is a look at the last page used, or one small hash-map lookup,
/// never a miss into a big hash table. Pages come out of `sorted` in key order.
pub(crate) struct Pages<R> {
    index: FxHashMap<(u64, u64), u32>,
    pages: Vec<Page<R>>,
    last: Option<((u64, u64), u32)>,
    rows: usize,
}

struct Page<R> {
    key: (u64, u64),
    present: u64,
    rows: Vec<R>,
}

/// Counters per page.
const PAGE_BITS: u32 = 6;
const PAGE: usize = 1 << PAGE_BITS;

impl<R> Default for Pages<R> {
    fn default() -> Self {
        Pages { index: FxHashMap::default(), pages: Vec::new(), last: None, rows: 0 }
    }
}

impl<R: Default> Pages<R> {
    #[inline]
    fn split(key: Key) -> ((u64, u64), usize) {
        ((key.salt, key.counter >> PAGE_BITS), (key.counter as usize) & (PAGE - 1))
    }

    /// The row of `key`, made with `init` if there is none.
    #[inline]
    pub(crate) fn entry(&mut self, key: Key, init: impl FnOnce() -> R) -> &mut R {
        let (pk, slot) = Self::split(key);
        let p = match self.last {
            Some((k, p)) if k == pk => p,
            _ => {
                let next = self.pages.len() as u32;
                let p = *self.index.entry(pk).or_insert(next);
                if p == next {
                    self.pages.push(Page { key: pk, present: 0, rows: (0..PAGE).map(|_| R::default()).collect() });
                }
                self.last = Some((pk, p));
                p
            }
        };
        let page = &mut self.pages[p as usize];
        if page.present & (1 << slot) == 0 {
            page.present |= 1 << slot;
            page.rows[slot] = init();
            self.rows += 1;
        }
        &mut page.rows[slot]
    }

    #[cfg(test)]
    pub(crate) fn get(&self, key: Key) -> Option<&R> {
        let (pk, slot) = Self::split(key);
        let page = &self.pages[*self.index.get(&pk)? as usize];
        (page.present & (1 << slot) != 0).then(|| &page.rows[slot])
    }

    /// Rows held.
    #[cfg(test)]
    pub(crate) fn len(&self) -> usize {
        self.rows
    }

    /// Room taken, in rows (a page holds `PAGE` whether full or not).
    pub(crate) fn slots(&self) -> usize {
        self.pages.len() * PAGE
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.rows == 0
    }

    /// Every row with its key, in key order.
    pub(crate) fn sorted(&self) -> Vec<(Key, &R)> {
        let mut order: Vec<&Page<R>> = self.pages.iter().collect();
        order.sort_unstable_by_key(|p| p.key);
        let mut out = Vec::with_capacity(self.rows);
        for p in order {
            for slot in 0..PAGE {
                if p.present & (1 << slot) != 0 {
                    out.push((Key { salt: p.key.0, counter: p.key.1 << PAGE_BITS | slot as u64 }, &p.rows[slot]));
                }
            }
        }
        out
    }
}

#[cfg(test)]
mod page_tests {
    use super::*;

    #[test]
    fn pages_hold_rows_by_key_and_give_them_back_in_order() {
        let mut pages: Pages<u32> = Pages::default();
        let keys = [Key { salt: 2, counter: 5 }, Key { salt: 1, counter: 700 }, Key { salt: 1, counter: 3 }, Key { salt: 2, counter: 64 }];
        for (i, k) in keys.iter().enumerate() {
            *pages.entry(*k, || 100) += i as u32;
        }
        *pages.entry(keys[0], || unreachable!("it is there")) += 10;
        assert_eq!(pages.len(), 4);
        assert_eq!(pages.get(keys[0]), Some(&110));
        assert_eq!(pages.get(Key { salt: 2, counter: 6 }), None);
        let sorted: Vec<(Key, u32)> = pages.sorted().into_iter().map(|(k, v)| (k, *v)).collect();
        assert_eq!(sorted, vec![(keys[2], 102), (keys[1], 101), (keys[0], 110), (keys[3], 103)]);
    }
}
