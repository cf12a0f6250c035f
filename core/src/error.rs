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
    /// More HEADERs than a message may carry.
    TooManyHeaders(usize),
    InvalidConsumer,
    DelayWithAt,
    TwoNackActions,
    DelayWithoutRetry,
    QueueFull,
    UnknownSetting(Vec<u8>),
    /// A bad setting value: the whole message after `ERR `.
    BadSetting(String),
    /// A key of the queue holds another type than rmq's (someone wrote it by hand).
    WrongType,
    /// A counter of `st:{q}` holds something else than an integer.
    NotAnInteger,
    /// A write on a read-only replica (RMQ.CONFIG SET).
    ReadOnlyReplica,
    /// The caller's ACL user may not write the queue (RMQ.CONFIG SET).
    NoPermission,
    /// The queue's slot is moving between cluster nodes: retry.
    SlotMoving,
    /// A long lookup by id (GET, DEL, REQUEUE) saw the queue changed by writes that were not
    /// rmq's, again and again: retry.
    LookupDisturbed,
    /// An error reply of the Lua core (lua/rmq.lua), passed on as it is.
    Reply(String),
    /// A Lua-core command stopped at its instruction or time budget, between two moves.
    OverBudget,
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
            Error::TooManyHeaders(max) => write!(f, "ERR a message has at most {max} HEADERs"),
            Error::InvalidConsumer => write!(f, "ERR CONSUMER must be 1 to 200 bytes"),
            Error::DelayWithAt => write!(f, "ERR DELAY and AT cannot be used together"),
            Error::TwoNackActions => write!(f, "ERR RETRY, FAIL and ERROR cannot be used together"),
            Error::DelayWithoutRetry => write!(f, "ERR DELAY goes only with RETRY"),
            Error::QueueFull => write!(f, "ERR queue full"),
            Error::UnknownSetting(name) => write!(f, "ERR unknown setting '{}'", lossy(name)),
            Error::BadSetting(msg) => write!(f, "ERR {msg}"),
            Error::WrongType => write!(f, "WRONGTYPE Operation against a key holding the wrong kind of value"),
            Error::NotAnInteger => write!(f, "ERR hash value is not an integer"),
            Error::ReadOnlyReplica => write!(f, "READONLY You can't write against a read only replica."),
            Error::NoPermission => write!(f, "NOPERM this user has no permissions to access one of the keys used as arguments"),
            Error::SlotMoving => write!(f, "TRYAGAIN the queue's slot is moving between cluster nodes; retry"),
            Error::LookupDisturbed => {
                write!(f, "TRYAGAIN the queue kept being changed by writes other than rmq's during the lookup; retry")
            }
            Error::Reply(text) => write!(f, "{text}"),
            Error::OverBudget => write!(
                f,
                "ERR stopped at the module's Lua budget (rmq.lua-instruction-budget, rmq.lua-time-budget-ms); what it moved before stopping stays moved"
            ),
            Error::Internal => write!(f, "ERR internal error"),
        }
    }
}

impl std::error::Error for Error {}

pub type Result<T> = std::result::Result<T, Error>;
