//! The client as the archive's connection to Redis: `rmq archive` (crate rmq-archive) runs
//! every command through [`Client`], in whichever edition the server has.

use redis::Value;
use rmq_archive::backend::{Backend, BoxFuture, Call, RedisError, Reply};

use crate::client::Client;
use crate::error::Error;

fn to_archive(e: Error) -> RedisError {
    RedisError { unavailable: e.is_unavailable(), text: e.to_string() }
}

impl Backend for Client {
    fn call<'a>(&'a self, name: &'a str, queue: Option<&'a str>, args: Vec<Vec<u8>>) -> BoxFuture<'a, Reply> {
        Box::pin(async move { Client::call(self, name, queue, &args).await.map_err(to_archive) })
    }

    fn call_many(&self, calls: Vec<Call>) -> BoxFuture<'_, Result<Vec<Reply>, RedisError>> {
        Box::pin(async move {
            let cmds: Vec<(&str, &str, Vec<Vec<u8>>)> = calls.iter().map(|c| (c.name, c.queue.as_str(), c.args.clone())).collect();
            let replies = Client::call_many(self, &cmds).await.map_err(to_archive)?;
            Ok(replies.into_iter().map(|r| r.map_err(to_archive)).collect())
        })
    }

    fn raw(&self, cmd: redis::Cmd) -> BoxFuture<'_, Reply> {
        Box::pin(async move {
            let v: Value = Client::raw(self, &cmd).await.map_err(to_archive)?;
            Ok(v)
        })
    }

    fn key_command<'a>(&'a self, key: &'a str, cmd: redis::Cmd) -> BoxFuture<'a, Reply> {
        Box::pin(async move { Client::key_command(self, key, &cmd, false).await.map_err(to_archive) })
    }

    fn transaction<'a>(&'a self, key: &'a str, cmds: Vec<redis::Cmd>) -> BoxFuture<'a, Result<Vec<Value>, RedisError>> {
        Box::pin(async move { Client::raw_transaction(self, key, &cmds).await.map_err(to_archive) })
    }

    fn queues(&self) -> BoxFuture<'_, Result<Vec<String>, RedisError>> {
        Box::pin(async move { Client::queues(self).await.map_err(to_archive) })
    }

    fn url(&self) -> String {
        self.config().url.clone()
    }
}

/// `rmq archive` failing (a bad option, the database away at the start …).
impl From<rmq_archive::Error> for Error {
    fn from(e: rmq_archive::Error) -> Error {
        match e {
            rmq_archive::Error::Redis(r) if r.unavailable => Error::Unavailable(r.text),
            rmq_archive::Error::Redis(r) => Error::Refused(r.text),
            rmq_archive::Error::Invalid(t) => Error::Config(t),
            rmq_archive::Error::Failed(t) => Error::Refused(t),
            other => Error::Refused(other.to_string()),
        }
    }
}
