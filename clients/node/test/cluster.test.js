// The client on a real Redis Cluster (3 masters, 3 replicas; helpers.TestCluster), both editions:
// every command reaches the master of its queue's slot, a slot that moves under a command, an ACK
// whose answer is lost is never sent again, confirms, a producer and workers, and an ordered
// partitioned queue over the three masters.
"use strict";
const { describe, test, before, after } = require("node:test");
const assert = require("node:assert/strict");

const { Client, Producer, Worker, Unavailable, QUEUE_KEY_PREFIXES, queueSlot } = require("../dist");
const { editions, editionOpts, TestCluster, admin, waitFor, sleep, tmpDir } = require("./helpers");

/** Every command of the contract on queue `q`, with the answers a single server gives. */
async function exerciseEveryCommand(c, q) {
  const mid = `${q}-m1`;
  assert.equal(await c.push(q, "one", { id: mid, key: "k" }), mid);
  assert.equal(await c.push(q, "one again", { id: mid }), mid); // a duplicate
  await c.push(q, "two", { id: `${q}-m2` });
  await c.push(q, "later", { id: `${q}-m3`, delayMs: 3_600_000 });
  const st = await c.stats(q);
  assert.deepEqual([st.ready, st.delayed, st.pushed, st.dups], [2, 1, 3, 1], q);

  let [m] = await c.fetch(q, { count: 1, lockMs: 60_000 });
  assert.deepEqual([m.id, m.body.toString(), m.key, m.queue], [mid, "one", "k", q]);
  assert.ok((await c.touch(q, m.receipt, 120_000)) > 0);
  assert.equal(await c.nack(q, m.receipt, "retry", { delayMs: 0, reason: "again" }), true);
  assert.equal((await c.peek(q, "ready")).length, 2);

  [m] = await c.fetch(q, { count: 1, lockMs: 60_000 });
  assert.equal(await c.ack(q, m.receipt), 1);
  assert.equal(await c.ack(q, m.receipt), 0, "a second ACK changes nothing");

  [m] = await c.fetch(q, { count: 1, lockMs: 60_000 });
  assert.equal(await c.nack(q, m.receipt, "error", { reason: "bad" }), true);
  assert.equal((await c.get(q, m.id)).state, "errors");
  assert.deepEqual(await c.recover(q, { errors: true }), { expired: 0, failed: 0, errors: 1 });
  [m] = await c.fetch(q, { count: 1, lockMs: 60_000 });
  assert.equal(await c.nack(q, m.receipt, "fail", { reason: "dead" }), true);
  assert.equal((await c.peek(q, "failed")).length, 1);
  assert.equal(await c.requeue(q, m.id), 1);
  assert.equal(await c.requeue(q, `${q}-m3`), 1, "delayed -> ready");
  assert.equal(await c.delete(q, m.id), 1);

  await c.configSet(q, { log: 1, "lock-ms": 45000 });
  assert.deepEqual(await c.configGet(q, "lock-ms"), { "lock-ms": 45000 });
  await c.push(q, "logged", { id: `${q}-m4` });
  assert.ok((await c.log(q)).length, "the log has the push");
  assert.equal(await c.replay(q, 0), 1);
  assert.equal((await c.stats(q)).ready, 3, "m3, m4 and the replayed copy");
  assert.equal(await c.purge(q, "ready"), 3);
  await c.push(q, "stays", { id: `${q}-m5` }); // so that it shows in QUEUES
}

/** How many times the node ran `command` (INFO commandstats). */
async function commandCalls(port, command) {
  const info = String(await admin(port, "INFO", "commandstats"));
  const m = new RegExp(`cmdstat_${command.replace(".", "\\.")}:calls=(\\d+)`).exec(info);
  return m ? Number(m[1]) : 0;
}

/** The words of the slow log's commands. */
function words(entries) {
  const out = [];
  for (const e of entries) for (const w of e[3]) out.push(String(w));
  return out;
}

for (const ed of editions()) {
  describe(`on a Redis Cluster [${ed}]`, editionOpts(ed), () => {
    let cluster;
    before(async () => {
      cluster = await TestCluster.start(ed);
    });
    after(() => cluster?.close());

    test("every command reaches the master of its queue", async () => {
      const perMaster = await cluster.queuesPerMaster(`route-${ed}`, 2);
      const every = perMaster.flatMap(([, qs]) => qs);
      // Any node's URL will do, a replica's too.
      const [replica] = await cluster.replicasOf((await cluster.masterPorts())[0]);
      const c = new Client(`redis://127.0.0.1:${replica}`, { edition: ed });
      try {
        assert.ok(await c.isCluster());
        assert.deepEqual((await c.masters()).sort(), (await cluster.masterPorts()).map((p) => `127.0.0.1:${p}`).sort());
        for (const q of every) await exerciseEveryCommand(c, q);
        const listed = await c.queues();
        for (const q of every) assert.ok(listed.includes(q), `${q} missing from ${listed}`);
      } finally {
        await c.close();
      }
      // Every queue's keys are on its slot's master, and on no other master.
      const masters = await cluster.masterPorts();
      for (const [master, qs] of perMaster) {
        for (const q of qs) {
          const slot = queueSlot(q);
          assert.ok((await cluster.keysInSlot(master, slot)) > 0, `${q} has no key on its master ${master}`);
          for (const other of masters.filter((m) => m !== master)) assert.equal(await cluster.keysInSlot(other, slot), 0, `${q} has keys on ${other} too`);
        }
      }
      if (ed === "lua") {
        // Called with every key of the queue declared: FCALL rmq_push 11 q msg:{q} ... log:{q}.
        const q = "declared-node";
        const port = await cluster.owner(queueSlot(q));
        await admin(port, "CONFIG", "SET", "slowlog-log-slower-than", "0");
        const lc = new Client(cluster.url, { edition: "lua" });
        try {
          await lc.push(q, "x", { id: "d1" });
        } finally {
          await lc.close();
          await admin(port, "CONFIG", "SET", "slowlog-log-slower-than", "10000");
        }
        const w = words(await admin(port, "SLOWLOG", "GET", "50"));
        const expected = ["rmq_push", "11", q, ...QUEUE_KEY_PREFIXES.map((p) => `${p}:{${q}}`)];
        assert.ok(w.some((_, i) => expected.every((x, k) => w[i + k] === x)), `FCALL ${expected.join(" ")} not in ${w}`);
        // Masters that lost the library: the first write loads it on every master.
        for (const p of await cluster.masterPorts()) await admin(p, "FUNCTION", "FLUSH");
        const rc = new Client(cluster.url);
        try {
          for (const [, [q1]] of await cluster.queuesPerMaster("reload-node", 1)) await rc.push(q1, "x");
        } finally {
          await rc.close();
        }
        for (const p of await cluster.masterPorts()) assert.ok((await admin(p, "FUNCTION", "LIST")).length, `no library on master ${p}`);
      }
    });

    test("a command waits while its queue's slot moves", async () => {
      // A slot moved by hand (CLUSTER SETSLOT and MIGRATE, as redis-cli --cluster reshard does):
      // while the queue's keys are split between the two masters, the source answers ASK and the
      // target TRYAGAIN, so the client waits; once the slot has moved it answers MOVED and the
      // command runs there. Nothing is lost and the queue is on one node.
      const q = `moving-${ed}`;
      const slot = queueSlot(q);
      const src = await cluster.owner(slot);
      const dst = (await cluster.masterPorts()).find((p) => p !== src);
      const c = new Client(cluster.url, { commandTimeoutMs: 20_000 });
      try {
        for (let i = 0; i < 5; i++) await c.push(q, `m${i}`, { id: `m${i}` });
        await admin(dst, "CLUSTER", "SETSLOT", slot, "IMPORTING", await cluster.idOf(src));
        await admin(src, "CLUSTER", "SETSLOT", slot, "MIGRATING", await cluster.idOf(dst));
        const keys = await admin(src, "CLUSTER", "GETKEYSINSLOT", slot, "100");
        assert.ok(keys.length >= 2, String(keys));
        const half = Math.floor(keys.length / 2);
        await admin(src, "MIGRATE", "127.0.0.1", dst, "", "0", "5000", "KEYS", ...keys.slice(0, half));
        let done = false;
        const push = c.push(q, "during", { id: "during" }).then((id) => ((done = true), id));
        await sleep(500);
        assert.equal(done, false, "the push waits while the queue's keys are split");
        await admin(src, "MIGRATE", "127.0.0.1", dst, "", "0", "5000", "KEYS", ...keys.slice(half));
        const dstId = await cluster.idOf(dst);
        for (const p of await cluster.masterPorts()) await admin(p, "CLUSTER", "SETSLOT", slot, "NODE", dstId);
        assert.equal(await push, "during");
        const st = await c.stats(q);
        assert.deepEqual([st.ready, st.pushed], [6, 6]);
        assert.equal(await cluster.keysInSlot(src, slot), 0);
        assert.ok((await cluster.keysInSlot(dst, slot)) > 0);
        assert.deepEqual((await c.fetch(q, { count: 10 })).map((m) => m.id), ["m0", "m1", "m2", "m3", "m4", "during"]);
      } finally {
        await c.close();
      }
      await cluster.waitOk(); // every node agrees again before the next test
    });

    test("a lost ACK is not sent again, and a blocking FETCH holds up nothing", async () => {
      const [[, [waiting, other]]] = await cluster.queuesPerMaster(`hold-${ed}`, 2);
      const c = new Client(cluster.url);
      try {
        // A FETCH blocking on an empty queue; meanwhile the same client pushes to, and reads,
        // another queue of the same master.
        let fetched = null;
        const fetch = c.fetch(waiting, { count: 1, blockMs: 30_000 }).then((ms) => (fetched = ms));
        await sleep(200);
        for (let i = 0; i < 20; i++) {
          await c.push(other, "x", { id: `o${i}` });
          assert.equal((await c.stats(other)).ready, i + 1);
        }
        assert.equal(fetched, null);
        await c.push(waiting, "wake", { id: "w1" });
        assert.equal((await fetch)[0].id, "w1");

        // An ACK whose answer does not come in time (the master is paused) is reported as
        // unavailable and never sent again: the server sees it at most once. ACK being idempotent,
        // the caller may send it again: the message is acked once.
        const [m] = await c.fetch(other, { count: 1, lockMs: 60_000 });
        const ackedBefore = (await c.stats(other)).acked;
        const stat = ed === "module" ? "rmq.ack" : "fcall";
        const owner = await cluster.owner(queueSlot(other));
        const impatient = new Client(cluster.url, { commandTimeoutMs: 500, edition: ed });
        let before;
        try {
          await impatient.stats(other);
          before = await commandCalls(owner, stat);
          await admin(owner, "CLIENT", "PAUSE", "1500", "ALL");
          await assert.rejects(impatient.ack(other, m.receipt), Unavailable);
          await sleep(1700);
        } finally {
          await impatient.close();
        }
        const sent = (await commandCalls(owner, stat)) - before;
        assert.ok(sent <= 1, `the lost ACK reached the server ${sent} times`);
        const again = await c.ack(other, m.receipt);
        assert.equal(again + sent, 1, "applied once, by the first ACK or by the second");
        assert.equal(await c.get(other, m.id), null);
        assert.equal((await c.stats(other)).acked, ackedBefore + 1);
      } finally {
        await c.close();
      }
    });

    test("confirmed pushes wait for a replica", async () => {
      const q = `confirmed-${ed}`;
      let p = new Producer(cluster.url, { spoolDir: tmpDir(), confirm: true });
      const pushed = await p.push(q, "safe");
      await p.close();
      assert.deepEqual([pushed.spooled, pushed.queue], [false, q]);
      const c = new Client(cluster.url);
      try {
        assert.deepEqual(await c.pushConfirmed(q, "x", { id: "x1" }, { replicas: 1, timeoutMs: 2000 }), { id: "x1", replicas: 1 });
        // Two replicas asked for, one there: never confirmed, so the push is sent again with its
        // id (a duplicate: the queue has it once) and then spooled.
        const spool = tmpDir();
        p = new Producer(cluster.url, { spoolDir: spool, confirm: { replicas: 2, timeoutMs: 50 }, retries: 1, backgroundDrain: false });
        try {
          const r = await p.push(q, "unsure", { id: "u1" });
          assert.equal(r.spooled, true);
          assert.equal((await p.spoolStatus()).records, 1);
          const report = await p.drain();
          assert.ok(report.sent === 0 && report.stopped, "an unconfirmed drain keeps the record");
        } finally {
          await p.close();
        }
        const st = await c.stats(q);
        assert.deepEqual([st.pushed, st.dups], [3, 2]);
        // With one replica asked for, the drain confirms and empties the spool.
        p = new Producer(cluster.url, { spoolDir: spool, confirm: true, backgroundDrain: false });
        try {
          const report = await p.drain();
          assert.deepEqual([report.sent, report.remaining], [1, 0]);
        } finally {
          await p.close();
        }
        assert.equal((await c.stats(q)).ready, 3);
      } finally {
        await c.close();
      }
    });

    test("an ordered partitioned queue over the three masters keeps each key's order", async () => {
      const name = `orders-${ed}`;
      const PARTITIONS = 6;
      const KEYS = 20;
      const MESSAGES = 600;
      const c = new Client(cluster.url);
      const workers = [];
      try {
        const { partitioned: p, created } = await c.partitionCreate(name, PARTITIONS, { ordered: true });
        assert.ok(created);
        const perMaster = new Map();
        for (const q of p.partitions) {
          const o = await cluster.owner(queueSlot(q));
          perMaster.set(o, (perMaster.get(o) ?? 0) + 1);
        }
        assert.deepEqual([...perMaster.values()], [2, 2, 2]);
        const seen = new Map();
        const ids = new Map();
        const partitionOf = new Map();
        const runs = [];
        for (let w = 0; w < 3; w++) {
          const worker = new Worker(cluster.url, name, (m) => {
            const [key, seq] = m.body.toString().split(":");
            seen.set(key, [...(seen.get(key) ?? []), Number(seq)]);
            ids.set(m.id, (ids.get(m.id) ?? 0) + 1);
            partitionOf.set(key, new Set([...(partitionOf.get(key) ?? []), m.queue]));
          }, { concurrency: 2, lockMs: 60_000, handleSignals: false });
          workers.push(worker);
          runs.push(worker.run());
        }
        const producer = new Producer(cluster.url, { spoolDir: tmpDir() });
        try {
          for (let i = 0; i < MESSAGES; i++) {
            const key = `k${i % KEYS}`;
            const r = await producer.push(name, `${key}:${Math.floor(i / KEYS)}`, { key });
            assert.deepEqual([r.spooled, r.queue], [false, p.partitionForKey(key)]);
          }
        } finally {
          await producer.close();
        }
        await waitFor("every message handled", () => ids.size >= MESSAGES, 120_000);
        for (const w of workers) w.stop();
        const reports = await Promise.all(runs);
        assert.equal(reports.reduce((n, r) => n + r.acked, 0), MESSAGES);
        assert.ok([...ids.values()].every((n) => n === 1), "each message handled once");
        for (const [key, seqs] of seen) {
          assert.deepEqual(seqs, Array.from({ length: MESSAGES / KEYS }, (_, i) => i), `key ${key} in order`);
          assert.deepEqual([...partitionOf.get(key)], [p.partitionForKey(key)]);
        }
        assert.equal(new Set([...partitionOf.values()].flatMap((s) => [...s])).size, PARTITIONS, "every partition used");
        const st = await c.partitionStats(name);
        assert.deepEqual([st.total.pushed, st.total.acked, st.total.inflight], [MESSAGES, MESSAGES, 0]);
      } finally {
        for (const w of workers) w.stop();
        await c.close();
      }
    });

    test("a producer and a worker ride out a failover", async () => {
      // kill -9 of a queue's master: its replica takes over, the client reads the slot map again
      // and goes on. With confirms, every push acknowledged before the kill survives it; every
      // message is handled at least once. (After the kill the new master has no replica, so a
      // confirmed push could not be confirmed until one is back: the pushes after it are not.)
      const q = `failover-${ed}`;
      const slot = queueSlot(q);
      const master = await cluster.owner(slot);
      const seen = new Set();
      const worker = new Worker(cluster.url, q, (m) => void seen.add(m.id), { blockMs: 200, lockMs: 5000, handleSignals: false });
      const run = worker.run();
      try {
        let p = new Producer(cluster.url, { spoolDir: tmpDir(), confirm: true });
        try {
          for (let i = 0; i < 10; i++) assert.equal((await p.push(q, "before", { id: `b${i}` })).spooled, false);
        } finally {
          await p.close();
        }
        await cluster.node(master).killAndWait();
        const started = Date.now();
        p = new Producer(cluster.url, { spoolDir: tmpDir() }, { commandTimeoutMs: 20_000 });
        try {
          for (let i = 0; i < 10; i++) {
            assert.equal((await p.push(q, "after", { id: `a${i}` })).spooled, false, "the first push waits out the failover");
          }
        } finally {
          await p.close();
        }
        const took = Date.now() - started;
        const every = [...Array.from({ length: 10 }, (_, i) => `b${i}`), ...Array.from({ length: 10 }, (_, i) => `a${i}`)];
        await waitFor("every message handled", () => every.every((id) => seen.has(id)), 60_000);
        const now = await cluster.owner(slot);
        assert.notEqual(now, master);
        console.log(`${ed}: failover of ${master} to ${now}: pushes waited ${(took / 1000).toFixed(1)} s`);
      } finally {
        worker.stop();
        await run;
        // The old master comes back as a replica; every node agrees again for the next test.
        await cluster.node(master).restart();
        await cluster.waitOk();
      }
    });
  });
}
