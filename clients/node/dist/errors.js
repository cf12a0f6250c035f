"use strict";
/** Errors of the rmq client. Every error is an {@link RmqError}. */
Object.defineProperty(exports, "__esModule", { value: true });
exports.NotStored = exports.SpoolError = exports.ProtocolError = exports.ConfigError = exports.InvalidMessage = exports.NotInstalled = exports.Refused = exports.Unavailable = exports.RmqError = void 0;
class RmqError extends Error {
    constructor(message) {
        super(message);
        this.name = new.target.name;
    }
}
exports.RmqError = RmqError;
/**
 * Redis could not take the request now (down, unreachable, timed out, loading, a read-only
 * replica after a failover, out of memory, a busy script ...). Trying again later can work; the
 * producer spools messages on this error.
 */
class Unavailable extends RmqError {
}
exports.Unavailable = Unavailable;
/**
 * Redis answered with an error about the request itself or the setup (a bad argument,
 * `queue full`, no permission, a wrong password ...). Sending it again will not help; the
 * producer reports it and never spools it.
 */
class Refused extends RmqError {
}
exports.Refused = Refused;
/**
 * The server has neither the rmq module nor the rmq Lua library, and the command only reads (a
 * command that writes, such as a push or a fetch, loads the library).
 */
class NotInstalled extends Refused {
}
exports.NotInstalled = NotInstalled;
/**
 * The message breaks a rule of the server (queue name, id, headers, delay with at) and was
 * refused before anything was sent, even while Redis is down.
 */
class InvalidMessage extends RmqError {
}
exports.InvalidMessage = InvalidMessage;
/** Bad settings (URL, edition, durations ...). */
class ConfigError extends RmqError {
}
exports.ConfigError = ConfigError;
/** Redis answered something this client does not understand. */
class ProtocolError extends RmqError {
}
exports.ProtocolError = ProtocolError;
/** The spool could not be read or written. */
class SpoolError extends RmqError {
}
exports.SpoolError = SpoolError;
/**
 * The catastrophic case: Redis did not take the message and neither did the spool. The message
 * is stored nowhere; the caller still has it.
 */
class NotStored extends RmqError {
    redis;
    spool;
    constructor(redis, spool) {
        super(`message not stored: redis unavailable (${redis}) and spool failed (${spool})`);
        this.redis = redis;
        this.spool = spool;
    }
}
exports.NotStored = NotStored;
