//! 16-byte ids: 8 random bytes per process, then a counter. Unique without coordination.

use std::sync::OnceLock;
use std::sync::atomic::{AtomicU64, Ordering};

/// Every rayr id (object, task, worker, node, job, event) is 16 bytes.
pub type Id = [u8; 16];

fn process_salt() -> u64 {
    static SALT: OnceLock<u64> = OnceLock::new();
    *SALT.get_or_init(|| {
        let mut b = [0u8; 8];
        // SAFETY: getrandom writes at most b.len() bytes into b.
        let n = unsafe { libc::getrandom(b.as_mut_ptr().cast(), b.len(), 0) };
        let mut salt = u64::from_le_bytes(b);
        if n != 8 {
            salt = (std::process::id() as u64) << 32 ^ now_us() as u64;
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
    let salt = process_salt();
    let n = next_counter().wrapping_add(salt.rotate_left(17));
    let mut id = [0u8; 16];
    id[..8].copy_from_slice(&splitmix64(n).to_be_bytes());
    id[8..].copy_from_slice(&salt.to_be_bytes());
    id
}

/// A bijection on u64 that scatters consecutive inputs (SplitMix64's finalizer).
fn splitmix64(mut z: u64) -> u64 {
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58476d1ce4e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d049bb133111eb);
    z ^ (z >> 31)
}

/// Microseconds since the Unix epoch.
#[inline]
pub fn now_us() -> i64 {
    // Straight from the vDSO: SystemTime's checked arithmetic shows up when every task
    // records six events.
    let mut ts = libc::timespec { tv_sec: 0, tv_nsec: 0 };
    // SAFETY: clock_gettime fills the timespec we own.
    unsafe { libc::clock_gettime(libc::CLOCK_REALTIME, &mut ts) };
    ts.tv_sec * 1_000_000 + ts.tv_nsec / 1_000
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
}
