//! The task service's errors and their ttrpc status codes (the one place they are mapped).

use containerd_shim::protos::ttrpc;
use containerd_shim::protos::ttrpc::Code;

use crate::config::ConfigError;
use crate::guard::GuardError;
use crate::runc::RuncError;

/// Why a task request failed. The message reaches `ctr` / the kubelet as it is.
#[derive(Debug, thiserror::Error)]
pub enum TaskError {
    /// No such container or process.
    #[error("{0}: not found")]
    NotFound(String),
    /// The id is taken.
    #[error("{0}: already exists")]
    AlreadyExists(String),
    /// The request is malformed.
    #[error("{0}")]
    InvalidArgument(String),
    /// The object is not in a state that allows the request.
    #[error("{0}")]
    FailedPrecondition(String),
    /// The shim does not do this.
    #[error("{0}")]
    Unimplemented(String),
    /// runc failed; `context` says which step ("OCI runtime create failed").
    #[error("{context}: {source}")]
    Runtime {
        /// The step, in the words the Go shim uses.
        context: &'static str,
        /// runc's error.
        #[source]
        source: RuncError,
    },
    /// The node config could not be used.
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// The guard refused or failed.
    #[error(transparent)]
    Guard(#[from] GuardError),
    /// Anything else: I/O around the container (mounts, fifos, sockets).
    #[error("{0}")]
    Internal(String),
}

impl TaskError {
    /// An `Internal` error naming the failed step and its cause.
    pub fn io(step: impl std::fmt::Display, err: impl std::fmt::Display) -> Self {
        TaskError::Internal(format!("{step}: {err}"))
    }

    /// A runc failure during `context`.
    pub fn runtime(context: &'static str, source: RuncError) -> Self {
        TaskError::Runtime { context, source }
    }

    fn code(&self) -> Code {
        match self {
            TaskError::NotFound(_) => Code::NOT_FOUND,
            TaskError::AlreadyExists(_) => Code::ALREADY_EXISTS,
            TaskError::InvalidArgument(_) | TaskError::Config(_) => Code::INVALID_ARGUMENT,
            TaskError::FailedPrecondition(_) => Code::FAILED_PRECONDITION,
            TaskError::Unimplemented(_) => Code::UNIMPLEMENTED,
            TaskError::Guard(GuardError::InvalidRequest(_)) => Code::INVALID_ARGUMENT,
            TaskError::Guard(GuardError::Unavailable(_)) => Code::FAILED_PRECONDITION,
            TaskError::Runtime { source, .. } if source.is_not_found() => Code::NOT_FOUND,
            TaskError::Runtime { .. } | TaskError::Internal(_) => Code::UNKNOWN,
        }
    }
}

impl From<TaskError> for ttrpc::Error {
    fn from(e: TaskError) -> Self {
        ttrpc::Error::RpcStatus(ttrpc::get_status(e.code(), e.to_string()))
    }
}

/// Result of a task-service step.
pub type TaskResult<T> = Result<T, TaskError>;

#[cfg(test)]
mod tests {
    use super::*;

    fn status(e: TaskError) -> (Code, String) {
        match ttrpc::Error::from(e) {
            ttrpc::Error::RpcStatus(s) => (s.code(), s.message().to_string()),
            other => panic!("not a status: {other:?}"),
        }
    }

    #[test]
    fn guard_errors_keep_their_message_and_get_their_codes() {
        let (code, msg) = status(GuardError::InvalidRequest("bad vigil.dev/mode".into()).into());
        assert_eq!(
            (code, msg.as_str()),
            (Code::INVALID_ARGUMENT, "bad vigil.dev/mode")
        );
        let (code, _) = status(GuardError::Unavailable("no lsm".into()).into());
        assert_eq!(code, Code::FAILED_PRECONDITION);
    }

    #[test]
    fn runc_gone_maps_to_not_found() {
        let e = RuncError::Failed {
            verb: "kill",
            code: 1,
            message: "container not running".into(),
        };
        let (code, msg) = status(TaskError::runtime("OCI runtime kill failed", e));
        assert_eq!(code, Code::NOT_FOUND);
        assert_eq!(msg, "OCI runtime kill failed: container not running");
    }

    #[test]
    fn checkpoint_is_typed_unimplemented() {
        let (code, _) = status(TaskError::Unimplemented("checkpoint".into()));
        assert_eq!(code, Code::UNIMPLEMENTED);
    }
}
