// Every command through the client, on both editions, with typed results.
"use strict";
const { test } = require("node:test");
const assert = require("node:assert/strict");

const { Client, Refused, Unavailable, InvalidMessage, NotInstalled } = require("../dist");
const { editions, editionOpts, Server, deadUrl } = require("./helpers");

for (const ed of editions()) {
  test(`commands round-trip with typed results [${ed}]`, editionOpts(ed), async () => {
    const srv = await Server.start(ed);
    const c = new Client(srv.url);
    try {
      assert.equal(await c.edition(), ed);
      await c.configSet("jobs", { "backoff-ms": 0, "max-attempts": 3 });
      const cfg = await c.configGet("jobs");
      assert.deepEqual([cfg["backoff-ms"], cfg["max-attempts"]], [0, 3]);
      assert.deepEqual(await c.configGet("jobs", "lock-ms"), { "lock-ms": 30000 });
      const body = Buffer.from(Array.from({ length: 256 }, (_, i) => i));
      assert.equal(await c.push("jobs", body, { id: "m1", tag: "t", key: "k", headers: { h: "v", x: "日本" } }), "m1");
      assert.equal(await c.push("jobs", "two", { id: "m2" }), "m2");
      assert.equal(await c.push("jobs", "dup", { id: "m2" }), "m2");
      const later = await c.push("jobs", "later", { delayMs: 60_000 });
      const st = await c.stats("jobs");
      assert.deepEqual([st.ready, st.delayed, st.pushed, st.dups], [2, 1, 3, 1]);
      assert.deepEqual((await c.peek("jobs")).map((m) => m.id), ["m1", "m2"]);
      assert.ok((await c.peek("jobs", "delayed"))[0].due > 0);
      const got = await c.get("jobs", "m1");
      assert.equal(got.state, "ready");
      assert.deepEqual(got.body, body);
      assert.deepEqual([got.tag, got.key, got.headers], ["t", "k", { h: "v", x: "日本" }]);
      assert.equal(await c.get("jobs", "nope"), null);

      const msgs = await c.fetch("jobs", { count: 2, lockMs: 30_000, consumer: "me" });
      assert.deepEqual(msgs.map((m) => [m.id, m.attempt]), [["m1", 1], ["m2", 1]]);
      const [m1, m2] = msgs;
      assert.ok(m1.receipt && m1.deadline > Date.now());
      assert.equal((await c.peek("jobs", "inflight"))[0].consumer, "me");
      assert.ok((await c.touch("jobs", m1.receipt, 60_000)) > m1.deadline);
      assert.equal(await c.ack("jobs", m1.receipt), 1);
      assert.equal(await c.ack("jobs", m1.receipt), 0);
      assert.equal(await c.nack("jobs", m2.receipt, "error", { reason: "boom" }), true);
      assert.equal(await c.nack("jobs", m2.receipt, "fail"), false);
      const err = (await c.peek("jobs", "errors"))[0];
      assert.deepEqual([err.id, err.error], ["m2", "boom"]);
      assert.equal(await c.requeue("jobs", "m2"), 1);
      assert.equal((await c.fetch("jobs"))[0].id, "m2");
      assert.deepEqual(await c.recover("jobs"), { expired: 0, failed: 0, errors: 0 });
      assert.ok((await c.queues()).includes("jobs"));
      assert.equal(await c.delete("jobs", later, "m2"), 2);
      await c.push("jobs", "x");
      assert.equal(await c.purge("jobs", "all"), 1);
      assert.equal((await c.stats("jobs")).acked, 1);
    } finally {
      await c.close();
      srv.close();
    }
  });

  test(`fetch with blockMs waits for a message [${ed}]`, editionOpts(ed), async () => {
    const srv = await Server.start(ed);
    const c = new Client(srv.url);
    try {
      const t0 = Date.now();
      assert.deepEqual(await c.fetch("jobs", { blockMs: 300 }), []);
      assert.ok(Date.now() - t0 >= 250);
      const pushed = new Promise((resolve, reject) => setTimeout(() => c.push("jobs", "hi").then(resolve, reject), 200));
      const got = await c.fetch("jobs", { blockMs: 10_000 });
      await pushed;
      assert.deepEqual(got.map((m) => m.body.toString()), ["hi"]);
    } finally {
      await c.close();
      srv.close();
    }
  });

  test(`errors are sorted into Unavailable and Refused [${ed}]`, editionOpts(ed), async () => {
    const dead = new Client(await deadUrl(), { connectTimeoutMs: 500 });
    await assert.rejects(dead.push("jobs", "x"), (e) => e instanceof Unavailable && /cannot connect to redis:\/\/127\.0\.0\.1/.test(e.message));
    await dead.close();
    const srv = await Server.start(ed);
    const c = new Client(srv.url);
    try {
      await assert.rejects(c.push("bad name", "x"), InvalidMessage);
      await assert.rejects(c.push("jobs", "x", { delayMs: 1, at: 5 }), InvalidMessage);
      await c.configSet("jobs", { maxlen: 1 });
      await c.push("jobs", "1");
      await assert.rejects(c.push("jobs", "2"), (e) => e instanceof Refused && /^ERR queue full/.test(e.message));
      await assert.rejects(c.configSet("jobs", { nope: 1 }), (e) => e instanceof Refused && /ERR unknown setting/.test(e.message));
    } finally {
      await c.close();
      srv.close();
    }
  });
}

test("the Lua library is loaded only by commands that write", async () => {
  const srv = await Server.start("lua");
  const c = new Client(srv.url);
  try {
    assert.equal(await c.edition(), "lua");
    await assert.rejects(c.stats("jobs"), (e) => e instanceof NotInstalled && e instanceof Refused && /rmq is not installed on redis:\/\/127/.test(e.message));
    await assert.rejects(c.configGet("jobs"), NotInstalled);
    assert.deepEqual(await c.raw(["FUNCTION", "LIST"]), []);
    await c.push("jobs", "x");
    assert.equal((await c.stats("jobs")).ready, 1);
    // A restart without persistence loses the library: the next write loads it again.
    await srv.killAndWait();
    await srv.restart();
    await c.push("jobs", "y");
    assert.equal((await c.stats("jobs")).ready, 1);
  } finally {
    await c.close();
    srv.close();
  }
});

test("the packaged Lua library is the repository's", (t) => {
  const fs = require("node:fs");
  const path = require("node:path");
  const { luaLibrary } = require("../dist");
  const { REPO } = require("./helpers");
  const repo = path.join(REPO, "lua", "rmq.lua");
  if (!fs.existsSync(repo)) return t.skip("not inside the rmq repository");
  assert.equal(luaLibrary(), fs.readFileSync(repo, "utf8"), "run `make sync-lua`");
});

test("fetch from a server that predates COMPACT gives whole messages", async () => {
  const { luaLibrary } = require("../dist");
  const { admin } = require("./helpers");
  const current = luaLibrary();
  const old = current
    .replace("elseif kw == 'COMPACT' then", "elseif kw == 'NOT-YET-COMPACT' then")
    .replace("(rest == 'COMPACT' or rest == 'compact')", "false")
    .replace("(first == 'COMPACT' or first == 'compact')", "false");
  assert.notEqual(old, current, "the library names COMPACT where this test expects it");
  const srv = await Server.start("lua");
  const c = new Client(srv.url);
  try {
    await admin(srv.port, "FUNCTION", "LOAD", old);
    await assert.rejects(admin(srv.port, "FCALL", "rmq_fetch", 1, "q", "COMPACT"), /near 'COMPACT'/);
    await c.push("q", "one", { headers: { h: "v" } });
    await c.push("q", "two");
    const [first] = await c.fetch("q");
    assert.deepEqual([first.body.toString(), first.attempt, first.offset, first.headers], ["one", 1, 1, { h: "v" }]);
    const [second] = await c.fetch("q");
    assert.equal(second.body.toString(), "two");
    assert.equal(await c.ack("q", first.receipt, second.receipt), 2);
  } finally {
    await c.close();
    srv.close();
  }
});

for (const ed of editions()) {
  test(`a fetched message has every field [${ed}]`, editionOpts(ed), async () => {
    const srv = await Server.start(ed);
    const c = new Client(srv.url);
    try {
      await c.push("q", "body", { id: "m1", tag: "t", key: "k", headers: { a: "1", b: "2" } });
      const [m] = await c.fetch("q", { consumer: "w" });
      assert.deepEqual([m.id, m.body.toString(), m.tag, m.key, m.headers, m.attempt, m.offset], ["m1", "body", "t", "k", { a: "1", b: "2" }, 1, 1]);
      assert.ok(m.deadline >= m.created + 30_000 && m.receipt.startsWith("1-1-"));
      assert.equal(await c.ack("q", m.receipt), 1);
    } finally {
      await c.close();
      srv.close();
    }
  });
}
