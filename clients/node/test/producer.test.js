// The producer against real redis-servers: every PUSH option, ids, the spool when Redis is down,
// drain on start, refusals, and the catastrophic case.
"use strict";
const { test } = require("node:test");
const assert = require("node:assert/strict");
const fs = require("node:fs");
const path = require("node:path");

const { Client, Producer, Refused, InvalidMessage, NotStored, Unavailable } = require("../dist");
const { editions, editionOpts, Server, waitFor, deadUrl, tmpDir, sleep } = require("./helpers");

const UUID7 = /^[0-9a-f]{8}-[0-9a-f]{4}-7[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$/;

for (const ed of editions()) {
  test(`push carries every option and makes time-ordered ids [${ed}]`, editionOpts(ed), async () => {
    const srv = await Server.start(ed);
    const p = new Producer(srv.url, { spoolDir: tmpDir() });
    try {
      const a = await p.push("jobs", Buffer.from([0, 255]), { tag: "t", key: "k", headers: [["h", "v"], ["n", "2"]] });
      const b = await p.push("jobs", "later", { id: "my-id", delayMs: 60_000 });
      const at = await p.push("jobs", "at", { at: new Date(4102444800000) });
      assert.ok(!a.spooled && UUID7.test(a.id) && b.id === "my-id");
      const m = await p.client.get("jobs", a.id);
      assert.deepEqual([m.body, m.tag, m.key, m.headers], [Buffer.from([0, 255]), "t", "k", { h: "v", n: "2" }]);
      assert.equal((await p.client.get("jobs", "my-id")).state, "delayed");
      assert.equal((await p.client.get("jobs", at.id)).due, 4102444800000);
      assert.equal((await p.push("jobs", "again", { id: "my-id" })).id, "my-id");
      assert.equal((await p.client.stats("jobs")).dups, 1);
      const ids = [];
      for (let i = 0; i < 50; i++) ids.push((await p.push("jobs", String(i))).id);
      assert.deepEqual(ids, [...ids].sort());
    } finally {
      await p.close();
      srv.close();
    }
  });

  test(`Redis down during pushes: spooled, then delivered once [${ed}]`, editionOpts(ed), async () => {
    const srv = await Server.start(ed);
    const client = new Client(srv.url, { connectTimeoutMs: 300, commandTimeoutMs: 2000 });
    const p = new Producer(client, { spoolDir: tmpDir(), retries: 1, retryBackoffMs: 10, drainIntervalMs: 100 });
    try {
      for (let i = 0; i < 20; i++) assert.equal((await p.push("jobs", `up ${i}`)).spooled, false);
      const first = await client.fetch("jobs", { count: 100 });
      await client.ack("jobs", ...first.map((m) => m.receipt));
      await srv.killAndWait();
      const down = [];
      for (let i = 0; i < 100; i++) down.push(await p.push("jobs", `down ${i}`, { tag: "d" }));
      assert.ok(down.every((x) => x.spooled));
      assert.equal((await p.spoolStatus()).records, 100);
      await srv.restart(); // empty: no persistence; the spool must bring all 100
      await waitFor("the background drain", async () => (await p.spoolStatus()).records === 0);
      const seen = [];
      for (;;) {
        const ms = await client.fetch("jobs", { count: 1000 });
        if (!ms.length) break;
        seen.push(...ms);
      }
      assert.deepEqual(seen.map((m) => m.id).sort(), down.map((x) => x.id).sort());
      assert.deepEqual(seen.map((m) => m.body.toString()), down.map((_, i) => `down ${i}`));
      assert.equal((await client.stats("jobs")).pushed, 100);
      assert.equal((await p.push("jobs", "after")).spooled, false);
    } finally {
      await p.close();
      await client.close();
      srv.close();
    }
  });

  test(`a new producer drains what an old one spooled [${ed}]`, editionOpts(ed), async () => {
    const dir = tmpDir();
    const old = new Producer(await deadUrl(), { spoolDir: dir, retries: 0, backgroundDrain: false }, { connectTimeoutMs: 300 });
    const ids = [];
    for (let i = 0; i < 5; i++) ids.push((await old.push("jobs", `m${i}`)).id);
    await old.close();
    const srv = await Server.start(ed);
    const p = new Producer(srv.url, { spoolDir: dir, drainIntervalMs: 100 });
    try {
      await p.start();
      await waitFor("drain on start", async () => (await p.client.stats("jobs")).ready === 5);
      assert.deepEqual((await p.client.peek("jobs")).map((m) => m.id), ids);
      assert.equal((await p.spoolStatus()).records, 0);
    } finally {
      await p.close();
      srv.close();
    }
  });

  test(`refusals are raised, not spooled [${ed}]`, editionOpts(ed), async () => {
    const srv = await Server.start(ed);
    const dir = tmpDir();
    const p = new Producer(srv.url, { spoolDir: dir });
    try {
      await p.client.configSet("jobs", { maxlen: 1 });
      await p.push("jobs", "1");
      await assert.rejects(p.push("jobs", "2"), (e) => e instanceof Refused && /queue full/.test(e.message));
      assert.equal((await p.spoolStatus()).records, 0);
    } finally {
      await p.close();
      srv.close();
    }
    const d = new Producer(await deadUrl(), { spoolDir: dir, retries: 0 }, { connectTimeoutMs: 300 });
    try {
      await assert.rejects(d.push("no spaces allowed", "x"), InvalidMessage);
      await assert.rejects(d.push("jobs", "x", { headers: [["a", "1"], ["a", "2"]] }), InvalidMessage);
      assert.equal((await d.spoolStatus()).records, 0);
    } finally {
      await d.close();
    }
  });
}

test("Redis down and the spool unwritable is an error", async () => {
  const file = path.join(tmpDir(), "file");
  fs.writeFileSync(file, "not a directory");
  const p = new Producer(await deadUrl(), { spoolDir: file, retries: 0 }, { connectTimeoutMs: 300 });
  await assert.rejects(p.push("jobs", "x"), NotStored);
  await p.close();
  const off = new Producer(await deadUrl(), { spoolDir: null, retries: 0 }, { connectTimeoutMs: 300 });
  await assert.rejects(off.push("jobs", "x"), Unavailable);
  await off.close();
  await sleep(0);
});
