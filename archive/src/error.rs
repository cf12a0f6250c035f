//! Errors of the archive.

/// What went wrong.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The database refused or could not be reached.
    #[error("database: {0}")]
    Db(#[from] sqlx::Error),
    /// A schema migration failed.
    #[error("database migration: {0}")]
    Migrate(#[from] sqlx::migrate::MigrateError),
    /// Redis (or rmq on it) answered with an error or could not be reached.
    #[error("redis: {0}")]
    Redis(#[from] crate::backend::RedisError),
    /// A bad option or argument.
    #[error("{0}")]
    Invalid(String),
    /// Anything else, said in full (what failed, and where).
    #[error("{0}")]
    Failed(String),
}

impl Error {
    /// True when waiting and trying again can help (Redis or the database is away).
    pub fn is_transient(&self) -> bool {
        match self {
            Error::Redis(e) => e.unavailable,
            Error::Db(e) => !matches!(e, sqlx::Error::Configuration(_) | sqlx::Error::ColumnNotFound(_)),
            _ => false,
        }
    }
}

pub type Result<T, E = Error> = std::result::Result<T, E>;
