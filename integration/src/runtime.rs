//! The two runtimes every conformance case compares.

use std::fmt;

/// A containerd runtime the bench can run containers with.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Runtime {
    /// containerd's stock Go shim, the behavioural reference.
    Runc,
    /// `containerd-shim-vigil-v2`.
    Vigil,
}

impl Runtime {
    /// Both, reference first.
    pub const BOTH: [Runtime; 2] = [Runtime::Runc, Runtime::Vigil];

    /// The `runtime_type` / `ctr run --runtime` value.
    pub fn runtime_type(self) -> &'static str {
        match self {
            Runtime::Runc => "io.containerd.runc.v2",
            Runtime::Vigil => "io.containerd.vigil.v2",
        }
    }

    /// A short name for output and container ids.
    pub fn label(self) -> &'static str {
        match self {
            Runtime::Runc => "runc",
            Runtime::Vigil => "vigil",
        }
    }

    /// The CRI runtime handler configured for it.
    pub fn cri_handler(self) -> &'static str {
        self.label()
    }
}

impl fmt::Display for Runtime {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.runtime_type())
    }
}
