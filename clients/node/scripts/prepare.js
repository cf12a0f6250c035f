// `npm install ./clients/node` links this directory into the app and does not install the
// linked package's own dependencies; this installs them here (the locked versions) when they
// are missing, so the link works. The compiled JavaScript (dist/) is kept in the repository, so
// nothing needs TypeScript at install time.
"use strict";
const fs = require("node:fs");
const path = require("node:path");
const { spawnSync } = require("node:child_process");

const root = path.join(__dirname, "..");
const missing = ["ioredis", "fs-ext"].filter((d) => !fs.existsSync(path.join(root, "node_modules", d)));
if (missing.length) {
  // The outer npm's settings (npm_config_*) are not meant for this install.
  const env = Object.fromEntries(Object.entries(process.env).filter(([k]) => !/^npm_/i.test(k)));
  const r = spawnSync("npm", ["ci", "--omit=dev", "--no-audit", "--no-fund", "--loglevel=error"], { cwd: root, stdio: "inherit", env });
  process.exit(r.status === null ? 1 : r.status);
}
