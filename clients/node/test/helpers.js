// Real redis-servers for the tests, on free 127.0.0.1 ports in temp dirs: with the module
// (--loadmodule, path from RMQ_MODULE or the repository's target/release/librmq.so), or plain
// (the client loads the Lua library itself). A server that does not come up fails the test at
// once; every server is killed when its test ends.
"use strict";
const { spawn, spawnSync } = require("node:child_process");
const fs = require("node:fs");
const net = require("node:net");
const os = require("node:os");
const path = require("node:path");

const REPO = path.resolve(__dirname, "..", "..", "..");
const VECTORS = path.join(REPO, "clients", "spool-vectors");

function modulePath() {
  if (process.env.RMQ_MODULE) return process.env.RMQ_MODULE;
  const guess = path.join(REPO, "target", "release", "librmq.so");
  return fs.existsSync(guess) ? guess : null;
}

function cliPath() {
  if (process.env.RMQ_CLI) return process.env.RMQ_CLI;
  const guess = path.join(REPO, "target", "release", "rmq");
  return fs.existsSync(guess) ? guess : null;
}

function freePort() {
  return new Promise((resolve, reject) => {
    const s = net.createServer();
    s.once("error", reject);
    s.listen(0, "127.0.0.1", () => {
      const { port } = s.address();
      s.close(() => resolve(port));
    });
  });
}

function ping(port) {
  return new Promise((resolve) => {
    const s = net.connect({ host: "127.0.0.1", port });
    const done = (ok) => {
      s.destroy();
      resolve(ok);
    };
    s.setTimeout(200, () => done(false));
    s.once("error", () => done(false));
    s.once("connect", () => s.write("PING\r\n"));
    s.once("data", (d) => done(d.toString().startsWith("+PONG")));
  });
}

const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

/** The editions to test: RMQ_CLIENT_EDITIONS=lua,module (default both; module skipped when not built). */
function editions() {
  const spec = process.env.RMQ_CLIENT_EDITIONS || "lua,module";
  const eds = spec.split(",").map((s) => s.trim()).filter(Boolean);
  // A misspelled list must fail, not pass having tested nothing.
  if (!eds.length || eds.some((e) => e !== "lua" && e !== "module")) {
    throw new Error(`RMQ_CLIENT_EDITIONS=${spec}: editions are lua and module`);
  }
  return eds;
}

/** test() options for an edition: skipped (and reported) when the module is not built. */
function editionOpts(ed) {
  return ed === "module" && !modulePath() ? { skip: "librmq.so is not built (cargo build --release -p rmq)" } : {};
}

class Server {
  constructor(edition, extra = [], parent = os.tmpdir()) {
    this.edition = edition;
    this.dir = fs.mkdtempSync(path.join(parent, "rmq-node-"));
    this.args = ["--bind", "127.0.0.1", "--save", "", "--appendonly", "no", "--dir", this.dir, "--logfile", "redis.log", ...extra];
    if (edition === "module") {
      const m = modulePath();
      if (!m) throw new Error("the module is not built: cargo build --release -p rmq (or set RMQ_MODULE)");
      this.args.push("--loadmodule", m);
    }
    this.proc = null;
    this.port = 0;
  }

  static async start(edition, extra) {
    const s = new Server(edition, extra);
    s.port = await freePort();
    await s.launch();
    return s;
  }

  get url() {
    return `redis://127.0.0.1:${this.port}`;
  }

  log() {
    try {
      return fs.readFileSync(path.join(this.dir, "redis.log"), "utf8");
    } catch {
      return "";
    }
  }

  async launch() {
    const proc = spawn("redis-server", ["--port", String(this.port), ...this.args], { stdio: "ignore" });
    let exited = false;
    proc.once("exit", () => (exited = true));
    proc.once("error", () => (exited = true));
    this.proc = proc;
    const until = Date.now() + 10_000;
    for (;;) {
      if (exited) throw new Error(`redis-server exited at start; log:\n${this.log()}`);
      if (await ping(this.port)) return;
      if (Date.now() > until) {
        this.kill();
        throw new Error(`redis-server on port ${this.port} did not answer within 10 s`);
      }
      await sleep(20);
    }
  }

  kill() {
    if (this.proc) {
      this.proc.kill("SIGKILL");
      this.proc = null;
    }
  }

  async killAndWait() {
    const p = this.proc;
    if (!p) return;
    const gone = new Promise((r) => p.once("exit", r));
    this.kill();
    await gone;
  }

  async restart() {
    await this.launch();
  }

  close() {
    this.kill();
    fs.rmSync(this.dir, { recursive: true, force: true });
  }
}

/** Polls cond until it holds; throws (never hangs) after limit ms. Errors count as "not yet". */
async function waitFor(what, cond, limit = 20_000) {
  const until = Date.now() + limit;
  for (;;) {
    try {
      if (await cond()) return;
    } catch {
      // e.g. the server is restarting: look again
    }
    if (Date.now() > until) throw new Error(`${what}: not within ${limit} ms`);
    await sleep(20);
  }
}

async function deadUrl() {
  return `redis://127.0.0.1:${await freePort()}`;
}

function tmpDir() {
  return fs.mkdtempSync(path.join(os.tmpdir(), "rmq-node-t-"));
}

// --- a real Redis Cluster --------------------------------------------------------------------

/** `n` distinct free loopback ports (every listener is held until all are chosen). */
async function freePorts(n) {
  const held = [];
  try {
    for (let i = 0; i < n; i++) {
      const s = net.createServer();
      await new Promise((resolve, reject) => {
        s.once("error", reject);
        s.listen(0, "127.0.0.1", resolve);
      });
      held.push(s);
    }
    return held.map((s) => s.address().port);
  } finally {
    await Promise.all(held.map((s) => new Promise((r) => s.close(r))));
  }
}

/** An admin connection to one node (plain ioredis, replies as strings). */
function adminConn(port) {
  const Redis = require("ioredis");
  return new Redis({ host: "127.0.0.1", port, lazyConnect: true, maxRetriesPerRequest: 0, retryStrategy: () => null, enableOfflineQueue: true });
}

/** Runs `cmd` on the node at `port` and closes the connection. */
async function admin(port, ...cmd) {
  const c = adminConn(port);
  try {
    await c.connect();
    return await c.call(...cmd);
  } finally {
    c.disconnect();
  }
}

/** The lines of CLUSTER NODES: port, id, master, failed, masterId, slots. */
function parseNodes(text) {
  return text
    .split("\n")
    .map((l) => l.trim().split(/\s+/))
    .filter((f) => f.length >= 8)
    .map((f) => ({
      id: f[0],
      port: Number(f[1].split("@")[0].split(":").pop()),
      master: f[2].includes("master"),
      failed: f[2].includes("fail") && !f[2].includes("fail?"),
      masterId: f[3] === "-" ? null : f[3],
      slots: f
        .slice(8)
        .filter((s) => !s.startsWith("["))
        .map((s) => s.split("-").map(Number))
        .map(([a, b]) => [a, b ?? a])
        .sort((x, y) => x[0] - y[0]),
    }));
}

/**
 * A Redis Cluster of 3 masters and 3 replicas, as the Rust tests start it: each node a
 * redis-server on two free 127.0.0.1 ports (its port and its cluster bus port) in a temp dir, with
 * the module loaded, or plain with the Lua library loaded on every master; joined with
 * `redis-cli --cluster create`. A node that does not come up, a create that fails, or a cluster
 * that is not ok within the bounded wait fails the test at once.
 */
class TestCluster {
  static async start(edition, masters = 3, replicas = 1) {
    const c = new TestCluster();
    c.edition = edition;
    c.mastersCount = masters;
    c.replicasPerMaster = replicas;
    c.dir = fs.mkdtempSync(path.join(os.tmpdir(), "rmq-node-cluster-"));
    c.nodes = [];
    const n = masters * (1 + replicas);
    const ports = await freePorts(2 * n);
    try {
      for (let i = 0; i < n; i++) {
        const extra = [
          "--cluster-enabled", "yes", "--cluster-config-file", "nodes.conf", "--cluster-node-timeout", "3000",
          "--cluster-port", String(ports[2 * i + 1]),
          // A replica takes over whatever its lag; replicas sync at once.
          "--cluster-replica-validity-factor", "0", "--repl-diskless-sync-delay", "0",
        ];
        const s = new Server(edition, extra, c.dir);
        s.port = ports[2 * i];
        await s.launch();
        c.nodes.push(s);
      }
      c.create();
      await c.waitOk();
      if (edition === "lua") {
        const { luaLibrary } = require("../dist");
        for (const port of await c.masterPorts()) await admin(port, "FUNCTION", "LOAD", "REPLACE", luaLibrary());
      }
    } catch (e) {
      c.close();
      throw e;
    }
    return c;
  }

  /** The port of the first node that runs (any node will do for a cluster client). */
  livePort() {
    const s = this.nodes.find((n) => n.proc);
    if (!s) throw new Error("no cluster node runs");
    return s.port;
  }

  get url() {
    return `redis://127.0.0.1:${this.livePort()}`;
  }

  node(port) {
    return this.nodes.find((s) => s.port === port);
  }

  create() {
    const args = ["--cluster", "create", ...this.nodes.map((s) => `127.0.0.1:${s.port}`), "--cluster-replicas", String(this.replicasPerMaster), "--cluster-yes"];
    const r = spawnSync("redis-cli", args, { timeout: 60_000, stdio: ["ignore", "pipe", "pipe"] });
    if (r.error) throw new Error(`redis-cli --cluster create could not run (${r.error.message}): is redis-tools installed?`);
    const out = String(r.stdout);
    // On a busy machine redis-cli's own final check may run before every node has heard of every
    // replica: what matters is that it set the cluster up; waitOk then waits until all agree.
    if (!out.includes("Nodes configuration updated") || !out.includes("Sending CLUSTER MEET")) {
      throw new Error(`redis-cli --cluster create failed:\n${out}\n${String(r.stderr)}`);
    }
  }

  async nodesInfo(port = this.livePort()) {
    return parseNodes(String(await admin(port, "CLUSTER", "NODES")));
  }

  /** Waits (bounded) until every node is ok, knows every node and replica, every replica is in sync, and all agree on the slot map. */
  async waitOk(limit = 60_000) {
    const n = this.nodes.length;
    const until = Date.now() + limit;
    for (;;) {
      let why = "";
      const maps = new Set();
      for (const s of this.nodes) {
        if (!s.proc) continue; // killed on purpose
        try {
          const ci = String(await admin(s.port, "CLUSTER", "INFO"));
          const repl = String(await admin(s.port, "INFO", "replication"));
          const info = await this.nodesInfo(s.port);
          if (!ci.includes("cluster_state:ok")) why = `node ${s.port} is not ok`;
          else if (!ci.includes(`cluster_known_nodes:${n}`)) why = `node ${s.port} does not know every node yet`;
          else if (repl.includes("role:slave") && !repl.includes("master_link_status:up")) why = `replica ${s.port} is not in sync yet`;
          else if (info.filter((i) => !i.master && !i.failed && i.masterId).length !== this.mastersCount * this.replicasPerMaster) {
            why = `node ${s.port} does not see every replica yet`;
          }
          maps.add(JSON.stringify(info.filter((i) => i.master && i.slots.length).map((i) => [i.port, i.slots]).sort((a, b) => a[0] - b[0])));
        } catch (e) {
          why = `node ${s.port}: ${e.message}`;
        }
      }
      if (!why && maps.size > 1) why = "nodes disagree on the slot map";
      if (!why) return;
      if (Date.now() > until) {
        const logs = this.nodes.map((s) => `--- node ${s.port}:\n${s.log().slice(-3000)}`).join("\n");
        throw new Error(`the cluster is not ok within ${limit} ms: ${why}\n${logs}`);
      }
      await sleep(100);
    }
  }

  /** Ports of the masters that serve slots, in the order of their first slot. */
  async masterPorts() {
    const ms = (await this.nodesInfo()).filter((i) => i.master && !i.failed && i.slots.length);
    return ms.sort((a, b) => a.slots[0][0] - b.slots[0][0]).map((i) => i.port);
  }

  /** The port of the master serving `slot`. */
  async owner(slot) {
    const m = (await this.nodesInfo()).find((i) => i.master && !i.failed && i.slots.some(([a, b]) => a <= slot && slot <= b));
    if (!m) throw new Error(`no master serves slot ${slot}`);
    return m.port;
  }

  async replicasOf(port) {
    const info = await this.nodesInfo();
    const id = info.find((i) => i.port === port).id;
    return info.filter((i) => i.masterId === id).map((i) => i.port);
  }

  async idOf(port) {
    return (await this.nodesInfo()).find((i) => i.port === port).id;
  }

  async keysInSlot(port, slot) {
    return Number(await admin(port, "CLUSTER", "COUNTKEYSINSLOT", slot));
  }

  /** `n` queue names per master, named `${prefix}-${i}`, found by their slots: [[port, [names]], ...]. */
  async queuesPerMaster(prefix, n) {
    const { queueSlot } = require("../dist");
    const info = (await this.nodesInfo()).filter((i) => i.master && i.slots.length);
    const owner = (slot) => info.find((i) => i.slots.some(([a, b]) => a <= slot && slot <= b)).port;
    const out = new Map((await this.masterPorts()).map((p) => [p, []]));
    for (let i = 0; [...out.values()].some((v) => v.length < n); i++) {
      const q = `${prefix}-${i}`;
      const qs = out.get(owner(queueSlot(q)));
      if (qs.length < n) qs.push(q);
    }
    return [...out.entries()];
  }

  close() {
    for (const s of this.nodes) s.close();
    fs.rmSync(this.dir, { recursive: true, force: true });
  }
}

module.exports = {
  REPO, VECTORS, modulePath, cliPath, editions, editionOpts, Server, waitFor, deadUrl, sleep, tmpDir, TestCluster, admin, adminConn,
};
