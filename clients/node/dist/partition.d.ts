import { Recovered, Stats } from "./types";
/** The registry: a hash, field = logical name, value = its record. No queue key looks like it. */
export declare const REGISTRY_KEY = "rmq:partitions";
/** The most partitions a logical queue may have. */
export declare const MAX_PARTITIONS = 1024;
/** The longest logical name (room for the partition suffix within a queue name's 200 bytes). */
export declare const MAX_NAME_LEN = 180;
export declare const SLOT_COUNT = 16384;
/** The hash slot of a key, as Redis Cluster computes it (CRC16 of its hash tag, or of the whole key). */
export declare function keySlot(key: string | Buffer): number;
/** The slot of queue `queue`: every key of a queue carries the hash tag `{queue}` (and a queue name has no braces). */
export declare function queueSlot(queue: string): number;
/** The index of the partition of `key` among `count`: CRC-32 (IEEE) of the key's UTF-8 bytes mod `count`. */
export declare function partitionIndex(key: string | Buffer, count: number): number;
/** The partition names of logical queue `name` with `count` partitions (the rule above). */
export declare function partitionNames(name: string, count: number): string[];
/** A partitioned queue, as its registry record says. */
export declare class Partitioned {
    readonly name: string;
    /** Every partition is an `ordered` queue: one key's messages are handled strictly one after another. */
    readonly ordered: boolean;
    /** The partitions' queue names, by index. */
    readonly partitions: string[];
    /** Unix ms of the creation. */
    readonly created: number;
    constructor(name: string, 
    /** Every partition is an `ordered` queue: one key's messages are handled strictly one after another. */
    ordered: boolean, 
    /** The partitions' queue names, by index. */
    partitions: string[], 
    /** Unix ms of the creation. */
    created?: number);
    get count(): number;
    /** The partition of messages with `key`. */
    partitionForKey(key: string | Buffer): string;
    /** The partition a message goes to: its key's, or a random one when it has none. */
    route(key: string | undefined): string;
    /** The registry record. */
    encode(): string;
    /** Reads a registry record of logical queue `name`. */
    static decode(name: string, record: string | Buffer): Partitioned;
}
/** STATS of every partition of a partitioned queue, and their sum. */
export interface PartitionStats {
    total: Stats;
    /** Partition queue name → its counters, in partition order. */
    partitions: Record<string, Stats>;
}
/** RECOVER on every partition of a partitioned queue, and the sum. */
export interface PartitionRecovered {
    total: Recovered;
    partitions: Record<string, Recovered>;
}
/** The counters of several partitions summed (`oldest_ready_ms`: the oldest; `offset` is per partition and left 0). */
export declare function totalStats(each: Stats[]): Stats;
