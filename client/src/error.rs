//! Errors of the client helper.

/// What went wrong.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// Redis could not take the request now (down, unreachable, timed out, loading, read-only
    /// replica after a failover, out of memory, busy script …). Retrying later can succeed;
    /// the producer spools messages on this error.
    #[error("redis unavailable: {0}")]
    Unavailable(String),
    /// Redis answered with an error that is about the request itself or the setup (bad
    /// argument, `ERR queue full`, no permission, wrong password …). Retrying the same
    /// request will not help; the producer reports it and never spools it.
    #[error("{0}")]
    Refused(String),
    /// The message was found invalid before it was sent (queue name, id, headers …).
    #[error("invalid message: {0}")]
    Invalid(String),
    /// Bad settings (URL …).
    #[error("configuration: {0}")]
    Config(String),
    /// Redis answered something this client does not understand.
    #[error("unexpected reply: {0}")]
    Protocol(String),
    /// The spool could not be read or written.
    #[error("spool: {0}")]
    Spool(#[from] std::io::Error),
    /// The server has neither the rmq module nor the rmq Lua library, and the command only
    /// reads (only a command that writes installs the library).
    #[error("{0}")]
    NotInstalled(String),
    /// A handler said the worker itself cannot do the work (its command cannot be started,
    /// say): the worker gave the message back and stopped.
    #[error("worker stopped: {0}")]
    WorkerFault(String),
    /// The catastrophic case: Redis did not take the message, and neither did the spool. The
    /// message is NOT stored anywhere; the caller still has it.
    #[error("message not stored: redis unavailable ({redis}) and spool failed ({spool})")]
    NotStored { redis: String, spool: String },
}

impl Error {
    /// True when Redis could not take the request (as opposed to refusing it).
    pub fn is_unavailable(&self) -> bool {
        matches!(self, Error::Unavailable(_))
    }

    /// A short name of the kind of error, for machine-readable output.
    pub fn kind(&self) -> &'static str {
        match self {
            Error::Unavailable(_) => "unavailable",
            Error::Refused(_) => "refused",
            Error::Invalid(_) => "invalid",
            Error::Config(_) => "config",
            Error::Protocol(_) => "protocol",
            Error::Spool(_) => "spool",
            Error::NotInstalled(_) => "not_installed",
            Error::WorkerFault(_) => "worker_fault",
            Error::NotStored { .. } => "not_stored",
        }
    }
}

pub type Result<T, E = Error> = std::result::Result<T, E>;
