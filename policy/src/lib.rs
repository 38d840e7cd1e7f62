//! vigil's profile model: what an image's containers were seen doing, with evidence.
//!
//! - [`learn`]: observations from the kernel side → per-container [`learn::Learner`] →
//!   [`ProfileDelta`];
//! - [`store`]: `<state_dir>/profiles/`, atomic writes, merges under a lock;
//! - [`stability`]: confidence per category, learning → stable;
//! - [`check`]: does an observation fit the profile (monitor, enforce);
//! - [`seccomp`]: the OCI `linux.seccomp` section, with the runtime [`floor`];
//! - [`diff`], [`export`], [`import`]: what operators do with profiles.
//!
//! The format is documented in docs/profile-format.md.

pub mod check;
pub mod diff;
mod entries;
pub mod error;
pub mod export;
pub mod floor;
pub mod import;
pub mod learn;
pub mod model;
pub mod net;
pub mod pattern;
pub mod seccomp;
pub mod stability;
pub mod store;
pub mod syscalls;
mod syscalls_x86_64;
pub mod timestamp;

pub use check::{Matcher, Verdict};
pub use error::{PolicyError, Result};
pub use floor::RuntimeFloor;
pub use learn::{Learner, LearnerConfig, Observation, Observed};
pub use model::{Digest, Profile, ProfileDelta, State};
pub use stability::LearningKeys;
pub use store::Store;
pub use timestamp::Timestamp;
