// The worker against real redis-servers: outcomes, TOUCH, timeouts, stopping, and the shared
// scenarios of docs/client.md (kill -9 mid-job, graceful stop, a hung handler, a poison message).
"use strict";
const { test } = require("node:test");
const assert = require("node:assert/strict");
const { spawn } = require("node:child_process");
const fs = require("node:fs");
const path = require("node:path");

const { Client, Worker, Outcome } = require("../dist");
const { editions, editionOpts, Server, waitFor, tmpDir, sleep } = require("./helpers");

/** Runs a worker until cond() holds, then stops it; fails after limit ms. */
async function runUntil(w, cond, limit = 30_000) {
  const running = w.run();
  try {
    await waitFor("the worker's condition", cond, limit);
  } finally {
    w.stop();
  }
  return running;
}

const opts = (o = {}) => ({ lockMs: 5000, handleSignals: false, ...o });

for (const ed of editions()) {
  test(`outcomes by return value and exception [${ed}]`, editionOpts(ed), async () => {
    const srv = await Server.start(ed);
    const c = new Client(srv.url);
    try {
      await c.configSet("jobs", { "backoff-ms": 0 });
      for (const tag of ["ok", "retry", "fail", "error", "throws", "returns-error", "nobody"]) {
        await c.push("jobs", tag, { tag, id: `m-${tag}` });
      }
      const runs = {};
      const w = new Worker(c, "jobs", undefined, opts())
        .handle("ok", () => {
          runs.ok = (runs.ok ?? 0) + 1;
        })
        .handle("retry", (m) => {
          runs.retry = m.attempt;
          if (m.attempt === 1) throw Outcome.retry("try later");
        })
        .handle("fail", async () => Outcome.fail("bad order"))
        .handle("error", async () => {
          throw Outcome.error("explicit");
        })
        .handle("throws", () => {
          throw new TypeError("no sku");
        })
        .handle("returns-error", () => Outcome.error("returned"));
      const report = await runUntil(w, async () => {
        const s = await c.stats("jobs");
        return s.acked === 2 && s.dead === 1 && s.errored === 4;
      });
      assert.deepEqual([report.acked, report.retried, report.failed, report.errored], [2, 1, 1, 4]);
      assert.deepEqual(runs, { ok: 1, retry: 2 });
      const errors = Object.fromEntries((await c.peek("jobs", "errors", { count: 100 })).map((m) => [m.id, m.error]));
      assert.deepEqual(errors, {
        "m-error": "explicit",
        "m-throws": "TypeError: no sku",
        "m-returns-error": "returned",
        "m-nobody": "no handler for tag 'nobody'",
      });
      assert.deepEqual((await c.peek("jobs", "failed")).map((m) => [m.id, m.error]), [["m-fail", "bad order"]]);
      assert.equal((await c.stats("jobs")).inflight, 0);
    } finally {
      await c.close();
      srv.close();
    }
  });

  test(`TOUCH keeps a handler running three locks from redelivery [${ed}]`, editionOpts(ed), async () => {
    const srv = await Server.start(ed);
    const c = new Client(srv.url);
    try {
      await c.push("jobs", "slow", { id: "slow" });
      const calls = [];
      const w = new Worker(c, "jobs", async (m) => {
        calls.push(m.attempt);
        await sleep(1200);
      }, opts({ lockMs: 400, concurrency: 4 }));
      const report = await runUntil(w, async () => (await c.stats("jobs")).acked === 1);
      assert.deepEqual(calls, [1]);
      assert.deepEqual([report.acked, report.stale], [1, 0]);
    } finally {
      await c.close();
      srv.close();
    }
  });

  test(`a handler that hangs past its timeout is retried with reason timeout [${ed}]`, editionOpts(ed), async () => {
    const srv = await Server.start(ed);
    const c = new Client(srv.url);
    try {
      await c.configSet("jobs", { "backoff-ms": 60_000 });
      await c.push("jobs", "hang", { id: "hang" });
      let aborted = false;
      const w = new Worker(c, "jobs", (m, { signal }) => new Promise((resolve) => {
        signal.addEventListener("abort", () => {
          aborted = true;
          resolve();
        });
      }), opts({ timeoutMs: 300 }));
      const report = await runUntil(w, async () => (await c.get("jobs", "hang")).state === "delayed");
      assert.deepEqual([report.timedOut, report.acked], [1, 0]);
      assert.ok(aborted, "the handler's signal is aborted");
      const m = await c.get("jobs", "hang");
      // Delayed by the queue's backoff: NACK RETRY (a lock expiry would make it ready). The
      // reason is stored; servers that show the last error of a delayed message show it.
      assert.deepEqual([m.state, m.attempt], ["delayed", 1]);
      assert.ok(["", "timeout after 300 ms"].includes(m.error), m.error);
    } finally {
      await c.close();
      srv.close();
    }
  });

  test(`a poison message reaches failed after max-attempts [${ed}]`, editionOpts(ed), async () => {
    const srv = await Server.start(ed);
    const c = new Client(srv.url);
    try {
      await c.configSet("jobs", { "backoff-ms": 0, "max-attempts": 3 });
      await c.push("jobs", "poison", { id: "poison" });
      await c.push("jobs", "fine", { id: "fine" });
      const attempts = [];
      const w = new Worker(c, "jobs", (m) => {
        if (m.id === "poison") {
          attempts.push(m.attempt);
          throw Outcome.retry("cannot parse");
        }
      }, opts());
      await runUntil(w, async () => {
        const s = await c.stats("jobs");
        return s.dead === 1 && s.acked === 1;
      });
      assert.deepEqual(attempts, [1, 2, 3]);
      const m = await c.get("jobs", "poison");
      assert.equal(m.state, "failed");
      assert.match(m.error, /max attempts/);
    } finally {
      await c.close();
      srv.close();
    }
  });

  test(`graceful stop loses nothing [${ed}]`, editionOpts(ed), async () => {
    const srv = await Server.start(ed);
    const c = new Client(srv.url);
    try {
      const n = 200;
      for (let i = 0; i < n; i++) await c.push("jobs", String(i), { id: `m${i}` });
      const handled = [];
      const handler = async (m) => {
        await sleep(20);
        handled.push(m.id);
      };
      const w = new Worker(c, "jobs", handler, opts({ concurrency: 8, lockMs: 10_000, graceMs: 10_000 }));
      const first = await runUntil(w, async () => handled.length >= 40);
      const s = await c.stats("jobs");
      assert.equal(s.inflight, 0, "a graceful stop leaves nothing in flight");
      assert.equal(first.abandoned, 0);
      assert.equal(first.acked, handled.length);
      assert.equal(s.acked + s.ready, n);
      const w2 = new Worker(c, "jobs", handler, opts({ concurrency: 8 }));
      await runUntil(w2, async () => handled.length >= n);
      assert.deepEqual([...handled].sort(), Array.from({ length: n }, (_, i) => `m${i}`).sort());
    } finally {
      await c.close();
      srv.close();
    }
  });

  test(`grace period over abandons handlers and their messages come back [${ed}]`, editionOpts(ed), async () => {
    const srv = await Server.start(ed);
    const c = new Client(srv.url);
    try {
      await c.push("jobs", "stuck", { id: "stuck" });
      let started = false;
      const w = new Worker(c, "jobs", async (m, { signal }) => {
        started = true;
        await new Promise((r) => signal.addEventListener("abort", r));
      }, opts({ lockMs: 1000, graceMs: 200 }));
      const report = await runUntil(w, async () => started);
      assert.deepEqual([report.abandoned, report.acked], [1, 0]);
      const got = await c.fetch("jobs", { blockMs: 5000 });
      assert.deepEqual(got.map((m) => [m.id, m.attempt]), [["stuck", 2]]);
    } finally {
      await c.close();
      srv.close();
    }
  });

  test(`a worker killed mid-job gets its message redelivered [${ed}]`, editionOpts(ed), async () => {
    const srv = await Server.start(ed);
    const c = new Client(srv.url);
    const marker = tmpDir();
    try {
      await c.push("jobs", "work", { id: "job-1" });
      const proc = spawn(process.execPath, [path.join(__dirname, "worker_proc.js"), srv.url, "jobs", marker, "60000", "1000"], { stdio: "ignore" });
      const exited = new Promise((r) => proc.once("exit", r));
      try {
        await waitFor("the job to start", () => fs.existsSync(path.join(marker, "started-job-1")), 30_000);
        proc.kill("SIGKILL");
        await exited;
      } finally {
        proc.kill("SIGKILL");
      }
      const seen = [];
      const w = new Worker(c, "jobs", (m) => {
        seen.push(m);
      }, opts());
      await runUntil(w, async () => seen.length === 1, 20_000);
      assert.deepEqual([seen[0].id, seen[0].attempt], ["job-1", 2]);
      assert.equal((await c.stats("jobs")).acked, 1);
    } finally {
      await c.close();
      srv.close();
    }
  });

  test(`SIGTERM stops a worker process gracefully [${ed}]`, editionOpts(ed), async () => {
    const srv = await Server.start(ed);
    const c = new Client(srv.url);
    const marker = tmpDir();
    try {
      await c.push("jobs", "work", { id: "job-1" });
      const proc = spawn(process.execPath, [path.join(__dirname, "worker_proc.js"), srv.url, "jobs", marker, "500", "5000"], { stdio: ["ignore", "pipe", "inherit"] });
      let out = "";
      proc.stdout.on("data", (d) => (out += d));
      const exited = new Promise((r) => proc.once("exit", (code) => r(code)));
      try {
        await waitFor("the job to start", () => fs.existsSync(path.join(marker, "started-job-1")), 30_000);
        proc.kill("SIGTERM");
        const code = await Promise.race([exited, sleep(20_000).then(() => "timeout")]);
        assert.equal(code, 0);
      } finally {
        proc.kill("SIGKILL");
      }
      assert.match(out, /acked=1 abandoned=0/);
      assert.ok(fs.existsSync(path.join(marker, "done-job-1")));
      const s = await c.stats("jobs");
      assert.deepEqual([s.acked, s.inflight, s.ready], [1, 0, 0]);
    } finally {
      await c.close();
      srv.close();
    }
  });
}
