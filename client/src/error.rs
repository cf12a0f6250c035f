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
}

pub type Result<T, E = Error> = std::result::Result<T, E>;
