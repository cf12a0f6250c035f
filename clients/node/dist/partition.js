"use strict";
Object.defineProperty(exports, "__esModule", { value: true });
exports.Partitioned = exports.SLOT_COUNT = exports.MAX_NAME_LEN = exports.MAX_PARTITIONS = exports.REGISTRY_KEY = void 0;
exports.keySlot = keySlot;
exports.queueSlot = queueSlot;
exports.partitionIndex = partitionIndex;
exports.partitionNames = partitionNames;
exports.totalStats = totalStats;
/**
 * Partitioned queues: one logical queue NAME over COUNT ordinary rmq queues, its partitions, whose
 * names put them on different slots of a Redis Cluster (and so spread over its masters). The
 * server sees ordinary queues; everything here lives in the client.
 *
 * The rules are the same in every rmq client (Rust, Python, Node.js):
 * - **Registry**: the hash `rmq:partitions`, field NAME, value
 *   `v=1 count=COUNT ordered=0|1 created=UNIX_MS partitions=P0,P1,...`. A NAME without a field is
 *   an ordinary queue. A partition count is fixed at creation.
 * - **Key → partition**: CRC-32 (IEEE 802.3, `zlib.crc32`) of the key's UTF-8 bytes, modulo
 *   COUNT: the index in the registry's list. A message without a key goes to a random partition.
 * - **Partition names** (what creating writes): partition `i` is `NAME#i` when the cluster slot
 *   of that name is in the `i`-th of COUNT equal shares of the 16384 slots, else `NAME#i.n` with
 *   the smallest `n ≥ 1` whose slot is. Readers take the names from the registry.
 */
const node_zlib_1 = require("node:zlib");
const errors_1 = require("./errors");
const types_1 = require("./types");
// cluster-key-slot (the slot function ioredis uses) ships no type definitions.
// eslint-disable-next-line @typescript-eslint/no-require-imports
const calculateSlot = require("cluster-key-slot");
/** The registry: a hash, field = logical name, value = its record. No queue key looks like it. */
exports.REGISTRY_KEY = "rmq:partitions";
/** The most partitions a logical queue may have. */
exports.MAX_PARTITIONS = 1024;
/** The longest logical name (room for the partition suffix within a queue name's 200 bytes). */
exports.MAX_NAME_LEN = 180;
exports.SLOT_COUNT = 16384;
/** The hash slot of a key, as Redis Cluster computes it (CRC16 of its hash tag, or of the whole key). */
function keySlot(key) {
    return calculateSlot(key);
}
/** The slot of queue `queue`: every key of a queue carries the hash tag `{queue}` (and a queue name has no braces). */
function queueSlot(queue) {
    return calculateSlot(queue);
}
/** The index of the partition of `key` among `count`: CRC-32 (IEEE) of the key's UTF-8 bytes mod `count`. */
function partitionIndex(key, count) {
    return (0, node_zlib_1.crc32)(typeof key === "string" ? Buffer.from(key, "utf8") : key) % Math.max(count, 1);
}
function checkNameAndCount(name, count) {
    try {
        (0, types_1.validateQueue)(name);
    }
    catch {
        throw new errors_1.InvalidMessage(`invalid partitioned queue name '${name}'`);
    }
    if (Buffer.byteLength(name) > exports.MAX_NAME_LEN)
        throw new errors_1.InvalidMessage(`a partitioned queue name has at most ${exports.MAX_NAME_LEN} bytes`);
    if (!Number.isInteger(count) || count < 1 || count > exports.MAX_PARTITIONS)
        throw new errors_1.InvalidMessage(`COUNT must be 1 to ${exports.MAX_PARTITIONS}`);
}
/** The partition names of logical queue `name` with `count` partitions (the rule above). */
function partitionNames(name, count) {
    checkNameAndCount(name, count);
    const out = [];
    for (let i = 0; i < count; i++) {
        const lo = Math.floor((i * exports.SLOT_COUNT) / count);
        const hi = Math.floor(((i + 1) * exports.SLOT_COUNT) / count);
        const fits = (q) => {
            const s = queueSlot(q);
            return s >= lo && s < hi;
        };
        let chosen = `${name}#${i}`;
        if (!fits(chosen)) {
            // One name in every 16384 / (hi - lo) fits, on average: about COUNT tries.
            let n = 1;
            for (; n <= 1000 * count + 10_000; n++) {
                chosen = `${name}#${i}.${n}`;
                if (fits(chosen))
                    break;
            }
            if (n > 1000 * count + 10_000)
                throw new errors_1.InvalidMessage(`no name found for partition ${i} of '${name}'`);
        }
        out.push(chosen);
    }
    return out;
}
/** A partitioned queue, as its registry record says. */
class Partitioned {
    name;
    ordered;
    partitions;
    created;
    constructor(name, 
    /** Every partition is an `ordered` queue: one key's messages are handled strictly one after another. */
    ordered, 
    /** The partitions' queue names, by index. */
    partitions, 
    /** Unix ms of the creation. */
    created = 0) {
        this.name = name;
        this.ordered = ordered;
        this.partitions = partitions;
        this.created = created;
    }
    get count() {
        return this.partitions.length;
    }
    /** The partition of messages with `key`. */
    partitionForKey(key) {
        return this.partitions[partitionIndex(key, this.count)];
    }
    /** The partition a message goes to: its key's, or a random one when it has none. */
    route(key) {
        if (!key)
            return this.partitions[Math.floor(Math.random() * this.count)];
        return this.partitionForKey(key);
    }
    /** The registry record. */
    encode() {
        return `v=1 count=${this.count} ordered=${this.ordered ? 1 : 0} created=${this.created} partitions=${this.partitions.join(",")}`;
    }
    /** Reads a registry record of logical queue `name`. */
    static decode(name, record) {
        const text = Buffer.isBuffer(record) ? record.toString("utf8") : record;
        const bad = (why) => new errors_1.ProtocolError(`registry record of '${name}' in ${exports.REGISTRY_KEY}: ${why}: ${JSON.stringify(text)}`);
        let count = null;
        let ordered = false;
        let created = 0;
        let partitions = [];
        for (const f of text.split(/\s+/).filter(Boolean)) {
            const i = f.indexOf("=");
            if (i < 0)
                throw bad("not key=value");
            const [k, v] = [f.slice(0, i), f.slice(i + 1)];
            if (k === "v" && v !== "1")
                throw bad("unknown version (a newer client wrote it?)");
            if (k === "count" || k === "created") {
                if (!/^\d+$/.test(v))
                    throw bad(`bad ${k}`);
                if (k === "count")
                    count = Number(v);
                else
                    created = Number(v);
            }
            else if (k === "ordered")
                ordered = v === "1";
            else if (k === "partitions")
                partitions = v.split(",").filter(Boolean);
        }
        if (count !== partitions.length || !partitions.length)
            throw bad("count and partitions disagree");
        for (const q of partitions) {
            try {
                (0, types_1.validateQueue)(q);
            }
            catch {
                throw bad("invalid partition name");
            }
        }
        return new Partitioned(name, ordered, partitions, created);
    }
}
exports.Partitioned = Partitioned;
/** The counters of several partitions summed (`oldest_ready_ms`: the oldest; `offset` is per partition and left 0). */
function totalStats(each) {
    const t = (0, types_1.parseStats)(null);
    const numeric = (s) => Object.entries(s).filter(([k]) => k !== "extra");
    for (const s of each) {
        for (const [k, v] of numeric(s)) {
            const cur = t[k];
            t[k] = k === "offset" ? 0 : k === "oldest_ready_ms" ? Math.max(cur, v) : cur + v;
        }
        for (const [k, v] of Object.entries(s.extra))
            t.extra[k] = (t.extra[k] ?? 0) + v;
    }
    return t;
}
