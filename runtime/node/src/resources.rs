//! Resource amounts (CPU, GPU, custom) and the checks leases are granted by.

use std::collections::HashMap;
use std::fmt::Write;

/// Named amounts, e.g. `{"CPU": 1.0, "ssd": 2.0}`.
pub type Resources = HashMap<String, f64>;

const EPS: f64 = 1e-9;

/// Whether `demand` fits in `available` right now.
pub fn fits(demand: &Resources, available: &Resources) -> bool {
    demand.iter().all(|(k, v)| *v <= EPS || available.get(k).copied().unwrap_or(0.0) + EPS >= *v)
}

pub fn subtract(available: &mut Resources, demand: &Resources) {
    for (k, v) in demand {
        *available.entry(k.clone()).or_insert(0.0) -= v;
    }
}

pub fn add(available: &mut Resources, demand: &Resources) {
    for (k, v) in demand {
        *available.entry(k.clone()).or_insert(0.0) += v;
    }
}

/// `{CPU: 1, ssd: 2}` for messages people read; keys sorted so output is stable.
pub fn describe(r: &Resources) -> String {
    let mut keys: Vec<&String> = r.keys().filter(|k| r[*k] > EPS).collect();
    keys.sort();
    let mut s = String::from("{");
    for (i, k) in keys.iter().enumerate() {
        if i > 0 {
            s.push_str(", ");
        }
        let _ = write!(s, "{k}: {}", r[*k]);
    }
    s.push('}');
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    fn r(pairs: &[(&str, f64)]) -> Resources {
        pairs.iter().map(|(k, v)| (k.to_string(), *v)).collect()
    }

    #[test]
    fn fits_and_ledger() {
        let mut avail = r(&[("CPU", 2.0)]);
        assert!(fits(&r(&[("CPU", 0.5)]), &avail));
        assert!(!fits(&r(&[("CPU", 3.0)]), &avail));
        assert!(!fits(&r(&[("ssd", 1.0)]), &avail));
        assert!(fits(&r(&[("ssd", 0.0)]), &avail));
        subtract(&mut avail, &r(&[("CPU", 1.5)]));
        assert!(!fits(&r(&[("CPU", 1.0)]), &avail));
        add(&mut avail, &r(&[("CPU", 1.5)]));
        assert!(fits(&r(&[("CPU", 2.0)]), &avail));
        assert_eq!(describe(&r(&[("ssd", 1.0), ("CPU", 2.0), ("GPU", 0.0)])), "{CPU: 2, ssd: 1}");
    }
}
