//! Which tasks wait for which objects owned here, before they can be queued for a worker.
//!
//! Indexed by object: a value arriving finds its waiting tasks in one lookup, and
//! submitting a task adds one entry per pending argument; nothing here is ever scanned
//! as a whole, so a million tasks queued behind one unfinished task cost the same per
//! submit as the first. A task's own side (which of its arguments are still pending) is
//! its `PendingTask::deps`.

use rayr_logs::Id;

use super::idmap::IdHashMap;

/// Tasks waiting for objects owned by this process, by object.
#[derive(Default)]
pub(crate) struct DependencyWaits {
    by_object: IdHashMap<Vec<Id>>,
}

impl DependencyWaits {
    /// `task` waits for `object` (once per argument that names it).
    pub fn wait(&mut self, object: Id, task: Id) {
        self.by_object.entry(object).or_default().push(task);
    }

    /// `object` has its value (or failed): the tasks that waited for it, in the order
    /// they began to wait, and none of them waits for it any more.
    pub fn take(&mut self, object: Id) -> Vec<Id> {
        self.by_object.remove(&object).unwrap_or_default()
    }

    /// How many waits are registered on `object`.
    #[cfg(test)]
    pub fn waiting_on(&self, object: &Id) -> usize {
        self.by_object.get(object).map_or(0, Vec::len)
    }

    /// How many objects have tasks waiting on them.
    #[cfg(test)]
    pub fn objects(&self) -> usize {
        self.by_object.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn id(n: u8) -> Id {
        [n; 16]
    }

    #[test]
    fn a_value_releases_exactly_the_tasks_waiting_on_it_in_order() {
        let mut w = DependencyWaits::default();
        w.wait(id(1), id(10));
        w.wait(id(2), id(11));
        w.wait(id(1), id(12));
        assert_eq!(w.take(id(1)), vec![id(10), id(12)]);
        assert_eq!(w.waiting_on(&id(1)), 0);
        assert_eq!(w.waiting_on(&id(2)), 1);
        // A second arrival of the same value finds nobody left.
        assert!(w.take(id(1)).is_empty());
        assert_eq!(w.take(id(2)), vec![id(11)]);
        assert_eq!(w.objects(), 0);
    }

    #[test]
    fn a_task_taking_one_ref_twice_is_told_twice() {
        let mut w = DependencyWaits::default();
        w.wait(id(1), id(10));
        w.wait(id(1), id(10));
        assert_eq!(w.take(id(1)), vec![id(10), id(10)]);
    }

    #[test]
    fn a_million_waits_on_one_object_cost_no_more_per_wait_than_the_first() {
        let mut w = DependencyWaits::default();
        let n = 1_000_000u32;
        let t = std::time::Instant::now();
        for i in 0..n {
            let mut task = [0u8; 16];
            task[..4].copy_from_slice(&i.to_le_bytes());
            w.wait(id(7), task);
        }
        let elapsed = t.elapsed();
        assert_eq!(w.waiting_on(&id(7)), n as usize);
        // One push per wait: even a debug build does a million in well under this (a scan
        // per wait would take minutes).
        assert!(elapsed < std::time::Duration::from_secs(5), "{n} waits took {elapsed:?}");
        let released = w.take(id(7));
        assert_eq!(released.len(), n as usize);
        assert_eq!(&released[n as usize - 1][..4], &(n - 1).to_le_bytes());
        assert_eq!(w.objects(), 0);
    }
}
