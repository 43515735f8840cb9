//! Payloads as named MessagePack, decoded with a cap on nesting.

use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::Result;

/// The default payload limit: 1 MiB of encoded MessagePack.
pub const DEFAULT_PAYLOAD_LIMIT: usize = 1024 * 1024;
/// Deepest MessagePack nesting a worker decodes; deeper payloads are dead-lettered
/// instead of risking a task's stack.
pub(crate) const MAX_PAYLOAD_DEPTH: usize = 128;

/// Encodes a payload as named MessagePack.
pub(crate) fn encode_payload<T: Serialize + ?Sized>(payload: &T) -> Result<Vec<u8>> {
    Ok(rmp_serde::to_vec_named(payload)?)
}

/// Decodes a payload with the nesting depth capped.
pub(crate) fn decode_payload<T: DeserializeOwned>(bytes: &[u8]) -> std::result::Result<T, String> {
    let mut de = rmp_serde::Deserializer::from_read_ref(bytes);
    de.set_max_depth(MAX_PAYLOAD_DEPTH);
    T::deserialize(&mut de).map_err(|e| e.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn deeply_nested_payloads_are_refused_not_overflowed() {
        // 100k nested one-element arrays: 0x91 is a fixarray of length 1.
        let mut bytes = vec![0x91u8; 100_000];
        bytes.push(0xc0);
        let r: std::result::Result<serde_json::Value, String> = decode_payload(&bytes);
        assert!(r.is_err());
    }
}
