//! Reads the raw bytes of a Pod slice (`put_slice`) back as a `Vec<P>` through serde, so
//! `get` of a `put_slice` ref returns an owned vector like any other object.
//!
//! Pod types have no padding, and their serde derives visit fields in declaration order,
//! which for `#[repr(C)]` is memory order: reading primitives one after another in native
//! byte order walks the slice exactly.

use serde::de::{self, DeserializeSeed, Deserializer, SeqAccess, Visitor};

pub struct RawDeserializer<'a> {
    input: &'a [u8],
}

impl<'a> RawDeserializer<'a> {
    pub fn new(input: &'a [u8]) -> Self {
        RawDeserializer { input }
    }
    fn take<const N: usize>(&mut self) -> Result<[u8; N], RawError> {
        if self.input.len() < N {
            return Err(RawError("the object ends in the middle of an element".into()));
        }
        let (head, rest) = self.input.split_at(N);
        self.input = rest;
        Ok(head.try_into().unwrap())
    }
}

#[derive(Debug)]
pub struct RawError(String);

impl std::fmt::Display for RawError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}
impl std::error::Error for RawError {}
impl de::Error for RawError {
    fn custom<T: std::fmt::Display>(msg: T) -> Self {
        RawError(msg.to_string())
    }
}

macro_rules! prim {
    ($($method:ident $ty:ty => $visit:ident),*) => {$(
        fn $method<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, RawError> {
            visitor.$visit(<$ty>::from_ne_bytes(self.take::<{ std::mem::size_of::<$ty>() }>()?))
        }
    )*};
}

struct Elements<'b, 'a> {
    de: &'b mut RawDeserializer<'a>,
    remaining: Option<usize>,
}

impl<'de, 'b, 'a> SeqAccess<'de> for Elements<'b, 'a> {
    type Error = RawError;
    fn next_element_seed<T: DeserializeSeed<'de>>(&mut self, seed: T) -> Result<Option<T::Value>, RawError> {
        match &mut self.remaining {
            Some(0) => return Ok(None),
            Some(n) => *n -= 1,
            None if self.de.input.is_empty() => return Ok(None),
            None => {}
        }
        seed.deserialize(&mut *self.de).map(Some)
    }
}

impl<'de> Deserializer<'de> for &mut RawDeserializer<'_> {
    type Error = RawError;

    prim!(deserialize_i8 i8 => visit_i8, deserialize_i16 i16 => visit_i16, deserialize_i32 i32 => visit_i32,
          deserialize_i64 i64 => visit_i64, deserialize_u8 u8 => visit_u8, deserialize_u16 u16 => visit_u16,
          deserialize_u32 u32 => visit_u32, deserialize_u64 u64 => visit_u64, deserialize_f32 f32 => visit_f32,
          deserialize_f64 f64 => visit_f64, deserialize_i128 i128 => visit_i128, deserialize_u128 u128 => visit_u128);

    fn deserialize_seq<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, RawError> {
        visitor.visit_seq(Elements { de: self, remaining: None })
    }
    fn deserialize_tuple<V: Visitor<'de>>(self, len: usize, visitor: V) -> Result<V::Value, RawError> {
        visitor.visit_seq(Elements { de: self, remaining: Some(len) })
    }
    fn deserialize_tuple_struct<V: Visitor<'de>>(self, _: &'static str, len: usize, visitor: V) -> Result<V::Value, RawError> {
        self.deserialize_tuple(len, visitor)
    }
    fn deserialize_struct<V: Visitor<'de>>(
        self,
        _: &'static str,
        fields: &'static [&'static str],
        visitor: V,
    ) -> Result<V::Value, RawError> {
        self.deserialize_tuple(fields.len(), visitor)
    }
    fn deserialize_any<V: Visitor<'de>>(self, _: V) -> Result<V::Value, RawError> {
        Err(RawError("a put_slice object can only be read as a Vec of plain numbers or Pod structs".into()))
    }

    serde::forward_to_deserialize_any! {
        bool char str string bytes byte_buf option unit unit_struct newtype_struct map enum identifier ignored_any
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde::Deserialize;

    #[test]
    fn reads_pod_slices() {
        let v = vec![1.5f32, -2.0, 3.25];
        let bytes: &[u8] = bytemuck::cast_slice(&v);
        let back: Vec<f32> = Vec::deserialize(&mut RawDeserializer::new(bytes)).unwrap();
        assert_eq!(back, v);
        let w = vec![7u64, u64::MAX];
        let back: Vec<u64> = Vec::deserialize(&mut RawDeserializer::new(bytemuck::cast_slice(&w))).unwrap();
        assert_eq!(back, w);
        #[derive(Deserialize, PartialEq, Debug)]
        struct P {
            x: u32,
            y: f32,
        }
        let raw = [1u32.to_ne_bytes(), 2.5f32.to_ne_bytes()].concat();
        let back: Vec<P> = Vec::deserialize(&mut RawDeserializer::new(&raw)).unwrap();
        assert_eq!(back, vec![P { x: 1, y: 2.5 }]);
        assert!(String::deserialize(&mut RawDeserializer::new(&raw)).is_err());
    }
}
