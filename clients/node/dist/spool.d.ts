export declare const MAGIC: Buffer<ArrayBuffer>;
export declare const HEADER = 12;
export declare const MAX_PAYLOAD: number;
export declare const SEGMENT_ROLL_BYTES: number;
export declare const DRAIN_BATCH = 500;
/** One spooled message: everything needed to PUSH it again. */
export interface SpoolRecord {
    queue: string;
    /** The producer's id; empty means "push without ID". */
    id: string;
    body: Buffer;
    tag: string;
    key: string;
    headers: Array<[string, string]>;
    /** Absolute due time (unix ms) of a delayed message. */
    at: number | null;
    /** When it was spooled (unix ms). */
    spooledAt: number;
}
/** A record, or a stretch of damaged bytes, moved aside for a person to look at. */
export interface QuarantineEntry {
    segment: string;
    offset: number;
    reason: string;
    time: number;
    /** The raw bytes of the damaged stretch, or the record payload that Redis refused. */
    bytes: Buffer;
}
export declare function encodeRecord(r: SpoolRecord): Buffer;
/** Throws an Error with the reason when the payload is not a record. */
export declare function decodeRecord(payload: Buffer): SpoolRecord;
export declare function encodeQuarantine(e: QuarantineEntry): Buffer;
export declare function decodeQuarantine(payload: Buffer): QuarantineEntry;
export declare function frame(payload: Buffer): Buffer;
export type Item = {
    kind: "frame";
    start: number;
    end: number;
} | {
    kind: "corrupt";
    start: number;
    end: number;
    reason: string;
} | {
    kind: "torn";
    start: number;
};
/** Splits buf from `start` into good frames, corrupt stretches and a torn tail. */
export declare function scan(buf: Buffer, start?: number): Item[];
/** What the spool holds; reading it changes nothing. */
export interface SpoolStatus {
    /** Records waiting to be re-sent, and their bytes (frames included). */
    records: number;
    bytes: number;
    segments: number;
    /** Damaged stretches not yet quarantined (the next drain moves them). */
    corrupt: number;
    /** Entries in the quarantine file, and its size. */
    quarantined: number;
    quarantineBytes: number;
}
/** What a drain did. */
export interface DrainReport {
    sent: number;
    /** Records Redis refused for good (moved to the quarantine with Redis's error). */
    refused: number;
    /** Damaged stretches moved to the quarantine. */
    corrupt: number;
    tornBytes: number;
    /** Records still in the spool afterwards (when the drain stopped early). */
    remaining: number;
    /** Why the drain stopped early (Redis unavailable ...), if it did. */
    stopped: string | null;
    /** Another process was draining, so this one did nothing. */
    busy: boolean;
}
/** Thrown by a drain's sender when Redis cannot take the batch now: the drain stops there. */
export declare class SendStopped extends Error {
}
/**
 * What a sender answers per record: null when Redis took it, else the reason it refused it for
 * good. Throwing {@link SendStopped} stops the drain.
 */
export type Sender = (records: SpoolRecord[]) => Promise<Array<string | null>>;
/** A spool directory. Safe to share inside a process (a mutex) and between processes (flock). */
export declare class Spool {
    readonly dir: string;
    /** Bytes of torn tail cut off the newest segment when the spool was opened. */
    tornBytesAtOpen: number;
    private chain;
    private constructor();
    /** Opens (creating it if needed) the spool and cuts a torn tail off its newest segment. */
    static open(dir: string): Promise<Spool>;
    private file;
    private segPath;
    private posPath;
    /** Runs fn under the process mutex and the LOCK flock (appends, sealing, repair). */
    private locked;
    private segments;
    private readPos;
    private writePos;
    private cutTornTail;
    /**
     * Appends the records and fsyncs them: when the promise resolves they are on disk. Either all
     * are appended or it rejects (a partial write is cut off again).
     */
    append(records: SpoolRecord[]): Promise<void>;
    /** True when some segment holds bytes past its drain position (sizes only). */
    hasData(): Promise<boolean>;
    status(): Promise<SpoolStatus>;
    /** The quarantine's entries, oldest first. */
    quarantine(): Promise<QuarantineEntry[]>;
    private appendQuarantine;
    /** Starts a new segment when the newest holds anything; returns the sealed ones, oldest first. */
    private seal;
    /**
     * Re-sends the spool, oldest first, through `send`, in batches of up to 500 records. A record
     * Redis refuses for good goes to the quarantine; a {@link SendStopped} from the sender stops
     * the drain (what was not sent stays, in order). `progress(done, total)` is told after each batch.
     */
    drain(send: Sender, progress?: (done: number, total: number) => void): Promise<DrainReport>;
    private drainSegment;
}
