"use strict";
Object.defineProperty(exports, "__esModule", { value: true });
exports.NotInstalled = exports.NotStored = exports.SpoolError = exports.ProtocolError = exports.ConfigError = exports.InvalidMessage = exports.Refused = exports.Unavailable = exports.RmqError = exports.newId = exports.scan = exports.frame = exports.decodeQuarantine = exports.encodeQuarantine = exports.decodeRecord = exports.encodeRecord = exports.SendStopped = exports.Spool = exports.Outcome = exports.Worker = exports.defaultSpoolDir = exports.drainSpool = exports.Producer = exports.READERS = exports.luaLibrary = exports.classify = exports.Client = void 0;
/**
 * rmq-client: the client for rmq, the reliable message queue in Redis, on ioredis.
 *
 * Works with both editions of rmq: the `RMQ.*` module, or the Lua library (`FCALL rmq_*`) on a
 * Redis without modules, which it loads itself when a command that writes needs it.
 * - {@link Producer} pushes, and spools to disk what Redis cannot take (re-sent later);
 * - {@link Worker} runs a handler per message, with ack / retry / fail / error outcomes, lock
 *   renewal, a per-job timeout and a graceful stop;
 * - {@link Client} has every command, with typed results.
 */
var client_1 = require("./client");
Object.defineProperty(exports, "Client", { enumerable: true, get: function () { return client_1.Client; } });
Object.defineProperty(exports, "classify", { enumerable: true, get: function () { return client_1.classify; } });
Object.defineProperty(exports, "luaLibrary", { enumerable: true, get: function () { return client_1.luaLibrary; } });
Object.defineProperty(exports, "READERS", { enumerable: true, get: function () { return client_1.READERS; } });
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
