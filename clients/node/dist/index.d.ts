/**
 * rmq-client: the client for rmq, the reliable message queue in Redis, on ioredis.
 *
 * Works with both editions of rmq: the `RMQ.*` module, or the Lua library (`FCALL rmq_*`) on a
 * Redis without modules, which it loads itself when a command that writes needs it.
 * - {@link Producer} pushes, and spools to disk what Redis cannot take (re-sent later);
 * - {@link Worker} runs a handler per message, with ack / retry / fail / error outcomes, lock
 *   renewal, a per-job timeout and a graceful stop;
 * - {@link Client} has every command, with typed results, and partitioned queues.
 *
 * Given the URL of any node of a Redis Cluster, they find the cluster and route every command to
 * its queue's master.
 */
export { Client, Rotation, classify, luaLibrary, READERS, QUEUE_KEY_PREFIXES } from "./client";
export type { ClientOptions, Confirm, Edition } from "./client";
export { Partitioned, partitionIndex, partitionNames, keySlot, queueSlot, totalStats, REGISTRY_KEY, MAX_PARTITIONS, MAX_NAME_LEN, } from "./partition";
export type { PartitionStats, PartitionRecovered } from "./partition";
export { Producer, drainSpool, defaultSpoolDir } from "./producer";
export type { ProducerOptions } from "./producer";
export { Worker, Outcome } from "./worker";
export type { Handler, JobContext, WorkerOptions } from "./worker";
export { Spool, SendStopped, encodeRecord, decodeRecord, encodeQuarantine, decodeQuarantine, frame, scan, } from "./spool";
export type { SpoolRecord, QuarantineEntry, SpoolStatus, DrainReport } from "./spool";
export { newId } from "./types";
export type { Message, Pushed, PushOptions, Stats, Recovered, LogEntry, WorkerReport, Body } from "./types";
export { RmqError, Unavailable, Refused, InvalidMessage, ConfigError, ProtocolError, SpoolError, NotStored, NotInstalled, } from "./errors";
