//! 16-byte ids: 8 random bytes per process, then a counter. Unique without coordination.

use std::sync::OnceLock;
use std::sync::atomic::{AtomicU64, Ordering};

/// Every rayr id (object, task, worker, node, job, event) is 16 bytes.
pub type Id = [u8; 16];

/// This process's salt: the last 8 bytes of every id it makes.
pub fn process_salt() -> u64 {
    static SALT: OnceLock<u64> = OnceLock::new();
    *SALT.get_or_init(|| {
        let mut b = [0u8; 8];
        // SAFETY: getrandom writes at most b.len() bytes into b.
        let n = unsafe { libc::getrandom(b.as_mut_ptr().cast(), b.len(), 0) };
        let mut salt = u64::from_le_bytes(b);
        if n != 8 {
            salt = (std::process::id() as u64) << 32 ^ realtime_ns() as u64;
        }
        salt
    })
}

static COUNTER: AtomicU64 = AtomicU64::new(1);

/// Counters are handed to threads in blocks, so making an id touches no shared cache line.
const BLOCK: u64 = 1 << 16;

thread_local! {
    static THREAD_BLOCK: std::cell::Cell<(u64, u64)> = const { std::cell::Cell::new((0, 0)) };
}

#[inline]
fn next_counter() -> u64 {
    THREAD_BLOCK.with(|b| {
        let (next, end) = b.get();
        if next < end {
            b.set((next + 1, end));
            next
        } else {
            let start = COUNTER.fetch_add(BLOCK, Ordering::Relaxed);
            b.set((start + 1, start + BLOCK));
            start
        }
    })
}

/// A new id, unique across processes and hosts with overwhelming probability: the first
/// half is a bijective scramble of this process's counter (so short prefixes typed by a
/// user already tell ids apart), the second half is the process's random salt.
#[inline]
pub fn new_id() -> Id {
    id_from(next_counter(), process_salt())
}

#[inline]
fn id_from(counter: u64, salt: u64) -> Id {
    let n = counter.wrapping_add(salt.rotate_left(17));
    let mut id = [0u8; 16];
    id[..8].copy_from_slice(&n.wrapping_mul(SCATTER).to_be_bytes());
    id[8..].copy_from_slice(&salt.to_be_bytes());
    id
}

/// Event sequence numbers have the top bit set and other ids' counters never reach it, so
/// an event id never equals another id of the same process (the scatter is a bijection).
pub const EVENT_SEQ_BIT: u64 = 1 << 63;

static EVENT_SEQ: AtomicU64 = AtomicU64::new(0);

/// A block of `len` event sequence numbers for one recording thread: the events it
/// records are numbered consecutively, so their ids need not be written down (see
/// `EventRun` in events.proto).
pub(crate) fn event_seq_block(len: u64) -> u64 {
    EVENT_SEQ.fetch_add(len, Ordering::Relaxed) | EVENT_SEQ_BIT
}

/// The id of the event with sequence number `seq` recorded by the process with `salt`.
#[inline]
pub fn event_id_from(seq: u64, salt: u64) -> Id {
    id_from(seq | EVENT_SEQ_BIT, salt)
}

/// The counter an id of the process with `salt` was made from (`None` for an id another
/// process made): the event record packs such an id as that small number.
#[inline]
pub fn counter_of(id: &Id, salt: u64) -> Option<u64> {
    let tail = u64::from_be_bytes(id[8..].try_into().unwrap());
    let head = u64::from_be_bytes(id[..8].try_into().unwrap());
    (tail == salt).then(|| head.wrapping_mul(UNSCATTER).wrapping_sub(salt.rotate_left(17)))
}

/// The id made from `counter` by the process with `salt` (the inverse of [`counter_of`]).
#[inline]
pub fn id_of_counter(counter: u64, salt: u64) -> Id {
    id_from(counter, salt)
}

/// An id as (the salt of the process that made it, its counter): the inverse of
/// [`id_of_counter`]. Every 16-byte value is some process's id, so this never fails.
#[inline]
pub fn split_id(id: &Id) -> (u64, u64) {
    let salt = u64::from_be_bytes(id[8..].try_into().unwrap());
    let head = u64::from_be_bytes(id[..8].try_into().unwrap());
    (salt, head.wrapping_mul(UNSCATTER).wrapping_sub(salt.rotate_left(17)))
}

/// The first 8 bytes of the id made from `counter` by the process with `salt`, as a
/// number (what a hex prefix of the id is a prefix of), without making the id.
#[inline]
pub fn id_head(counter: u64, salt: u64) -> u64 {
    counter.wrapping_add(salt.rotate_left(17)).wrapping_mul(SCATTER)
}

/// Whether a counter is an event's (see [`event_id_from`]).
#[inline]
pub fn is_event_counter(counter: u64) -> bool {
    counter & EVENT_SEQ_BIT != 0
}

/// Multiplying by an odd number is a bijection on u64 that carries a counter's low bits
/// into the high ones, so consecutive ids differ in their first hex digits. One multiply:
/// every event packs a few ids back into counters (see [`counter_of`]).
const SCATTER: u64 = 0x9e37_79b9_7f4a_7c15;
/// SCATTER's inverse modulo 2^64.
const UNSCATTER: u64 = {
    // Newton's iteration doubles the correct low bits each step.
    let mut x = SCATTER;
    let mut i = 0;
    while i < 6 {
        x = x.wrapping_mul(2u64.wrapping_sub(SCATTER.wrapping_mul(x)));
        i += 1;
    }
    x
};

/// Microseconds since the Unix epoch.
///
/// Every task records six events, each with a time: a vDSO `clock_gettime` (~22 ns here)
/// was half of what recording one cost. Where the kernel itself keeps time with the TSC
/// (an invariant TSC, synchronized across CPUs), this reads the TSC (~9 ns) and converts it
/// with a rate measured against the raw monotonic clock (which no one steps or slews);
/// each thread re-anchors to the system clock about every millisecond, so a rate error
/// shifts a time by well under a microsecond and a step of the system clock shows within a
/// millisecond.
#[inline]
pub fn now_us() -> i64 {
    #[cfg(target_arch = "x86_64")]
    {
        tsc::now_us()
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        realtime_ns() / 1000
    }
}

#[inline]
fn realtime_ns() -> i64 {
    let mut ts = libc::timespec { tv_sec: 0, tv_nsec: 0 };
    // SAFETY: clock_gettime fills the timespec we own.
    unsafe { libc::clock_gettime(libc::CLOCK_REALTIME, &mut ts) };
    ts.tv_sec * 1_000_000_000 + ts.tv_nsec
}

#[cfg(target_arch = "x86_64")]
mod tsc {
    use std::cell::Cell;
    use std::sync::OnceLock;

    /// A thread re-anchors after this many ticks (about a millisecond at 2–4 GHz).
    const REANCHOR_TICKS: u64 = 1 << 22;
    /// The rate is measured over at least this many ticks since the process's first
    /// anchor; until then every read is a system clock read.
    const MIN_BASELINE_TICKS: u64 = 1 << 26;
    /// A TSC/system clock pair read within this many ticks (well under a microsecond).
    const TIGHT_PAIR_TICKS: u64 = 1 << 11;

    #[derive(Clone, Copy)]
    struct Anchor {
        tsc: u64,
        ns: i64,
        /// Nanoseconds per tick, 32.32 fixed point; 0 while not calibrated or unusable.
        mult: u64,
    }

    thread_local! {
        static ANCHOR: Cell<Anchor> = const { Cell::new(Anchor { tsc: 0, ns: 0, mult: 0 }) };
    }

    #[inline]
    pub(super) fn now_us() -> i64 {
        // SAFETY: rdtsc has no preconditions on x86_64.
        let tsc = unsafe { core::arch::x86_64::_rdtsc() };
        let a = ANCHOR.with(Cell::get);
        let d = tsc.wrapping_sub(a.tsc);
        if a.mult != 0 && d < REANCHOR_TICKS {
            return (a.ns + ((d as u128 * a.mult as u128) >> 32) as i64) / 1000;
        }
        reanchor()
    }

    #[cold]
    fn reanchor() -> i64 {
        static USABLE: OnceLock<bool> = OnceLock::new();
        /// The process's first (TSC, raw monotonic ns): the rate's baseline.
        static ORIGIN: OnceLock<(u64, i64)> = OnceLock::new();
        if !*USABLE.get_or_init(usable) {
            return super::realtime_ns() / 1000;
        }
        // The TSC read halfway through the clock read belongs with it; a read that took
        // long (the first in a process faults the vDSO in) would pair them loosely.
        let (mut tsc, mut ns) = (0, 0);
        for _ in 0..8 {
            // SAFETY: rdtsc has no preconditions on x86_64.
            let before = unsafe { core::arch::x86_64::_rdtsc() };
            ns = super::realtime_ns();
            // SAFETY: as above.
            let after = unsafe { core::arch::x86_64::_rdtsc() };
            tsc = before + (after.wrapping_sub(before) / 2);
            if after.wrapping_sub(before) < TIGHT_PAIR_TICKS {
                break;
            }
        }
        let raw = raw_monotonic_ns();
        let origin = *ORIGIN.get_or_init(|| (tsc, raw));
        let baseline = tsc.wrapping_sub(origin.0);
        let mult = if (MIN_BASELINE_TICKS..1 << 62).contains(&baseline) && raw > origin.1 {
            ((((raw - origin.1) as u128) << 32) / baseline as u128) as u64
        } else {
            0
        };
        ANCHOR.with(|a| a.set(Anchor { tsc, ns, mult }));
        ns / 1000
    }

    fn raw_monotonic_ns() -> i64 {
        let mut ts = libc::timespec { tv_sec: 0, tv_nsec: 0 };
        // SAFETY: clock_gettime fills the timespec we own.
        unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC_RAW, &mut ts) };
        ts.tv_sec * 1_000_000_000 + ts.tv_nsec
    }

    /// The TSC is a clock only if it ticks at a constant rate in every power state and
    /// the kernel trusts it as its own clocksource (it checks the CPUs agree).
    fn usable() -> bool {
        let invariant = core::arch::x86_64::__cpuid(0x8000_0000).eax >= 0x8000_0007
            && core::arch::x86_64::__cpuid(0x8000_0007).edx & (1 << 8) != 0;
        invariant
            && std::fs::read_to_string("/sys/devices/system/clocksource/clocksource0/current_clocksource")
                .is_ok_and(|s| s.trim() == "tsc")
    }
}

/// Lowercase hex of any byte string (ids are displayed this way everywhere).
pub fn hex(bytes: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut s = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        s.push(DIGITS[(b >> 4) as usize] as char);
        s.push(DIGITS[(b & 15) as usize] as char);
    }
    s
}

/// Parses hex into bytes; `None` when the text is not an even run of hex digits.
pub fn parse_hex(s: &str) -> Option<Vec<u8>> {
    let s = s.trim();
    if !s.len().is_multiple_of(2) {
        return None;
    }
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(s.get(i..i + 2)?, 16).ok())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_are_unique_and_round_trip_through_hex() {
        let a = new_id();
        let b = new_id();
        assert_ne!(a, b);
        assert_eq!(parse_hex(&hex(&a)).unwrap(), a.to_vec());
        assert_eq!(parse_hex("zz"), None);
        assert_eq!(parse_hex("abc"), None);
    }

    #[test]
    fn now_us_follows_the_system_clock() {
        // Long enough for the TSC rate to be calibrated and several re-anchorings.
        let end = std::time::Instant::now() + std::time::Duration::from_millis(80);
        let mut last = now_us();
        while std::time::Instant::now() < end {
            // Bracketed by system clock reads, so being preempted between reads is no error.
            let before = realtime_ns() / 1000;
            let ours = now_us();
            let after = realtime_ns() / 1000;
            assert!(before - 2 <= ours && ours <= after + 2, "now_us {ours} outside the system clock's [{before}, {after}]");
            assert!(ours >= last - 1, "went back from {last} to {ours}");
            last = ours;
        }
    }

    #[test]
    fn ids_of_this_process_give_back_their_counter() {
        let salt = process_salt();
        for counter in [0, 1, 77, 1 << 40, u64::MAX, EVENT_SEQ_BIT | 5] {
            assert_eq!(counter.wrapping_mul(SCATTER).wrapping_mul(UNSCATTER), counter);
            let id = id_from(counter, salt);
            assert_eq!(counter_of(&id, salt), Some(counter));
            assert_eq!(id_of_counter(counter, salt), id);
        }
        assert_eq!(counter_of(&new_id(), salt ^ 1), None, "another process's id");
        for id in [new_id(), [0xff; 16], [0; 16], event_id_from(9, 77)] {
            let (s, c) = split_id(&id);
            assert_eq!(id_of_counter(c, s), id);
            assert_eq!(id_head(c, s).to_be_bytes(), id[..8]);
        }
        assert!(is_event_counter(counter_of(&event_id_from(3, salt), salt).unwrap()));
    }

    #[test]
    fn event_ids_are_distinct_from_other_ids_of_the_process() {
        let seq = event_seq_block(4);
        let salt = process_salt();
        let ids: Vec<Id> = (0..4).map(|i| event_id_from(seq + i, salt)).collect();
        assert_eq!(ids[1][8..], salt.to_be_bytes(), "the salt ends every id");
        for i in 0..4u64 {
            assert_ne!(ids[i as usize], id_from(seq - EVENT_SEQ_BIT + i, salt), "not an object id's counter");
            for j in i + 1..4 {
                assert_ne!(ids[i as usize], ids[j as usize]);
            }
        }
    }
}
