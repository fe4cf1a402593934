-- PostgreSQL twin of migrations/sqlite/0005_feed.sql. Difference: no
-- WITHOUT ROWID on feed (a SQLite storage clause; PostgreSQL keeps rows in
-- a heap with the primary key as a separate b-tree).
--
-- The change feed: what every write transaction changed, under one global
-- revision per transaction.

-- The revision counter, one row. A writing transaction increments it
-- (UPDATE ... RETURNING) before it records its changes; the row lock that
-- takes serialises writers until they commit, so revision order is commit
-- order. `compacted`: every revision at or below it has been deleted.
CREATE TABLE feed_head (
    id        BIGINT PRIMARY KEY CHECK (id = 1),
    revision  BIGINT NOT NULL,
    compacted BIGINT NOT NULL
);
INSERT INTO feed_head (id, revision, compacted) VALUES (1, 0, 0);

-- One row per changed subject; the changes of one transaction share its
-- revision. `subject` is the id (a JSON list for composite subjects);
-- `networks` and `hosts` are JSON lists.
CREATE TABLE feed (
    revision BIGINT NOT NULL,
    seq      BIGINT NOT NULL,
    kind     TEXT NOT NULL,
    subject  TEXT NOT NULL,
    op       TEXT NOT NULL,
    networks TEXT NOT NULL,
    hosts    TEXT NOT NULL,
    at_ms    BIGINT NOT NULL,
    PRIMARY KEY (revision, seq)
);
-- No index on at_ms: compaction walks the primary key down from the
-- newest revision it may delete, and `at_ms` grows with the revision.
