-- rmq archive, schema version 1 (MySQL 8 / MariaDB 10.5+). Times are DATETIME(3) in UTC.
-- Binary collation: queue names, ids, tags and keys compare byte for byte, as in Redis.

-- One row per message: the Java redis-mq columns, then rmq's.
CREATE TABLE redismq_message (
    queue              VARCHAR(200) NOT NULL,
    `offset`           BIGINT       NOT NULL,
    id                 VARCHAR(128) NOT NULL,
    tag                LONGTEXT     NOT NULL,
    `key`              LONGTEXT     NOT NULL,
    body               LONGTEXT     NULL,
    virtual_queue_name VARCHAR(200) NOT NULL,
    header             JSON         NOT NULL,
    status             VARCHAR(16)  NOT NULL,
    create_time        DATETIME(3)  NOT NULL,
    update_time        DATETIME(3)  NOT NULL,
    body_encoding      VARCHAR(8)   NULL,
    attempts           BIGINT       NOT NULL DEFAULT 0,
    deliveries         BIGINT       NOT NULL DEFAULT 0,
    error              LONGTEXT     NULL,
    consumer           LONGTEXT     NULL,
    due_time           DATETIME(3)  NULL,
    deadline_time      DATETIME(3)  NULL,
    last_event         VARCHAR(32)  NOT NULL,
    log_ms             BIGINT       NOT NULL,
    log_seq            BIGINT       NOT NULL,
    PRIMARY KEY (queue, `offset`),
    KEY redismq_message_by_create_time (queue, create_time),
    KEY redismq_message_by_id (queue, id),
    KEY redismq_message_by_key (queue, `key`(191)),
    KEY redismq_message_by_tag (queue, tag(191)),
    KEY redismq_message_by_status (status)
) ENGINE = InnoDB DEFAULT CHARSET = utf8mb4 COLLATE = utf8mb4_bin;

-- Every log entry of every message, keyed by the message and the entry's stream id.
CREATE TABLE redismq_message_event (
    queue         VARCHAR(200) NOT NULL,
    `offset`      BIGINT       NOT NULL,
    log_ms        BIGINT       NOT NULL,
    log_seq       BIGINT       NOT NULL,
    event         VARCHAR(32)  NOT NULL,
    message_id    VARCHAR(128) NOT NULL,
    event_time    DATETIME(3)  NOT NULL,
    consumer      LONGTEXT     NULL,
    attempt       BIGINT       NULL,
    due_time      DATETIME(3)  NULL,
    deadline_time DATETIME(3)  NULL,
    error         LONGTEXT     NULL,
    PRIMARY KEY (queue, `offset`, log_ms, log_seq)
) ENGINE = InnoDB DEFAULT CHARSET = utf8mb4 COLLATE = utf8mb4_bin;

-- A row that a different message took over (Redis lost data and gave its offset again).
CREATE TABLE redismq_message_replaced (
    queue              VARCHAR(200) NOT NULL,
    `offset`           BIGINT       NOT NULL,
    id                 VARCHAR(128) NOT NULL,
    tag                LONGTEXT     NOT NULL,
    `key`              LONGTEXT     NOT NULL,
    body               LONGTEXT     NULL,
    virtual_queue_name VARCHAR(200) NOT NULL,
    header             JSON         NOT NULL,
    status             VARCHAR(16)  NOT NULL,
    create_time        DATETIME(3)  NOT NULL,
    update_time        DATETIME(3)  NOT NULL,
    body_encoding      VARCHAR(8)   NULL,
    attempts           BIGINT       NOT NULL DEFAULT 0,
    deliveries         BIGINT       NOT NULL DEFAULT 0,
    error              LONGTEXT     NULL,
    consumer           LONGTEXT     NULL,
    due_time           DATETIME(3)  NULL,
    deadline_time      DATETIME(3)  NULL,
    last_event         VARCHAR(32)  NOT NULL,
    log_ms             BIGINT       NOT NULL,
    log_seq            BIGINT       NOT NULL,
    replaced_time      DATETIME(3)  NOT NULL,
    PRIMARY KEY (queue, `offset`, log_ms, log_seq)
) ENGINE = InnoDB DEFAULT CHARSET = utf8mb4 COLLATE = utf8mb4_bin;

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
    last_warning      LONGTEXT    NULL,
    last_warning_time DATETIME(3) NULL,
    update_time       DATETIME(3) NULL
) ENGINE = InnoDB DEFAULT CHARSET = utf8mb4 COLLATE = utf8mb4_bin;

-- Log entries lost before they were saved, one row per gap the archiver found (the marker it
-- left in Redis names it, so a gap is counted once even when found twice).
CREATE TABLE redismq_archive_gap (
    queue      VARCHAR(200) NOT NULL,
    marker     VARCHAR(200) NOT NULL,
    entries    BIGINT       NOT NULL,
    what       LONGTEXT     NOT NULL,
    found_time DATETIME(3)  NOT NULL,
    PRIMARY KEY (queue, marker)
) ENGINE = InnoDB DEFAULT CHARSET = utf8mb4 COLLATE = utf8mb4_bin;
