-- rmq archive, schema version 1 (SQLite). Times are TEXT 'YYYY-MM-DD HH:MM:SS.SSS' in UTC,
-- SQLite's own timestamp format: its date functions read them and they sort as time.

-- One row per message: the Java redis-mq columns, then rmq's.
CREATE TABLE redismq_message (
    queue              TEXT    NOT NULL,
    "offset"           INTEGER NOT NULL,
    id                 TEXT    NOT NULL,
    tag                TEXT    NOT NULL DEFAULT '',
    "key"              TEXT    NOT NULL DEFAULT '',
    body               TEXT,
    virtual_queue_name TEXT    NOT NULL,
    header             TEXT    NOT NULL DEFAULT '{}',
    status             TEXT    NOT NULL,
    create_time        TEXT    NOT NULL,
    update_time        TEXT    NOT NULL,
    body_encoding      TEXT,
    attempts           INTEGER NOT NULL DEFAULT 0,
    deliveries         INTEGER NOT NULL DEFAULT 0,
    error              TEXT,
    consumer           TEXT,
    due_time           TEXT,
    deadline_time      TEXT,
    last_event         TEXT    NOT NULL,
    log_ms             INTEGER NOT NULL,
    log_seq            INTEGER NOT NULL,
    PRIMARY KEY (queue, "offset")
);
CREATE INDEX redismq_message_by_create_time ON redismq_message (queue, create_time);
CREATE INDEX redismq_message_by_id ON redismq_message (queue, id);
CREATE INDEX redismq_message_by_key ON redismq_message (queue, "key");
CREATE INDEX redismq_message_by_tag ON redismq_message (queue, tag);
CREATE INDEX redismq_message_by_status ON redismq_message (status);

-- Every log entry of every message, keyed by the message and the entry's stream id (small
-- rows: stored in their key's B-tree, WITHOUT ROWID).
CREATE TABLE redismq_message_event (
    queue         TEXT    NOT NULL,
    "offset"      INTEGER NOT NULL,
    log_ms        INTEGER NOT NULL,
    log_seq       INTEGER NOT NULL,
    event         TEXT    NOT NULL,
    message_id    TEXT    NOT NULL,
    event_time    TEXT    NOT NULL,
    consumer      TEXT,
    attempt       INTEGER,
    due_time      TEXT,
    deadline_time TEXT,
    error         TEXT,
    PRIMARY KEY (queue, "offset", log_ms, log_seq)
) WITHOUT ROWID;

-- A row that a different message took over (Redis lost data and gave its offset again).
CREATE TABLE redismq_message_replaced (
    queue              TEXT    NOT NULL,
    "offset"           INTEGER NOT NULL,
    id                 TEXT    NOT NULL,
    tag                TEXT    NOT NULL DEFAULT '',
    "key"              TEXT    NOT NULL DEFAULT '',
    body               TEXT,
    virtual_queue_name TEXT    NOT NULL,
    header             TEXT    NOT NULL DEFAULT '{}',
    status             TEXT    NOT NULL,
    create_time        TEXT    NOT NULL,
    update_time        TEXT    NOT NULL,
    body_encoding      TEXT,
    attempts           INTEGER NOT NULL DEFAULT 0,
    deliveries         INTEGER NOT NULL DEFAULT 0,
    error              TEXT,
    consumer           TEXT,
    due_time           TEXT,
    deadline_time      TEXT,
    last_event         TEXT    NOT NULL,
    log_ms             INTEGER NOT NULL,
    log_seq            INTEGER NOT NULL,
    replaced_time      TEXT    NOT NULL,
    PRIMARY KEY (queue, "offset", log_ms, log_seq)
);

-- The archiver's state per queue: what it archived, and the problems it found.
CREATE TABLE redismq_archive_queue (
    queue             TEXT    NOT NULL PRIMARY KEY,
    events            INTEGER NOT NULL DEFAULT 0,
    last_log_ms       INTEGER NOT NULL DEFAULT 0,
    last_log_seq      INTEGER NOT NULL DEFAULT 0,
    max_offset        INTEGER NOT NULL DEFAULT 0,
    max_push_offset   INTEGER NOT NULL DEFAULT 0,
    max_push_log_ms   INTEGER NOT NULL DEFAULT 0,
    max_push_log_seq  INTEGER NOT NULL DEFAULT 0,
    gaps              INTEGER NOT NULL DEFAULT 0,
    gap_entries       INTEGER NOT NULL DEFAULT 0,
    rewinds           INTEGER NOT NULL DEFAULT 0,
    conflicts         INTEGER NOT NULL DEFAULT 0,
    last_warning      TEXT,
    last_warning_time TEXT,
    update_time       TEXT
) WITHOUT ROWID;

-- Log entries lost before they were saved, one row per gap the archiver found (the marker it
-- left in Redis names it, so a gap is counted once even when found twice).
CREATE TABLE redismq_archive_gap (
    queue      TEXT    NOT NULL,
    marker     TEXT    NOT NULL,
    entries    INTEGER NOT NULL,
    what       TEXT    NOT NULL,
    found_time TEXT    NOT NULL,
    PRIMARY KEY (queue, marker)
) WITHOUT ROWID;
