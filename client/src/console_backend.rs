//! The client as the console's connection to Redis: `rmq console` and `rmq metrics` (crate
//! rmq-console) run every command through [`Client`], in whichever edition the server has.

use redis::Value;
use rmq_console::backend::{Backend, BoxFuture, Call, RedisError, Reply};

use crate::client::Client;
use crate::error::Error;
use crate::Edition;

fn to_console(e: Error) -> RedisError {
    RedisError { unavailable: e.is_unavailable(), text: e.to_string() }
}

impl Backend for Client {
    fn edition(&self) -> BoxFuture<'_, Result<&'static str, RedisError>> {
        Box::pin(async move {
            match Client::edition(self).await.map_err(to_console)? {
                Edition::Module => Ok("module"),
                Edition::Lua => Ok("lua"),
            }
        })
    }

    fn call<'a>(&'a self, name: &'a str, queue: Option<&'a str>, args: Vec<Vec<u8>>) -> BoxFuture<'a, Reply> {
        Box::pin(async move { Client::call(self, name, queue, &args).await.map_err(to_console) })
    }

    fn call_many(&self, calls: Vec<Call>) -> BoxFuture<'_, Result<Vec<Reply>, RedisError>> {
        Box::pin(async move {
            let cmds: Vec<(&str, &str, Vec<Vec<u8>>)> = calls.iter().map(|c| (c.name, c.queue.as_str(), c.args.clone())).collect();
            let replies = Client::call_many(self, &cmds).await.map_err(to_console)?;
            Ok(replies.into_iter().map(|r| r.map_err(to_console)).collect())
        })
    }

    fn raw(&self, cmd: redis::Cmd) -> BoxFuture<'_, Reply> {
        Box::pin(async move {
            let v: Value = Client::raw(self, &cmd).await.map_err(to_console)?;
            Ok(v)
        })
    }

    fn url(&self) -> String {
        self.config().url.clone()
    }
}

/// `rmq console` / `rmq metrics` failing to start (bad flags, address in use …).
impl From<rmq_console::Error> for Error {
    fn from(e: rmq_console::Error) -> Error {
        Error::Config(e.to_string())
    }
}
