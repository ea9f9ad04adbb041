//! The applied-hash of an object: hex SHA-256 of its JSON form (serde_json maps are sorted, so it
//! is stable). The apply steps store it in an annotation and skip an object whose hash is unchanged.

use serde::Serialize;

use crate::build::meta::sha256_hex;
use crate::error::{Error, Result};

/// Hex SHA-256 of an object's JSON form.
pub fn object_hash<T: Serialize>(object: &T) -> Result<String> {
    let bytes = serde_json::to_vec(object).map_err(|source| Error::Serialize {
        what: std::any::type_name::<T>().into(),
        source,
    })?;
    Ok(sha256_hex(&bytes))
}
