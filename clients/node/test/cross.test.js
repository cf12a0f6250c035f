// One spool for every language: a spool written by this client is drained by the Rust CLI
// (`rmq spool drain`), and one written by the Rust CLI (`rmq push` while Redis is down) is
// drained by this client. One partitioned queue for every language: made by the Rust CLI on a
// cluster, pushed to by Node with keys, each message in the partition the Rust client picks.
"use strict";
const { test } = require("node:test");
const assert = require("node:assert/strict");
const { spawnSync } = require("node:child_process");
const fs = require("node:fs");
const path = require("node:path");
const { crc32 } = require("node:zlib");

const { Client, Producer } = require("../dist");
const { editions, editionOpts, Server, TestCluster, deadUrl, tmpDir, cliPath } = require("./helpers");

function rmq(url, spool, ...args) {
  const r = spawnSync(cliPath(), ["--url", url, "--spool", spool, "--connect-timeout", "300", "--command-timeout", "3000", ...args], {
    env: { RMQ_LOG: "error", PATH: "/usr/bin:/bin" },
    timeout: 60_000,
  });
  return { code: r.status, stderr: String(r.stderr), stdout: String(r.stdout) };
}

const cliOpts = (ed) => (cliPath() ? editionOpts(ed) : { skip: "the rmq CLI is not built (cargo build --release -p rmq-client --bin rmq)" });

for (const ed of editions()) {
  test(`a Node spool is drained by the Rust CLI [${ed}]`, cliOpts(ed), async () => {
    const spool = path.join(tmpDir(), "spool");
    const p = new Producer(await deadUrl(), { spoolDir: spool, retries: 0, backgroundDrain: false }, { connectTimeoutMs: 300 });
    const pushed = [
      await p.push("orders", Buffer.from("\x00binary\xff", "latin1"), { tag: "created", key: "cust-7", headers: { trace: "abc", lang: "日本語" } }),
      await p.push("orders", "plain", { id: "given-id" }),
      await p.push("orders", "later", { at: 4102444800000 }),
    ];
    await p.close();
    assert.ok(pushed.every((x) => x.spooled));
    const srv = await Server.start(ed);
    const c = new Client(srv.url);
    try {
      const out = rmq(srv.url, spool, "spool", "drain");
      assert.equal(out.code, 0, out.stderr);
      const a = await c.get("orders", pushed[0].id);
      assert.deepEqual([a.body, a.tag, a.key, a.headers], [Buffer.from("\x00binary\xff", "latin1"), "created", "cust-7", { trace: "abc", lang: "日本語" }]);
      assert.equal((await c.get("orders", "given-id")).body.toString(), "plain");
      assert.equal((await c.get("orders", pushed[2].id)).due, 4102444800000);
      assert.equal((await c.stats("orders")).pushed, 3);
      const left = fs.readdirSync(spool).filter((f) => f.endsWith(".seg")).map((f) => fs.statSync(path.join(spool, f)).size);
      assert.ok(left.every((n) => n === 0));
    } finally {
      await c.close();
      srv.close();
    }
  });

  test(`a Rust spool is drained by Node [${ed}]`, cliOpts(ed), async () => {
    const spool = path.join(tmpDir(), "spool");
    const down = await deadUrl();
    for (let i = 0; i < 3; i++) {
      const out = rmq(down, spool, "push", "jobs", `from rust ${i}`, "--id", `r${i}`, "--tag", "t", "--header", `n=${i}`);
      assert.equal(out.code, 4, out.stderr); // 4: spooled, not in Redis yet
    }
    const srv = await Server.start(ed);
    const p = new Producer(srv.url, { spoolDir: spool, backgroundDrain: false });
    try {
      assert.equal((await p.spoolStatus()).records, 3);
      const r = await p.drain();
      assert.deepEqual([r.sent, r.corrupt, r.refused], [3, 0, 0]);
      const msgs = await p.client.fetch("jobs", { count: 10 });
      assert.deepEqual(
        msgs.map((m) => [m.id, m.body.toString(), m.tag, m.headers]),
        [0, 1, 2].map((i) => [`r${i}`, `from rust ${i}`, "t", { n: String(i) }]),
      );
    } finally {
      await p.close();
      srv.close();
    }
  });
}

for (const ed of editions()) {
  test(`a partitioned queue made by the Rust CLI routes Node pushes as Rust does [${ed}]`, cliOpts(ed), async () => {
    const cluster = await TestCluster.start(ed);
    const spool = path.join(tmpDir(), "spool");
    const p = new Producer(cluster.url, { spoolDir: path.join(tmpDir(), "node") });
    try {
      const name = `xl-${ed}`;
      const out = rmq(cluster.url, spool, "partition", "create", name, "8");
      assert.equal(out.code, 0, out.stderr);
      const show = rmq(cluster.url, spool, "--json", "partition", "show", name);
      assert.equal(show.code, 0, show.stderr);
      const parts = JSON.parse(show.stdout).partitions.map((x) => x.queue);
      assert.equal(parts.length, 8);
      const keys = [...Array.from({ length: 30 }, (_, i) => `customer-${i}`), "123456789", "日本語", "k"];
      const rust = new Map();
      for (const k of [...keys.slice(0, 6), ...keys.slice(-3)]) {
        const r = rmq(cluster.url, spool, "--json", "push", name, "from rust", "--key", k);
        assert.equal(r.code, 0, r.stderr);
        rust.set(k, JSON.parse(r.stdout).queue);
      }
      assert.deepEqual((await p.client.partitioned(name)).partitions, parts);
      for (const [i, k] of keys.entries()) {
        const pushed = await p.push(name, "from node", { key: k, id: `node-${i}` });
        assert.equal(pushed.spooled, false);
        assert.equal(pushed.queue, parts[crc32(Buffer.from(k, "utf8")) % 8], k);
        if (rust.has(k)) assert.equal(pushed.queue, rust.get(k), `${k}: Rust chose ${rust.get(k)}, Node ${pushed.queue}`);
        const got = await p.client.get(pushed.queue, `node-${i}`);
        assert.equal(got.key, k);
      }
      assert.ok(new Set(rust.values()).size > 1);
    } finally {
      await p.close();
      await p.client.close();
      cluster.close();
    }
  });
}
