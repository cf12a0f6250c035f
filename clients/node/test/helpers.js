// Real redis-servers for the tests, on free 127.0.0.1 ports in temp dirs: with the module
// (--loadmodule, path from RMQ_MODULE or the repository's target/release/librmq.so), or plain
// (the client loads the Lua library itself). A server that does not come up fails the test at
// once; every server is killed when its test ends.
"use strict";
const { spawn } = require("node:child_process");
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
  constructor(edition, extra = []) {
    this.edition = edition;
    this.dir = fs.mkdtempSync(path.join(os.tmpdir(), "rmq-node-"));
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

module.exports = { REPO, VECTORS, modulePath, cliPath, editions, editionOpts, Server, waitFor, deadUrl, sleep, tmpDir };
