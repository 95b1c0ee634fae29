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
        let h = hex(id);
        h.len() >= self.head.len() + self.tail.len() && h.starts_with(&self.head) && h.ends_with(&self.tail)
    }

    /// The smallest byte string any matching id can be: where a sorted scan starts.
    pub(crate) fn lower_bound(&self) -> Vec<u8> {
        let even = self.head.len() / 2 * 2;
        let mut bytes = rayr_logs::parse_hex(&self.head[..even]).unwrap_or_default();
        if even < self.head.len() {
            let nibble = u8::from_str_radix(&self.head[even..], 16).unwrap_or(0);
            bytes.push(nibble << 4);
        }
        bytes
    }

    /// Whether `id`, met in sorted order, is already past every id this pattern can match.
    pub(crate) fn is_past(&self, id: &[u8]) -> bool {
        let h = hex(id);
        let n = self.head.len().min(h.len());
        h[..n] > self.head[..n]
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
    fn bounds_for_odd_prefixes() {
        let p = IdPattern::parse("abc").unwrap();
        assert_eq!(p.lower_bound(), vec![0xab, 0xc0]);
        assert!(!p.is_past(&[0xab, 0xcf, 0xff]));
        assert!(p.is_past(&[0xab, 0xd0]));
        assert!(!p.is_past(&[0xab, 0xb0]));
    }
}
