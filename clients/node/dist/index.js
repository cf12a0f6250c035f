"use strict";
Object.defineProperty(exports, "__esModule", { value: true });
exports.NotInstalled = exports.NotStored = exports.SpoolError = exports.ProtocolError = exports.ConfigError = exports.InvalidMessage = exports.Refused = exports.Unavailable = exports.RmqError = exports.newId = exports.scan = exports.frame = exports.decodeQuarantine = exports.encodeQuarantine = exports.decodeRecord = exports.encodeRecord = exports.SendStopped = exports.Spool = exports.Outcome = exports.Worker = exports.defaultSpoolDir = exports.drainSpool = exports.Producer = exports.MAX_NAME_LEN = exports.MAX_PARTITIONS = exports.REGISTRY_KEY = exports.totalStats = exports.queueSlot = exports.keySlot = exports.partitionNames = exports.partitionIndex = exports.Partitioned = exports.QUEUE_KEY_PREFIXES = exports.READERS = exports.luaLibrary = exports.classify = exports.Rotation = exports.Client = void 0;
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
var client_1 = require("./client");
Object.defineProperty(exports, "Client", { enumerable: true, get: function () { return client_1.Client; } });
Object.defineProperty(exports, "Rotation", { enumerable: true, get: function () { return client_1.Rotation; } });
Object.defineProperty(exports, "classify", { enumerable: true, get: function () { return client_1.classify; } });
Object.defineProperty(exports, "luaLibrary", { enumerable: true, get: function () { return client_1.luaLibrary; } });
Object.defineProperty(exports, "READERS", { enumerable: true, get: function () { return client_1.READERS; } });
Object.defineProperty(exports, "QUEUE_KEY_PREFIXES", { enumerable: true, get: function () { return client_1.QUEUE_KEY_PREFIXES; } });
var partition_1 = require("./partition");
Object.defineProperty(exports, "Partitioned", { enumerable: true, get: function () { return partition_1.Partitioned; } });
Object.defineProperty(exports, "partitionIndex", { enumerable: true, get: function () { return partition_1.partitionIndex; } });
Object.defineProperty(exports, "partitionNames", { enumerable: true, get: function () { return partition_1.partitionNames; } });
Object.defineProperty(exports, "keySlot", { enumerable: true, get: function () { return partition_1.keySlot; } });
Object.defineProperty(exports, "queueSlot", { enumerable: true, get: function () { return partition_1.queueSlot; } });
Object.defineProperty(exports, "totalStats", { enumerable: true, get: function () { return partition_1.totalStats; } });
Object.defineProperty(exports, "REGISTRY_KEY", { enumerable: true, get: function () { return partition_1.REGISTRY_KEY; } });
Object.defineProperty(exports, "MAX_PARTITIONS", { enumerable: true, get: function () { return partition_1.MAX_PARTITIONS; } });
Object.defineProperty(exports, "MAX_NAME_LEN", { enumerable: true, get: function () { return partition_1.MAX_NAME_LEN; } });
var producer_1 = require("./producer");
Object.defineProperty(exports, "Producer", { enumerable: true, get: function () { return producer_1.Producer; } });
Object.defineProperty(exports, "drainSpool", { enumerable: true, get: function () { return producer_1.drainSpool; } });
Object.defineProperty(exports, "defaultSpoolDir", { enumerable: true, get: function () { return producer_1.defaultSpoolDir; } });
var worker_1 = require("./worker");
Object.defineProperty(exports, "Worker", { enumerable: true, get: function () { return worker_1.Worker; } });
Object.defineProperty(exports, "Outcome", { enumerable: true, get: function () { return worker_1.Outcome; } });
var spool_1 = require("./spool");
Object.defineProperty(exports, "Spool", { enumerable: true, get: function () { return spool_1.Spool; } });
Object.defineProperty(exports, "SendStopped", { enumerable: true, get: function () { return spool_1.SendStopped; } });
Object.defineProperty(exports, "encodeRecord", { enumerable: true, get: function () { return spool_1.encodeRecord; } });
Object.defineProperty(exports, "decodeRecord", { enumerable: true, get: function () { return spool_1.decodeRecord; } });
Object.defineProperty(exports, "encodeQuarantine", { enumerable: true, get: function () { return spool_1.encodeQuarantine; } });
Object.defineProperty(exports, "decodeQuarantine", { enumerable: true, get: function () { return spool_1.decodeQuarantine; } });
Object.defineProperty(exports, "frame", { enumerable: true, get: function () { return spool_1.frame; } });
Object.defineProperty(exports, "scan", { enumerable: true, get: function () { return spool_1.scan; } });
var types_1 = require("./types");
Object.defineProperty(exports, "newId", { enumerable: true, get: function () { return types_1.newId; } });
var errors_1 = require("./errors");
Object.defineProperty(exports, "RmqError", { enumerable: true, get: function () { return errors_1.RmqError; } });
Object.defineProperty(exports, "Unavailable", { enumerable: true, get: function () { return errors_1.Unavailable; } });
Object.defineProperty(exports, "Refused", { enumerable: true, get: function () { return errors_1.Refused; } });
Object.defineProperty(exports, "InvalidMessage", { enumerable: true, get: function () { return errors_1.InvalidMessage; } });
Object.defineProperty(exports, "ConfigError", { enumerable: true, get: function () { return errors_1.ConfigError; } });
Object.defineProperty(exports, "ProtocolError", { enumerable: true, get: function () { return errors_1.ProtocolError; } });
Object.defineProperty(exports, "SpoolError", { enumerable: true, get: function () { return errors_1.SpoolError; } });
Object.defineProperty(exports, "NotStored", { enumerable: true, get: function () { return errors_1.NotStored; } });
Object.defineProperty(exports, "NotInstalled", { enumerable: true, get: function () { return errors_1.NotInstalled; } });
