//! The ids a user sees: 16 bytes, displayed as 32 hex digits, accepted by `rayr why-died`.

use std::fmt;
use std::str::FromStr;

macro_rules! define_id {
    ($($(#[$doc:meta])* $name:ident),*) => {$(
        $(#[$doc])*
        #[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize, serde::Deserialize)]
        pub struct $name(pub(crate) [u8; 16]);

        impl $name {
            /// The raw 16 bytes.
            pub fn as_bytes(&self) -> &[u8; 16] {
                &self.0
            }
            pub(crate) fn from_slice(b: &[u8]) -> Self {
                let mut id = [0u8; 16];
                if b.len() == 16 {
                    id.copy_from_slice(b);
                }
                $name(id)
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&rayr_logs::hex(&self.0))
            }
        }

        impl fmt::Debug for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                write!(f, "{}({})", stringify!($name), self)
            }
        }

        impl FromStr for $name {
            type Err = String;
            fn from_str(s: &str) -> Result<Self, String> {
                match rayr_logs::parse_hex(s) {
                    Some(b) if b.len() == 16 => Ok($name::from_slice(&b)),
                    _ => Err(format!("{:?} is not a {}: expected 32 hex digits", s, stringify!($name))),
                }
            }
        }
    )*};
}

define_id!(
    /// An object: a task's return value or a `put`.
    ObjectId,
    /// One task (all its attempts share the id).
    TaskId,
    /// An actor.
    ActorId,
    /// A worker or driver process.
    WorkerId,
    /// A node agent's host.
    NodeId,
    /// A job: one driver and everything it started.
    JobId
);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_parse_and_display() {
        let id = TaskId([0xab; 16]);
        let s = id.to_string();
        assert_eq!(s.len(), 32);
        assert_eq!(s.parse::<TaskId>().unwrap(), id);
        assert!("xyz".parse::<TaskId>().unwrap_err().contains("32 hex digits"));
    }
}
