"use strict";
var __createBinding = (this && this.__createBinding) || (Object.create ? (function(o, m, k, k2) {
    if (k2 === undefined) k2 = k;
    var desc = Object.getOwnPropertyDescriptor(m, k);
    if (!desc || ("get" in desc ? !m.__esModule : desc.writable || desc.configurable)) {
      desc = { enumerable: true, get: function() { return m[k]; } };
    }
    Object.defineProperty(o, k2, desc);
}) : (function(o, m, k, k2) {
    if (k2 === undefined) k2 = k;
    o[k2] = m[k];
}));
var __setModuleDefault = (this && this.__setModuleDefault) || (Object.create ? (function(o, v) {
    Object.defineProperty(o, "default", { enumerable: true, value: v });
}) : function(o, v) {
    o["default"] = v;
});
var __importStar = (this && this.__importStar) || (function () {
    var ownKeys = function(o) {
        ownKeys = Object.getOwnPropertyNames || function (o) {
            var ar = [];
            for (var k in o) if (Object.prototype.hasOwnProperty.call(o, k)) ar[ar.length] = k;
            return ar;
        };
        return ownKeys(o);
    };
    return function (mod) {
        if (mod && mod.__esModule) return mod;
        var result = {};
        if (mod != null) for (var k = ownKeys(mod), i = 0; i < k.length; i++) if (k[i] !== "default") __createBinding(result, mod, k[i]);
        __setModuleDefault(result, mod);
        return result;
    };
})();
Object.defineProperty(exports, "__esModule", { value: true });
exports.Producer = void 0;
exports.defaultSpoolDir = defaultSpoolDir;
exports.drainSpool = drainSpool;
/** The producer: PUSH with ids it makes itself, retries, and the disk spool for when Redis cannot take a message. */
const path = __importStar(require("node:path"));
const promises_1 = require("node:timers/promises");
const client_1 = require("./client");
const errors_1 = require("./errors");
const spool_1 = require("./spool");
const types_1 = require("./types");
/** How long "this name is an ordinary queue" is believed before the registry is read again (a partitioned queue's record is kept for good: its partitions never change). */
const PLAIN_FOR_MS = 10_000;
/**
 * The default spool, as in every rmq client: `$RMQ_SPOOL`, else `rmq/spool` in the user's state
 * directory (`$XDG_STATE_HOME`, or `~/.local/state`); never the working directory.
 */
function defaultSpoolDir() {
    if (process.env.RMQ_SPOOL)
        return process.env.RMQ_SPOOL;
    let state = process.env.XDG_STATE_HOME;
    if (!state || !path.isAbsolute(state))
        state = process.env.HOME ? path.join(process.env.HOME, ".local", "state") : undefined;
    return state ? path.join(state, "rmq", "spool") : "rmq-spool";
}
/** The spool's copy: a delay becomes an absolute due time, so a message re-sent later is due when it was meant to be. */
function toRecord(p) {
    const now = Date.now();
    const at = p.atMs ?? (p.delayMs !== undefined ? now + p.delayMs : null);
    return { queue: p.queue, id: p.id ?? "", body: p.body, tag: p.tag, key: p.key, headers: [...p.headers], at, spooledAt: now };
}
function fromRecord(r) {
    return { queue: r.queue, body: r.body, id: r.id || undefined, tag: r.tag, key: r.key, headers: r.headers, atMs: r.at ?? undefined };
}
/**
 * Pushes messages; when Redis cannot take one, it goes to the spool on disk (fsynced before
 * `push` resolves) and is re-sent, in order, by a background task and at every start.
 */
class Producer {
    client;
    ownClient;
    spoolDir;
    retries;
    backoff;
    backoffMax;
    interval;
    background;
    confirm;
    /** Partitioned queues looked up: name → the record (null: an ordinary queue) and when. */
    lookups = new Map();
    spool = null;
    /** Set when Redis was found unavailable, cleared by a success: then a push tries once and spools. */
    down = false;
    started = false;
    closed = false;
    timer = null;
    loop = null;
    wake = null;
    draining = null;
    /** Group commit: pushes that arrive while an append runs share the next fsync. */
    pending = [];
    writing = false;
    /** `client` is a Client, or a URL (with `clientOptions`). */
    constructor(client, opts = {}, clientOptions) {
        this.ownClient = typeof client === "string";
        this.client = typeof client === "string" ? new client_1.Client(client, clientOptions) : client;
        this.spoolDir = opts.spoolDir === undefined ? defaultSpoolDir() : opts.spoolDir;
        this.retries = opts.retries ?? 3;
        if (!Number.isInteger(this.retries) || this.retries < 0)
            throw new errors_1.ConfigError("retries must be an integer >= 0");
        this.backoff = opts.retryBackoffMs ?? 50;
        this.backoffMax = opts.retryBackoffMaxMs ?? 1000;
        this.interval = opts.drainIntervalMs ?? 1000;
        this.background = opts.backgroundDrain ?? true;
        this.confirm = opts.confirm ? (0, client_1.confirmOf)(opts.confirm) : null;
    }
    /**
     * Opens the spool (a failure is logged and tried again when the spool is needed) and, with
     * backgroundDrain, starts re-sending what it holds. `push` calls it when it was not called.
     */
    async start() {
        if (this.started)
            return;
        this.started = true;
        if (this.spoolDir === null)
            return;
        try {
            await this.getSpool();
        }
        catch (e) {
            console.warn(`rmq producer: the spool cannot be opened now (${e.message}); tried again when needed`);
        }
        if (this.background)
            this.loop = this.backgroundLoop();
    }
    /** Stops the background task (the spool stays on disk for the next start). */
    async close() {
        this.closed = true;
        this.wake?.();
        await this.loop;
        await this.draining?.catch(() => undefined);
        if (this.ownClient)
            await this.client.close();
    }
    getSpool() {
        if (this.spoolDir === null)
            return Promise.reject(new errors_1.ConfigError("spooling is off"));
        if (!this.spool) {
            const dir = this.spoolDir;
            this.spool = spool_1.Spool.open(dir).then((sp) => {
                if (sp.tornBytesAtOpen)
                    console.warn(`rmq producer: cut a torn tail off the spool (${sp.tornBytesAtOpen} bytes)`);
                return sp;
            }, (e) => {
                this.spool = null; // tried again when needed
                throw new errors_1.SpoolError(`${dir}: ${e.message}`);
            });
        }
        return this.spool;
    }
    /**
     * Pushes a message. For a partitioned queue, it goes to the partition of its `key` (a random one
     * without a key): see `Pushed.queue`. Resolves to {@link Pushed}: Redis has it, or the spool has
     * it on disk (`spooled`). Rejects with InvalidMessage (breaks a rule; checked even while Redis is
     * down), Refused (Redis refused it, e.g. `queue full`: not spooled, sending it again would not
     * help), NotStored (neither Redis nor the spool took it) or Unavailable (spooling is off). With
     * `confirm`, "Redis has it" means its master and the replicas asked for; a push they did not
     * confirm in time counts as one Redis could not take.
     */
    async push(queue, body, options = {}) {
        const p = (0, types_1.buildPush)(queue, body, options);
        if (p.id === undefined)
            p.id = (0, types_1.newId)();
        if (!this.started)
            await this.start();
        const tries = this.down ? 1 : this.retries + 1;
        let pause = this.backoff;
        let last = "";
        // A partitioned queue's name is looked up first and the message routed once: every retry goes
        // to the same partition, whose dedup window drops a second copy. If the registry cannot be
        // read, the message is spooled under the logical name and routed when the spool is sent.
        let routed = null;
        for (let attempt = 1; attempt <= tries; attempt++) {
            try {
                routed ??= await this.route(p);
                const id = await this.send(routed);
                this.down = false;
                return { id, spooled: false, queue: routed.queue };
            }
            catch (e) {
                if (!(e instanceof errors_1.Unavailable))
                    throw e;
                last = e.message;
                if (attempt < tries) {
                    await (0, promises_1.setTimeout)(pause);
                    pause = Math.min(pause * 2, this.backoffMax);
                }
            }
        }
        this.down = true;
        if (this.spoolDir === null)
            throw new errors_1.Unavailable(last);
        const target = routed ?? p;
        try {
            await this.spoolOne(toRecord(target));
        }
        catch (e) {
            console.error(`rmq producer: message ${p.id} NOT stored: redis ${last}; spool ${e.message}`);
            throw new errors_1.NotStored(last, e.message);
        }
        return { id: p.id, spooled: true, queue: target.queue };
    }
    /**
     * `p` addressed to the partition of its key when its queue is a partitioned queue, else as it
     * is. Lookups are remembered: a partitioned queue's record for good (its partitions never
     * change), an ordinary queue for 10 s.
     */
    async route(p) {
        const known = this.lookups.get(p.queue);
        let part;
        if (known && (known.part || Date.now() - known.at < PLAIN_FOR_MS))
            part = known.part;
        else {
            part = await this.client.partitionedOrPlain(p.queue);
            this.lookups.set(p.queue, { part, at: Date.now() });
        }
        return part ? { ...p, queue: part.route(p.key) } : p;
    }
    /** One PUSH, confirmed when confirms are on. */
    async send(p) {
        if (!this.confirm)
            return this.client.sendPush(p);
        const { id, replicas } = await this.client.sendPushConfirmed(p, this.confirm);
        if (replicas < this.confirm.replicas)
            throw new errors_1.Unavailable((0, client_1.shortfall)(this.confirm, replicas));
        return id;
    }
    async spoolOne(rec) {
        const sp = await this.getSpool();
        const done = new Promise((resolve, reject) => this.pending.push({ rec, done: (e) => (e ? reject(e) : resolve()) }));
        if (!this.writing) {
            this.writing = true;
            try {
                while (this.pending.length) {
                    const batch = this.pending.splice(0, 4096);
                    let err;
                    try {
                        await sp.append(batch.map((b) => b.rec));
                    }
                    catch (e) {
                        err = new errors_1.SpoolError(e.message);
                    }
                    for (const b of batch)
                        b.done(err);
                }
            }
            finally {
                this.writing = false;
            }
        }
        await done;
    }
    /** Re-sends the spool now (what the background task does). Records Redis refuses for good go to the quarantine. */
    async drain() {
        const sp = await this.getSpool();
        const r = await this.drainOnce(sp);
        if (r.sent && r.stopped === null)
            this.down = false;
        return r;
    }
    async spoolStatus() {
        return (await this.getSpool()).status();
    }
    /** One drain at a time per producer (the spool's DRAIN lock keeps other processes out). */
    async drainOnce(sp) {
        while (this.draining)
            await this.draining.catch(() => undefined);
        const run = drainSpool(this.client, sp, () => this.closed, this.confirm);
        this.draining = run;
        try {
            return await run;
        }
        finally {
            this.draining = null;
        }
    }
    async backgroundLoop() {
        while (!this.closed) {
            try {
                const sp = await this.getSpool();
                if (await sp.hasData()) {
                    await this.client.ping();
                    const r = await this.drainOnce(sp);
                    if (r.sent)
                        console.info(`rmq producer: re-sent ${r.sent} spooled messages (${r.remaining} remain)`);
                    if (r.stopped === null)
                        this.down = false;
                }
            }
            catch {
                // Redis still down, or a disk fault: try again later.
            }
            if (this.closed)
                return;
            await new Promise((resolve) => {
                this.wake = resolve;
                this.timer = setTimeout(resolve, this.interval);
            });
            if (this.timer)
                clearTimeout(this.timer);
            this.wake = null;
        }
    }
}
exports.Producer = Producer;
/**
 * Sends the spool's records in pipelines of PUSH (confirmed by WAIT with `confirm`); a refusal goes
 * to the quarantine, an unavailable Redis or `queue full` stops the drain. A record spooled under a
 * partitioned queue's logical name (its registry could not be read at push time) goes to the
 * partition of its key.
 */
async function drainSpool(client, sp, closing = () => false, confirm = null) {
    const report = await sp.drain(async (recs) => {
        if (closing())
            throw new spool_1.SendStopped("the producer is closing");
        let res;
        try {
            const parts = new Map();
            for (const r of recs)
                if (!parts.has(r.queue))
                    parts.set(r.queue, await client.partitionedOrPlain(r.queue));
            const pushes = recs.map((r) => {
                const p = fromRecord(r);
                const part = parts.get(r.queue);
                return part ? { ...p, queue: part.route(p.key) } : p;
            });
            res = await client.callMany(pushes.map((p) => ["push", p.queue, (0, types_1.pushArgs)(p)]), confirm);
        }
        catch (e) {
            throw new spool_1.SendStopped(e.message);
        }
        return res.map((r) => {
            if (r instanceof errors_1.Refused) {
                // Back-pressure, not a fault of the record: keep it, in order, for later.
                if (r.message.includes("queue full"))
                    throw new spool_1.SendStopped(`Redis refused: ${r.message}`);
                return r.message;
            }
            if (r instanceof errors_1.RmqError)
                throw new spool_1.SendStopped(r.message);
            return null;
        });
    });
    if (report.refused || report.corrupt) {
        console.error(`rmq producer: spooled records were moved to the quarantine (refused ${report.refused}, corrupt ${report.corrupt})`);
    }
    return report;
}
