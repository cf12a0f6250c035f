// A worker in a process of its own, for the kill -9 and SIGTERM tests.
//   node worker_proc.js URL QUEUE MARKER_DIR SLEEP_MS LOCK_MS
// Its handler writes MARKER_DIR/started-<id>, waits, then writes MARKER_DIR/done-<id>.
"use strict";
const fs = require("node:fs");
const path = require("node:path");
const { Worker } = require("../dist");

const [url, queue, marker, sleepMs, lockMs] = process.argv.slice(2);
const w = new Worker(url, queue, async (m) => {
  fs.writeFileSync(path.join(marker, `started-${m.id}`), String(m.attempt));
  await new Promise((r) => setTimeout(r, Number(sleepMs)));
  fs.writeFileSync(path.join(marker, `done-${m.id}`), String(m.attempt));
}, { lockMs: Number(lockMs), graceMs: 10_000, concurrency: 2 });
w.run().then((r) => {
  console.log(`acked=${r.acked} abandoned=${r.abandoned}`);
});
