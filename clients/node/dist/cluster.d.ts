import { Arg, Node } from "./node";
export declare const SLOT_COUNT = 16384;
/** Where a request goes: the master of a slot, a node (`host:port`), or any master (the URL's node first when it is one). */
export type Target = {
    slot: number;
} | {
    node: string;
} | {
    any: true;
};
/** The slot map: which master serves each slot, and each master's replicas. */
export declare class Topology {
    owners: Array<string | null>;
    /** Masters in the order of their first slot. */
    masters: string[];
    replicas: Map<string, string[]>;
    /** From a `CLUSTER SLOTS` reply: `[start, end, [host, port, id, ...], replica...]` per range. An empty host means the host the reply came from. */
    static fromClusterSlots(reply: unknown, seedHost: string): Topology;
    copy(): Topology;
}
/** The nodes of one cluster, found from the node of the seed URL. */
export declare class Cluster {
    private readonly connectTimeoutMs;
    topology: Topology;
    readonly seedHost: string;
    readonly seedAddr: string;
    private readonly seed;
    private nodes;
    private refreshed;
    private refreshing;
    constructor(seedUrl: string, connectTimeoutMs: number);
    /** The node at `addr` (`host:port`), with the seed URL's user, password, TLS and options. */
    node(addr: string): Node;
    private readMap;
    /** Reads the slot map from the seed node. */
    connect(timeoutMs: number): Promise<void>;
    masters(): string[];
    /** Reads the slot map again from whichever node answers first (the masters, their replicas, then the seed), unless another refresh just did. */
    refresh(): Promise<void>;
    /** A MOVED reply: `slot` is served by `addr` now. */
    private learn;
    /**
     * Sends `cmds` as one pipeline to `target`, following the cluster's answers (see the module
     * documentation), within `timeoutMs`. `resend`: every command in it is safe to send again after
     * its answer was lost; it also allows a pipeline of several commands to be sent again after a
     * redirect. `dedicated`: on a connection of its own (a blocking FETCH, WAIT).
     */
    exec(target: Target, cmds: Arg[][], timeoutMs: number, resend: boolean, dedicated?: boolean): Promise<unknown[]>;
    close(): void;
}
