-- PostgreSQL twin of migrations/sqlite/0002_security_groups.sql. Differences:
-- the unique indexes are named `<table>_<columns>_key` (SQLite's names in the
-- comments above them); nothing else.
--
-- Security groups, their rules, and which ports use them.

CREATE TABLE security_groups (
    id              TEXT PRIMARY KEY,
    seq             BIGINT NOT NULL,
    project_id      TEXT NOT NULL,
    name            TEXT NOT NULL,
    description     TEXT NOT NULL,
    stateful        BOOLEAN NOT NULL,
    -- The project's `default` group; at most one per project.
    is_default      BOOLEAN NOT NULL,
    tags            TEXT NOT NULL DEFAULT '[]',
    created_at      TEXT NOT NULL,
    updated_at      TEXT NOT NULL,
    revision_number BIGINT NOT NULL
);
-- SQLite: security_groups_seq.
CREATE UNIQUE INDEX security_groups_seq_key ON security_groups (seq);
CREATE INDEX security_groups_project ON security_groups (project_id);
-- Exactly one default group per project, however many requests race.
-- SQLite: security_groups_one_default (partial: only rows WHERE is_default).
CREATE UNIQUE INDEX security_groups_project_id_key ON security_groups (project_id) WHERE is_default;

CREATE TABLE security_group_rules (
    id                      TEXT PRIMARY KEY,
    seq                     BIGINT NOT NULL,
    security_group_id       TEXT NOT NULL REFERENCES security_groups (id) ON DELETE CASCADE,
    project_id              TEXT NOT NULL,
    direction               TEXT NOT NULL,
    ethertype               TEXT NOT NULL,
    -- A name (lower case) or a number, as given; NULL is any protocol.
    protocol                TEXT,
    port_range_min          BIGINT,
    port_range_max          BIGINT,
    -- As given, host bits kept.
    remote_ip_prefix        TEXT,
    -- Rules that let a group in go with that group.
    remote_group_id         TEXT REFERENCES security_groups (id) ON DELETE CASCADE,
    remote_address_group_id TEXT,
    -- NULL for the rules new groups start with.
    description             TEXT,
    -- What makes two rules of a group the same (see the model's RuleKey).
    dedup_key               TEXT NOT NULL,
    created_at              TEXT NOT NULL,
    updated_at              TEXT NOT NULL,
    revision_number         BIGINT NOT NULL
);
-- SQLite: security_group_rules_seq.
CREATE UNIQUE INDEX security_group_rules_seq_key ON security_group_rules (seq);
-- SQLite: security_group_rules_dedup.
CREATE UNIQUE INDEX security_group_rules_security_group_id_dedup_key_key
    ON security_group_rules (security_group_id, dedup_key);
CREATE INDEX security_group_rules_remote ON security_group_rules (remote_group_id);
CREATE INDEX security_group_rules_project ON security_group_rules (project_id);

CREATE TABLE port_security_groups (
    port_id           TEXT NOT NULL REFERENCES ports (id) ON DELETE CASCADE,
    security_group_id TEXT NOT NULL REFERENCES security_groups (id),
    PRIMARY KEY (port_id, security_group_id)
);
CREATE INDEX port_security_groups_group ON port_security_groups (security_group_id);

-- Creation order (`seq`) comes from a sequence per table on PostgreSQL
-- (SQLite's single writer takes MAX(seq) + 1): concurrent writers never
-- read each other's uncommitted rows, a sequence never hands a number out twice.
CREATE SEQUENCE security_groups_seq;
CREATE SEQUENCE security_group_rules_seq;
