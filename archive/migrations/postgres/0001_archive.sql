-- rmq archive, schema version 1 (PostgreSQL).

-- One row per message: the Java redis-mq columns, then rmq's.
CREATE TABLE redismq_message (
    queue              VARCHAR(200) NOT NULL,
    "offset"           BIGINT       NOT NULL,
    id                 VARCHAR(128) NOT NULL,
    tag                TEXT         NOT NULL DEFAULT '',
    "key"              TEXT         NOT NULL DEFAULT '',
    body               TEXT,
    virtual_queue_name VARCHAR(200) NOT NULL,
    header             JSONB        NOT NULL DEFAULT '{}',
    status             VARCHAR(16)  NOT NULL,
    create_time        TIMESTAMP(3) WITH TIME ZONE NOT NULL,
    update_time        TIMESTAMP(3) WITH TIME ZONE NOT NULL,
    body_encoding      VARCHAR(8),
    attempts           BIGINT       NOT NULL DEFAULT 0,
    deliveries         BIGINT       NOT NULL DEFAULT 0,
    error              TEXT,
    consumer           TEXT,
    due_time           TIMESTAMP(3) WITH TIME ZONE,
    deadline_time      TIMESTAMP(3) WITH TIME ZONE,
    last_event         VARCHAR(32)  NOT NULL,
    log_ms             BIGINT       NOT NULL,
    log_seq            BIGINT       NOT NULL,
    PRIMARY KEY (queue, "offset")
);
CREATE INDEX redismq_message_by_create_time ON redismq_message (queue, create_time);
CREATE INDEX redismq_message_by_id ON redismq_message (queue, id);
CREATE INDEX redismq_message_by_key ON redismq_message (queue, "key");
CREATE INDEX redismq_message_by_tag ON redismq_message (queue, tag);
CREATE INDEX redismq_message_by_status ON redismq_message (status);

-- Every log entry of every message, keyed by the message and the entry's stream id.
CREATE TABLE redismq_message_event (
    queue         VARCHAR(200) NOT NULL,
    "offset"      BIGINT       NOT NULL,
    log_ms        BIGINT       NOT NULL,
    log_seq       BIGINT       NOT NULL,
    event         VARCHAR(32)  NOT NULL,
    message_id    VARCHAR(128) NOT NULL,
    event_time    TIMESTAMP(3) WITH TIME ZONE NOT NULL,
    consumer      TEXT,
    attempt       BIGINT,
    due_time      TIMESTAMP(3) WITH TIME ZONE,
    deadline_time TIMESTAMP(3) WITH TIME ZONE,
    error         TEXT,
    PRIMARY KEY (queue, "offset", log_ms, log_seq)
);

-- A row that a different message took over (Redis lost data and gave its offset again).
CREATE TABLE redismq_message_replaced (
    queue              VARCHAR(200) NOT NULL,
    "offset"           BIGINT       NOT NULL,
    id                 VARCHAR(128) NOT NULL,
    tag                TEXT         NOT NULL DEFAULT '',
    "key"              TEXT         NOT NULL DEFAULT '',
    body               TEXT,
    virtual_queue_name VARCHAR(200) NOT NULL,
    header             JSONB        NOT NULL DEFAULT '{}',
    status             VARCHAR(16)  NOT NULL,
    create_time        TIMESTAMP(3) WITH TIME ZONE NOT NULL,
    update_time        TIMESTAMP(3) WITH TIME ZONE NOT NULL,
    body_encoding      VARCHAR(8),
    attempts           BIGINT       NOT NULL DEFAULT 0,
    deliveries         BIGINT       NOT NULL DEFAULT 0,
    error              TEXT,
    consumer           TEXT,
    due_time           TIMESTAMP(3) WITH TIME ZONE,
    deadline_time      TIMESTAMP(3) WITH TIME ZONE,
    last_event         VARCHAR(32)  NOT NULL,
    log_ms             BIGINT       NOT NULL,
    log_seq            BIGINT       NOT NULL,
    replaced_time      TIMESTAMP(3) WITH TIME ZONE NOT NULL,
    PRIMARY KEY (queue, "offset", log_ms, log_seq)
);

-- The archiver's state per queue: what it archived, and the problems it found.
CREATE TABLE redismq_archive_queue (
    queue             VARCHAR(200) NOT NULL PRIMARY KEY,
    events            BIGINT NOT NULL DEFAULT 0,
    last_log_ms       BIGINT NOT NULL DEFAULT 0,
    last_log_seq      BIGINT NOT NULL DEFAULT 0,
    max_offset        BIGINT NOT NULL DEFAULT 0,
    max_push_offset   BIGINT NOT NULL DEFAULT 0,
    max_push_log_ms   BIGINT NOT NULL DEFAULT 0,
    max_push_log_seq  BIGINT NOT NULL DEFAULT 0,
    gaps              BIGINT NOT NULL DEFAULT 0,
    gap_entries       BIGINT NOT NULL DEFAULT 0,
    rewinds           BIGINT NOT NULL DEFAULT 0,
    conflicts         BIGINT NOT NULL DEFAULT 0,
    last_warning      TEXT,
    last_warning_time TIMESTAMP(3) WITH TIME ZONE,
    update_time       TIMESTAMP(3) WITH TIME ZONE
);

-- Log entries lost before they were saved, one row per gap the archiver found (the marker it
-- left in Redis names it, so a gap is counted once even when found twice).
CREATE TABLE redismq_archive_gap (
    queue      VARCHAR(200) NOT NULL,
    marker     VARCHAR(200) NOT NULL,
    entries    BIGINT       NOT NULL,
    what       TEXT         NOT NULL,
    found_time TIMESTAMP(3) WITH TIME ZONE NOT NULL,
    PRIMARY KEY (queue, marker)
);
