//! placeholder
use crate::runner::Case;

/// The bad_input cases.
pub fn cases() -> Vec<Case> {
    vec![]
}
