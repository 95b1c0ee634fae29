//! How values become bytes: postcard for any serde type, raw bytes for Pod slices.

use serde::Serialize;
use serde::de::DeserializeOwned;

/// `format` of an object serialized with postcard.
pub const POSTCARD: u32 = 0;
/// `format` of an object holding the raw bytes of a Pod slice (`put_slice`).
pub const RAW_POD: u32 = 1;

pub fn encode<T: Serialize + ?Sized>(v: &T) -> Result<Vec<u8>, String> {
    postcard::to_stdvec(v).map_err(|e| e.to_string())
}

pub fn decode<T: DeserializeOwned>(bytes: &[u8], format: u32) -> Result<T, String> {
    match format {
        POSTCARD => postcard::from_bytes(bytes).map_err(|e| e.to_string()),
        RAW_POD => T::deserialize(&mut crate::raw::RawDeserializer::new(bytes)).map_err(|e| e.to_string()),
        other => Err(format!("unknown object format {other}")),
    }
}
