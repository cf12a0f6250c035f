/** Errors of the rmq client. Every error is an {@link RmqError}. */

export class RmqError extends Error {
  constructor(message: string) {
    super(message);
    this.name = new.target.name;
  }
}

/**
 * Redis could not take the request now (down, unreachable, timed out, loading, a read-only
 * replica after a failover, out of memory, a busy script ...). Trying again later can work; the
 * producer spools messages on this error.
 */
export class Unavailable extends RmqError {}

/**
 * Redis answered with an error about the request itself or the setup (a bad argument,
 * `queue full`, no permission, a wrong password ...). Sending it again will not help; the
 * producer reports it and never spools it.
 */
export class Refused extends RmqError {}

/**
 * The server has neither the rmq module nor the rmq Lua library, and the command only reads (a
 * command that writes, such as a push or a fetch, loads the library).
 */
export class NotInstalled extends Refused {}

/**
 * The message breaks a rule of the server (queue name, id, headers, delay with at) and was
 * refused before anything was sent, even while Redis is down.
 */
export class InvalidMessage extends RmqError {}

/** Bad settings (URL, edition, durations ...). */
export class ConfigError extends RmqError {}

/** Redis answered something this client does not understand. */
export class ProtocolError extends RmqError {}

/** The spool could not be read or written. */
export class SpoolError extends RmqError {}

/**
 * The catastrophic case: Redis did not take the message and neither did the spool. The message
 * is stored nowhere; the caller still has it.
 */
export class NotStored extends RmqError {
  constructor(
    readonly redis: string,
    readonly spool: string,
  ) {
    super(`message not stored: redis unavailable (${redis}) and spool failed (${spool})`);
  }
}
