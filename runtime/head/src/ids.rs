//! How people write ids: the short form tables print, and the patterns a query accepts.
//!
//! A rayr id is 16 bytes: a scrambled per-process counter, then 8 random bytes of the
//! process that made it (`rayr_logs::new_id`). The first digits therefore tell ids apart
//! and the last digits tell which process made them. The short form keeps both ends:
//! `a1b2c3…9f00a3` (first 6 digits, `…`, last 6 digits), and every query that takes an id
//! accepts
//!
//! - a full id or any prefix of it: `a1b2c3d4e5f60718`,
//! - a short form as printed, `HEAD…TAIL`, also typed as `HEAD..TAIL` or `HEAD...TAIL`:
//!   ids starting with HEAD and ending with TAIL.
//!
//! Both sides live here so that what the tables print is always something the queries take.
//! [`short_id`] is the only short form: `rayr list`, `rayr events`, `rayr why-died`,
//! `rayr logs` and `rayr status` all print it. (Errors and warnings name ids in full, so
//! that they can be pasted.)

use rayr_logs::hex;

/// Digits kept from each end of an id in its short form.
const SHORT_HALF: usize = 6;

/// The form tables print: `a1b2c3…0000a3`. Ids too short to abbreviate are printed whole.
pub fn short_id(id: &[u8]) -> String {
    let h = hex(id);
    if h.len() <= 2 * SHORT_HALF + 1 {
        return h;
    }
    format!("{}…{}", &h[..SHORT_HALF], &h[h.len() - SHORT_HALF..])
}

/// A parsed id pattern: lowercase hex that a matching id starts with and ends with.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct IdPattern {
    head: String,
    tail: String,
}

impl IdPattern {
    /// Parses `PREFIX`, `HEAD…TAIL`, `HEAD..TAIL` or `HEAD...TAIL`; `Err` says what is wrong.
    pub fn parse(text: &str) -> Result<IdPattern, String> {
        let t = text.trim().to_ascii_lowercase();
        let (head, tail) = match t.split_once('…').or_else(|| t.split_once("...")).or_else(|| t.split_once("..")) {
            Some((h, tl)) => (h.to_string(), tl.to_string()),
            None => (t.clone(), String::new()),
        };
        let is_hex = |s: &str| s.bytes().all(|b| b.is_ascii_hexdigit());
        if !is_hex(&head) || !is_hex(&tail) || (head.is_empty() && tail.is_empty()) {
            return Err(format!(
                "`{text}` is not an id: give hex digits (a full id, a prefix of one, or the short form `a1b2c3…0000a3` that `rayr list` prints)"
            ));
        }
        Ok(IdPattern { head, tail })
    }

    pub fn matches(&self, id: &[u8]) -> bool {
        let digits = id.len() * 2;
        let nibble = |i: usize| {
            let b = id[i / 2];
            if i % 2 == 0 { b >> 4 } else { b & 15 }
        };
        let hexval = |c: u8| (c as char).to_digit(16).unwrap_or(16) as u8;
        digits >= self.head.len() + self.tail.len()
            && self.head.bytes().enumerate().all(|(i, c)| nibble(i) == hexval(c))
            && self.tail.bytes().rev().enumerate().all(|(i, c)| nibble(digits - 1 - i) == hexval(c))
    }

    /// What the first 8 bytes of a matching 16-byte id must be, as (value, mask): a quick
    /// test before [`matches`](Self::matches) when scanning many ids.
    pub(crate) fn head_bits(&self) -> (u64, u64) {
        let mut value = 0u64;
        let mut mask = 0u64;
        for (i, c) in self.head.bytes().take(16).enumerate() {
            let shift = 60 - 4 * i as u32;
            value |= ((c as char).to_digit(16).unwrap_or(0) as u64) << shift;
            mask |= 0xf << shift;
        }
        (value, mask)
    }

    /// What the last 8 bytes (the maker's salt) of a matching 16-byte id must be, as
    /// (value, mask).
    pub(crate) fn tail_bits(&self) -> (u64, u64) {
        let mut value = 0u64;
        let mut mask = 0u64;
        for (i, c) in self.tail.bytes().rev().take(16).enumerate() {
            let shift = 4 * i as u32;
            value |= ((c as char).to_digit(16).unwrap_or(0) as u64) << shift;
            mask |= 0xf << shift;
        }
        (value, mask)
    }

    /// The pattern as a person wrote it, normalized.
    pub fn text(&self) -> String {
        if self.tail.is_empty() { self.head.clone() } else { format!("{}…{}", self.head, self.tail) }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn short_form_is_a_pattern_that_matches_its_id() {
        let id: Vec<u8> = (1..=16).collect();
        let s = short_id(&id);
        assert_eq!(s, "010203…0e0f10");
        assert!(IdPattern::parse(&s).unwrap().matches(&id));
        assert!(IdPattern::parse("010203..0e0f10").unwrap().matches(&id));
        assert!(IdPattern::parse("010203...0E0F10").unwrap().matches(&id));
        assert!(IdPattern::parse("0102030").unwrap().matches(&id));
        assert!(!IdPattern::parse("0102031").unwrap().matches(&id));
        assert!(IdPattern::parse("xyz").is_err());
        assert!(IdPattern::parse("").is_err());
    }

    #[test]
    fn quick_bits_agree_with_matching() {
        let id: Vec<u8> = (1..=16).collect();
        for pat in ["01020", "0102030405060708090a", "01…0f10", "..10", "0102...0e0f10"] {
            let p = IdPattern::parse(pat).unwrap();
            let head = u64::from_be_bytes(id[..8].try_into().unwrap());
            let tail = u64::from_be_bytes(id[8..].try_into().unwrap());
            let ((hv, hm), (tv, tm)) = (p.head_bits(), p.tail_bits());
            assert!(p.matches(&id) && head & hm == hv && tail & tm == tv, "{pat}");
        }
        let p = IdPattern::parse("01030").unwrap();
        assert!(!p.matches(&id));
        assert!(!IdPattern::parse("0102030405060708090a0b0c0d0e0f1011").unwrap().matches(&id), "longer than the id");
    }
}
