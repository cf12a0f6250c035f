"use strict";
Object.defineProperty(exports, "__esModule", { value: true });
exports.Cluster = exports.Topology = exports.SLOT_COUNT = void 0;
/**
 * Redis Cluster: the slot map, one {@link Node} per server, and the routing of a request to the
 * master that owns its queue's slot.
 *
 * The client routes by itself rather than through ioredis's `Cluster`, because that one sends a
 * command again after its connection closed (`retryDelayOnFailover`), whether or not the command
 * had reached the server, and knows neither the module's commands' keys nor how to keep a
 * blocking FETCH off the connection other commands share: an ACK, a FETCH or a TOUCH must never
 * be sent twice by the client. Here, as in the Rust client:
 * - MOVED: the slot has a new owner; read the map again, send again at once;
 * - ASK: the slot is being moved; send again to the node named, after ASKING;
 * - TRYAGAIN (the queue's slot is migrating), CLUSTERDOWN, MASTERDOWN, LOADING, READONLY: the
 *   command was not run; wait (10 ms, doubling up to 250 ms) and send again, until the time limit;
 * - no connection to the owner: read the map again (a failover may have named a new master),
 *   wait, send again: the request never left;
 * - sent, but no answer (the connection broke, or the time ran out): sent again only when the
 *   caller says that is safe (a PUSH with its id, reads, CONFIG); otherwise Unavailable.
 */
const promises_1 = require("node:timers/promises");
const errors_1 = require("./errors");
const node_1 = require("./node");
exports.SLOT_COUNT = 16384;
const REFRESH_GAP_MS = 100;
const FIRST_PAUSE_MS = 10;
const LONGEST_PAUSE_MS = 250;
/** The slot map: which master serves each slot, and each master's replicas. */
class Topology {
    owners = new Array(exports.SLOT_COUNT).fill(null);
    /** Masters in the order of their first slot. */
    masters = [];
    replicas = new Map();
    /** From a `CLUSTER SLOTS` reply: `[start, end, [host, port, id, ...], replica...]` per range. An empty host means the host the reply came from. */
    static fromClusterSlots(reply, seedHost) {
        if (!Array.isArray(reply))
            throw new errors_1.ProtocolError("CLUSTER SLOTS replied something else than ranges");
        const t = new Topology();
        const first = new Map();
        for (const r of reply) {
            if (!Array.isArray(r) || r.length < 3)
                continue;
            const [start, end] = [Number(r[0]), Number(r[1])];
            const addrs = [];
            for (const n of r.slice(2)) {
                if (!Array.isArray(n) || n.length < 2)
                    continue;
                let host = Buffer.isBuffer(n[0]) ? n[0].toString() : String(n[0] ?? "");
                if (host === "" || host === "?")
                    host = seedHost;
                addrs.push(`${host}:${Number(n[1])}`);
            }
            if (!addrs.length || !(start >= 0 && start <= end && end < exports.SLOT_COUNT))
                continue;
            const master = addrs[0];
            t.owners.fill(master, start, end + 1);
            first.set(master, Math.min(first.get(master) ?? exports.SLOT_COUNT, start));
            const reps = t.replicas.get(master) ?? [];
            for (const a of addrs.slice(1))
                if (!reps.includes(a))
                    reps.push(a);
            t.replicas.set(master, reps);
        }
        if (!first.size)
            throw new errors_1.Unavailable("the cluster serves no slot yet");
        t.masters = [...first.keys()].sort((a, b) => first.get(a) - first.get(b));
        return t;
    }
    copy() {
        const t = new Topology();
        t.owners = [...this.owners];
        t.masters = [...this.masters];
        t.replicas = new Map([...this.replicas].map(([k, v]) => [k, [...v]]));
        return t;
    }
}
exports.Topology = Topology;
/** The nodes of one cluster, found from the node of the seed URL. */
class Cluster {
    connectTimeoutMs;
    topology = new Topology();
    seedHost;
    seedAddr;
    seed;
    nodes = new Map();
    refreshed = 0;
    refreshing = null;
    constructor(seedUrl, connectTimeoutMs) {
        this.connectTimeoutMs = connectTimeoutMs;
        this.seed = new URL(seedUrl);
        if (this.seed.protocol !== "redis:" && this.seed.protocol !== "rediss:") {
            throw new errors_1.ConfigError("a Redis Cluster is reached by redis:// or rediss:// URLs");
        }
        this.seedHost = this.seed.hostname.replace(/^\[|\]$/g, "") || "127.0.0.1";
        this.seedAddr = `${this.seedHost}:${this.seed.port || 6379}`;
    }
    /** The node at `addr` (`host:port`), with the seed URL's user, password, TLS and options. */
    node(addr) {
        let n = this.nodes.get(addr);
        if (!n) {
            const i = addr.lastIndexOf(":");
            const host = addr.slice(0, i);
            const u = new URL(this.seed.href);
            u.hostname = host.includes(":") ? `[${host}]` : host;
            u.port = addr.slice(i + 1);
            n = new node_1.Node(u.href, this.connectTimeoutMs, addr);
            this.nodes.set(addr, n);
        }
        return n;
    }
    async readMap(addr, timeoutMs) {
        let v;
        try {
            [v] = await this.node(addr).send([["CLUSTER", "SLOTS"]], timeoutMs);
        }
        catch (e) {
            throw e instanceof node_1.SendError ? e.err : e;
        }
        if (v instanceof Error)
            throw new errors_1.Unavailable(v.message);
        return Topology.fromClusterSlots(v, this.seedHost);
    }
    /** Reads the slot map from the seed node. */
    async connect(timeoutMs) {
        this.topology = await this.readMap(this.seedAddr, timeoutMs);
        this.refreshed = Date.now();
    }
    masters() {
        return [...this.topology.masters];
    }
    /** Reads the slot map again from whichever node answers first (the masters, their replicas, then the seed), unless another refresh just did. */
    async refresh() {
        while (this.refreshing)
            await this.refreshing;
        if (Date.now() - this.refreshed < REFRESH_GAP_MS)
            return;
        this.refreshing = (async () => {
            const t = this.topology;
            const candidates = [...new Set([...t.masters, ...t.masters.flatMap((m) => t.replicas.get(m) ?? []), this.seedAddr])];
            for (const addr of candidates) {
                let next;
                try {
                    next = await this.readMap(addr, Math.max(this.connectTimeoutMs, 500));
                }
                catch {
                    continue;
                }
                // Forget the connections of nodes that left the map (a dead master, a moved node).
                const known = new Set([...next.masters, ...[...next.replicas.values()].flat(), this.seedAddr]);
                for (const [a, n] of this.nodes) {
                    if (!known.has(a)) {
                        n.retire();
                        this.nodes.delete(a);
                    }
                }
                this.topology = next;
                break;
            }
            this.refreshed = Date.now();
        })();
        try {
            await this.refreshing;
        }
        finally {
            this.refreshing = null;
        }
    }
    /** A MOVED reply: `slot` is served by `addr` now. */
    learn(slot, addr) {
        const t = this.topology.copy();
        t.owners[slot] = addr;
        this.topology = t;
    }
    /**
     * Sends `cmds` as one pipeline to `target`, following the cluster's answers (see the module
     * documentation), within `timeoutMs`. `resend`: every command in it is safe to send again after
     * its answer was lost; it also allows a pipeline of several commands to be sent again after a
     * redirect. `dedicated`: on a connection of its own (a blocking FETCH, WAIT).
     */
    async exec(target, cmds, timeoutMs, resend, dedicated = false) {
        const deadline = Date.now() + timeoutMs;
        let pause = FIRST_PAUSE_MS;
        let ask = null;
        let last = null;
        let hops = 0;
        for (let attempt = 1;; attempt++) {
            const now = Date.now();
            if (now >= deadline)
                throw last ?? new errors_1.Unavailable(`no answer from the cluster within ${timeoutMs} ms`);
            const asking = ask !== null;
            let addr;
            if (ask !== null) {
                addr = ask;
                ask = null;
            }
            else if ("slot" in target) {
                const owner = this.topology.owners[target.slot];
                if (!owner) {
                    last = new errors_1.Unavailable(`no master serves slot ${target.slot}`);
                    await this.refresh();
                    pause = await wait(pause, deadline);
                    continue;
                }
                addr = owner;
            }
            else if ("node" in target) {
                addr = target.node;
            }
            else {
                // The URL's node first when it is a master, then the masters in turn, so that a dead one is passed over.
                let masters = this.masters();
                const i = masters.indexOf(this.seedAddr);
                if (i > 0)
                    masters = [...masters.slice(i), ...masters.slice(0, i)];
                addr = masters.length ? masters[(attempt - 1) % masters.length] : this.seedAddr;
            }
            const pipe = [];
            for (const c of cmds) {
                if (asking)
                    pipe.push(["ASKING"]);
                pipe.push(c);
            }
            let vals;
            try {
                vals = await this.node(addr).send(pipe, Math.max(deadline - now, 1), dedicated);
            }
            catch (e) {
                if (!(e instanceof node_1.SendError))
                    throw e;
                if (!(e.err instanceof errors_1.Unavailable) || (e.sent && !resend))
                    throw e.err;
                last = e.err;
                if ("node" in target && !e.sent)
                    throw e.err;
                // The owner may be gone: a failover names another.
                await this.refresh();
                pause = await wait(pause, deadline);
                continue;
            }
            if (asking)
                vals = vals.filter((_, i) => i % 2 === 1);
            const v = verdict(vals);
            if (v === null || !(cmds.length === 1 || resend))
                return vals;
            if ("moved" in v) {
                // Other slots probably moved too: read the map again, then take the redirect's word for
                // this slot (the node that answered knows best).
                const [slot, to] = v.moved;
                await this.refresh();
                this.learn(slot, to);
                last = new errors_1.Unavailable(`slot ${slot} moved to ${to}`);
                if (++hops > 3)
                    pause = await wait(pause, deadline); // nodes that disagree: give them time
            }
            else if ("ask" in v) {
                ask = v.ask;
            }
            else {
                last = v.wait;
                if (v.refresh)
                    await this.refresh();
                pause = await wait(pause, deadline);
            }
        }
    }
    close() {
        for (const n of this.nodes.values())
            n.close();
        this.nodes.clear();
    }
}
exports.Cluster = Cluster;
/** Sleeps `pause` (less when the deadline is nearer) and gives the next, longer pause. */
async function wait(pause, deadline) {
    await (0, promises_1.setTimeout)(Math.max(Math.min(pause, deadline - Date.now()), 0));
    return Math.min(pause * 2, LONGEST_PAUSE_MS);
}
/** The first reply that asks for a redirect or a wait; null when every reply stands. */
function verdict(vals) {
    for (const v of vals) {
        if (!(0, node_1.isReply)(v))
            continue;
        const message = v.message;
        const words = message.split(" ");
        switch (words[0]) {
            case "MOVED":
                return { moved: [Number(words[1]), words[2]] };
            case "ASK":
                return { ask: words[2] };
            case "TRYAGAIN":
                return { wait: new errors_1.Unavailable(message), refresh: false };
            case "CLUSTERDOWN":
            case "MASTERDOWN":
            case "READONLY":
            case "LOADING":
                return { wait: new errors_1.Unavailable(message), refresh: true };
        }
    }
    return null;
}
