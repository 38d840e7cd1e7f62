//! placeholder
use crate::runner::Case;

/// The cri cases.
pub fn cases() -> Vec<Case> {
    vec![]
}
