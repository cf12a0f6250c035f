//! One error type for every refusal; its text is the error reply, the same in both editions
//! (docs/commands.md lists them).

use std::fmt;

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Error {
    InvalidQueueName,
    /// The command's name, lower case (`rmq.push`).
    WrongArity(&'static str),
    /// The argument as typed.
    Syntax(Vec<u8>),
    /// The option keyword, upper case.
    NeedsValue(&'static str),
    /// A number out of its rule: the whole message after `ERR `.
    Number(&'static str),
    CountAboveMax(u64),
    InvalidId,
    EmptyHeaderName,
    HeaderTwice(Vec<u8>),
    InvalidConsumer,
    DelayWithAt,
    TwoNackActions,
    DelayWithoutRetry,
    QueueFull,
    UnknownSetting(Vec<u8>),
    /// A bad setting value: the whole message after `ERR `.
    BadSetting(String),
    Internal,
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let lossy = |b: &[u8]| String::from_utf8_lossy(b).into_owned();
        match self {
            Error::InvalidQueueName => write!(f, "ERR invalid queue name"),
            Error::WrongArity(cmd) => write!(f, "ERR wrong number of arguments for '{cmd}' command"),
            Error::Syntax(arg) => write!(f, "ERR syntax error near '{}'", lossy(arg)),
            Error::NeedsValue(kw) => write!(f, "ERR {kw} needs a value"),
            Error::Number(msg) => write!(f, "ERR {msg}"),
            Error::CountAboveMax(max) => write!(f, "ERR COUNT must not exceed max-fetch-count ({max})"),
            Error::InvalidId => write!(f, "ERR ID must be 1 to 128 printable ASCII characters without spaces"),
            Error::EmptyHeaderName => write!(f, "ERR HEADER name must not be empty"),
            Error::HeaderTwice(name) => write!(f, "ERR HEADER '{}' given twice", lossy(name)),
            Error::InvalidConsumer => write!(f, "ERR CONSUMER must be 1 to 200 bytes"),
            Error::DelayWithAt => write!(f, "ERR DELAY and AT cannot be used together"),
            Error::TwoNackActions => write!(f, "ERR RETRY, FAIL and ERROR cannot be used together"),
            Error::DelayWithoutRetry => write!(f, "ERR DELAY goes only with RETRY"),
            Error::QueueFull => write!(f, "ERR queue full"),
            Error::UnknownSetting(name) => write!(f, "ERR unknown setting '{}'", lossy(name)),
            Error::BadSetting(msg) => write!(f, "ERR {msg}"),
            Error::Internal => write!(f, "ERR internal error"),
        }
    }
}

impl std::error::Error for Error {}

pub type Result<T> = std::result::Result<T, Error>;
