//! placeholder
use crate::runner::Case;

/// The field cases.
pub fn cases() -> Vec<Case> {
    vec![]
}
