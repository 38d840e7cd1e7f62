//! The kernel programs, built by `shim/build.rs` and embedded in the shim.

use sha2::{Digest, Sha256};

use super::{BpfError, Result};

/// The object file; empty in a stub build.
static OBJECT: &[u8] = aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/vigil-programs.o"));

/// The embedded object, or [`BpfError::NoPrograms`] in a stub build.
pub fn bytes() -> Result<&'static [u8]> {
    if OBJECT.is_empty() {
        return Err(BpfError::NoPrograms);
    }
    Ok(OBJECT)
}

/// The pin folder name for this object: the first 16 hex digits of its SHA-256, so an
/// upgraded shim never reuses programs or maps of another build.
pub fn version() -> String {
    let digest = Sha256::digest(OBJECT);
    digest.iter().take(8).map(|b| format!("{b:02x}")).collect()
}
