//! A client newer than its server: what the client asks for that the server does not know yet
//! is dropped, not turned into an error for the user.

mod common;

use common::{bounded, Ed, Server};
use rmq_client::{Fetch, Push};
use std::time::Duration;

/// The Lua library as it was before FETCH took COMPACT: the word is unknown to it.
fn library_without_compact() -> String {
    let lib = common::lua_library();
    let old = lib
        .replace("elseif kw == 'COMPACT' then", "elseif kw == 'NOT-YET-COMPACT' then")
        .replace("(rest == 'COMPACT' or rest == 'compact')", "false")
        .replace("(first == 'COMPACT' or first == 'compact')", "false");
    assert_ne!(old, lib, "the library names COMPACT where this test expects it");
    old
}

#[tokio::test]
async fn fetch_from_a_server_that_predates_compact_gives_whole_messages() {
    let srv = Server::start(Ed::Lua, &[]);
    let mut c = srv.sync_conn();
    let _: String = redis::cmd("FUNCTION").arg("LOAD").arg(library_without_compact()).query(&mut c).unwrap();
    let refused: redis::RedisResult<redis::Value> = redis::cmd("FCALL").arg("rmq_fetch").arg(1).arg("q").arg("COMPACT").query(&mut c);
    assert!(refused.unwrap_err().to_string().contains("near 'COMPACT'"), "the old library refuses COMPACT");

    let client = srv.client();
    bounded(Duration::from_secs(20), "push and fetch", async {
        client.push(&Push::new("q", "one").header("h", "v")).await.unwrap();
        client.push(&Push::new("q", "two")).await.unwrap();
        let first = client.fetch("q", &Fetch::default()).await.unwrap();
        assert_eq!(first.len(), 1);
        assert_eq!((first[0].body.as_slice(), first[0].attempt, first[0].offset), (&b"one"[..], 1, 1));
        assert_eq!(first[0].headers, vec![("h".to_string(), "v".to_string())]);
        // Asked once: the next FETCH goes straight to the map form.
        let second = client.fetch("q", &Fetch::default()).await.unwrap();
        assert_eq!(second[0].body, b"two");
        assert_eq!(client.ack("q", &[first[0].receipt.as_str(), second[0].receipt.as_str()]).await.unwrap(), 2);
    })
    .await;
}
