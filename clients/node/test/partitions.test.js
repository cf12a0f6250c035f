// Partitioned queues: the rules every client language follows (docs/cluster.md), and on one
// server, both editions: the registry, routing by key, a worker over every partition keeping each
// key's order, and stats, peek, recover and fetch over every partition. (On a cluster: cluster.test.js.)
"use strict";
const { test } = require("node:test");
const assert = require("node:assert/strict");
const { crc32 } = require("node:zlib");

const {
  Client, Producer, Worker, Partitioned, partitionIndex, partitionNames, queueSlot, keySlot, REGISTRY_KEY,
  InvalidMessage, ProtocolError, Refused,
} = require("../dist");
const { editions, editionOpts, Server, waitFor, tmpDir } = require("./helpers");

test("the key hash and the partition names are every client's", () => {
  // The check values of docs/cluster.md.
  assert.equal(crc32(Buffer.from("123456789")), 0xcbf43926);
  assert.equal(partitionIndex("123456789", 12), 2);
  assert.equal(partitionIndex("customer-7", 12), 8);
  assert.equal(partitionIndex(Buffer.from("customer-7"), 1), 0);
  assert.equal(partitionIndex("", 5), 0);
  // UTF-8 bytes of the key.
  assert.equal(partitionIndex("日本", 1000), crc32(Buffer.from("日本", "utf8")) % 1000);
  assert.deepEqual(partitionNames("orders", 12), [
    "orders#0.40", "orders#1", "orders#2.42", "orders#3.22", "orders#4", "orders#5.42",
    "orders#6.48", "orders#7", "orders#8.20", "orders#9.1", "orders#10.23", "orders#11",
  ]);
  for (const count of [1, 2, 3, 12, 100]) {
    partitionNames("orders", count).forEach((q, i) => {
      const s = queueSlot(q);
      assert.ok(s >= Math.floor((i * 16384) / count) && s < Math.floor(((i + 1) * 16384) / count), q);
    });
  }
  // Redis Cluster's slots (CLUSTER KEYSLOT on a real server).
  assert.deepEqual([queueSlot("jobs"), keySlot("msg:{jobs}"), keySlot("123456789")], [9631, 9631, 12739]);
  for (const [n, c] of [["orders", 0], ["orders", 1025], ["bad name", 2], ["n".repeat(181), 2]]) {
    assert.throws(() => partitionNames(n, c), InvalidMessage);
  }
});

test("the registry record reads back", () => {
  const p = new Partitioned("orders", true, partitionNames("orders", 4), 1700);
  assert.ok(p.encode().startsWith("v=1 count=4 ordered=1 created=1700 partitions=orders#0"));
  assert.deepEqual(Partitioned.decode("orders", p.encode()), p);
  for (const bad of ["v=2 count=1 partitions=a", "v=1 count=2 partitions=a", "v=1 count=1 partitions=a b", "v=1 count=1 partitions=bad{q}"]) {
    assert.throws(() => Partitioned.decode("x", bad), ProtocolError);
  }
  assert.deepEqual(new Set(Array.from({ length: 10 }, () => p.route("customer-7"))), new Set([p.partitions[partitionIndex("customer-7", 4)]]));
  assert.equal(new Set(Array.from({ length: 400 }, () => p.route(""))).size, 4, "keyless messages reach every partition");
});

for (const ed of editions()) {
  test(`a partitioned queue on one server keeps each key's order [${ed}]`, editionOpts(ed), async () => {
    const srv = await Server.start(ed);
    const c = new Client(srv.url);
    try {
      assert.equal(await c.isCluster(), false);
      assert.equal(await c.partitioned("jobs"), null, "an ordinary queue");
      // The Lua edition starts without the library: creating loads it (ordered partitions are configured, a write).
      const { partitioned: p, created } = await c.partitionCreate("jobs", 4, { ordered: true });
      assert.ok(created);
      assert.deepEqual(p.partitions, partitionNames("jobs", 4));
      const again = await c.partitionCreate("jobs", 4, { ordered: true });
      assert.ok(!again.created);
      assert.deepEqual(again.partitioned, p, "creating again changes nothing");
      await assert.rejects(c.partitionCreate("jobs", 5, { ordered: true }), /fixed at creation/);
      for (const q of p.partitions) assert.deepEqual(await c.configGet(q, "ordered"), { ordered: 1 });
      const rec = String(await c.raw(["HGET", REGISTRY_KEY, "jobs"]));
      assert.match(rec, /^v=1 count=4 ordered=1 created=\d+ partitions=/);
      assert.deepEqual(await c.partitionList(), [p]);
      assert.ok(!(await c.queues()).includes(REGISTRY_KEY));
      await c.push("busy", "x");
      await assert.rejects(c.partitionCreate("busy", 2), /holds 1 message/);
      await assert.rejects(c.partitionCreate(p.partitions[1], 2), /collides/);

      const producer = new Producer(srv.url, { spoolDir: tmpDir() });
      try {
        for (let seq = 0; seq < 10; seq++) {
          for (const key of "abcdef") {
            const r = await producer.push("jobs", `${key}:${seq}`, { key });
            assert.deepEqual([r.spooled, r.queue], [false, p.partitions[partitionIndex(key, 4)]]);
          }
        }
      } finally {
        await producer.close();
      }
      const seen = new Map();
      const partitionOf = new Map();
      const workers = [0, 1].map(
        () =>
          new Worker(srv.url, "jobs", (m) => {
            const [key, seq] = m.body.toString().split(":");
            seen.set(key, [...(seen.get(key) ?? []), Number(seq)]);
            partitionOf.set(key, new Set([...(partitionOf.get(key) ?? []), m.queue]));
          }, { concurrency: 3, handleSignals: false }),
      );
      const runs = workers.map((w) => w.run());
      try {
        await waitFor("every message handled", () => [...seen.values()].reduce((n, v) => n + v.length, 0) >= 60, 60_000);
      } finally {
        for (const w of workers) w.stop();
      }
      const reports = await Promise.all(runs);
      assert.equal(reports.reduce((n, r) => n + r.acked, 0), 60);
      assert.equal(reports.reduce((n, r) => n + r.stale, 0), 0);
      for (const [key, seqs] of seen) {
        assert.deepEqual(seqs, [0, 1, 2, 3, 4, 5, 6, 7, 8, 9], `key ${key} in order`);
        assert.deepEqual([...partitionOf.get(key)], [p.partitionForKey(key)]);
      }
      const st = await c.partitionStats("jobs");
      assert.deepEqual([st.total.pushed, st.total.acked, st.total.ready], [60, 60, 0]);
      assert.deepEqual(Object.keys(st.partitions), p.partitions);
    } finally {
      await c.close();
      srv.close();
    }
  });

  test(`inspection and fetch cover every partition [${ed}]`, editionOpts(ed), async () => {
    const srv = await Server.start(ed);
    const c = new Client(srv.url);
    try {
      const { partitioned: p } = await c.partitionCreate("inspect", 3);
      for (let i = 0; i < 9; i++) await c.push(p.partitions[i % 3], `m${i}`, { id: `m${i}` });
      const peeked = await c.partitionPeek("inspect");
      assert.deepEqual(peeked.map((m) => m.id).sort(), Array.from({ length: 9 }, (_, i) => `m${i}`));
      assert.deepEqual(new Set(peeked.map((m) => m.queue)), new Set(p.partitions));
      // Fair fetch: one message at a time, the partitions in turn.
      const got = [];
      for (let i = 0; i < 3; i++) got.push(await c.partitionFetch("inspect", { count: 1, lockMs: 60_000 }));
      assert.ok(got.every((g) => g.length === 1));
      assert.deepEqual(new Set(got.map((g) => g[0].queue)), new Set(p.partitions), "each fetch starts one past the last");
      for (const [m] of got) assert.equal(await c.nack(m.queue, m.receipt, "error"), true);
      const more = await c.partitionFetch("inspect", { count: 6, lockMs: 60_000 });
      assert.equal(more.length, 6);
      for (const m of more) assert.equal(await c.nack(m.queue, m.receipt, "fail"), true);
      const rec = await c.partitionRecover("inspect");
      assert.deepEqual(rec.total, { expired: 0, failed: 6, errors: 3 });
      assert.equal(Object.values(rec.partitions).reduce((n, r) => n + r.failed, 0), 6);
      assert.equal((await c.partitionStats("inspect")).total.ready, 9);
      assert.equal((await c.partitionFetch("inspect", { count: 20, blockMs: 200 })).length, 9);
      assert.deepEqual(await c.partitionFetch("inspect", { blockMs: 200 }), []);
      await assert.rejects(c.partitionStats("plain"), Refused);
    } finally {
      await c.close();
      srv.close();
    }
  });

  test(`a push spooled under the logical name goes to its partition [${ed}]`, editionOpts(ed), async () => {
    const srv = await Server.start(ed, ["--appendonly", "yes", "--appendfsync", "always"]);
    const c = new Client(srv.url);
    try {
      const { partitioned: p } = await c.partitionCreate("later", 4);
      await srv.killAndWait();
      const producer = new Producer(srv.url, { spoolDir: tmpDir(), retries: 0, backgroundDrain: false }, { connectTimeoutMs: 300 });
      try {
        const r = await producer.push("later", "hi", { key: "customer-7", id: "s1" });
        assert.deepEqual([r.spooled, r.queue], [true, "later"], "not looked up: spooled under the logical name");
        await srv.restart();
        await waitFor("the server is back", async () => (await producer.client.ping(), true));
        assert.equal((await producer.drain()).sent, 1);
      } finally {
        await producer.close();
      }
      const got = await c.get(p.partitionForKey("customer-7"), "s1");
      assert.equal(got.body.toString(), "hi");
    } finally {
      await c.close();
      srv.close();
    }
  });
}
