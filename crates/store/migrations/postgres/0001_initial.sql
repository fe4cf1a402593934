-- PostgreSQL twin of migrations/sqlite/0001_initial.sql: same tables,
-- columns, types, defaults, keys and indexes. Differences: BLOB is spelled
-- BYTEA; the two SQLite triggers on ip_allocations are PL/pgSQL trigger
-- functions with row-level AFTER triggers of the same names; every UNIQUE
-- constraint and unique index is named `<table>_<columns>_key` (primary keys
-- keep PostgreSQL's `<table>_pkey`), since on PostgreSQL the store tells
-- which constraint a duplicate violated by its name.
--
-- Neutrino's initial schema.
--
-- Portable on purpose: TEXT, BIGINT, BOOLEAN and BLOB (bytea on
-- PostgreSQL) only, so that the PostgreSQL migration is this file with
-- BLOB spelled BYTEA. Lists that are never filtered on are JSON text.
-- Timestamps are ISO 8601 UTC text ('2026-01-02T03:04:05Z'), which sorts
-- correctly as text.

CREATE TABLE meta (
    key   TEXT PRIMARY KEY,
    value TEXT NOT NULL
);

-- ---- identity (the built-in Keystone v3 subset) -------------------------

CREATE TABLE projects (
    id          TEXT PRIMARY KEY,
    name        TEXT NOT NULL,
    domain_id   TEXT NOT NULL,
    description TEXT NOT NULL DEFAULT '',
    enabled     BOOLEAN NOT NULL,
    CONSTRAINT projects_domain_id_name_key UNIQUE (domain_id, name)
);

CREATE TABLE users (
    id                 TEXT PRIMARY KEY,
    name               TEXT NOT NULL,
    domain_id          TEXT NOT NULL,
    password_hash      TEXT,
    enabled            BOOLEAN NOT NULL,
    default_project_id TEXT,
    email              TEXT,
    description        TEXT NOT NULL DEFAULT '',
    CONSTRAINT users_domain_id_name_key UNIQUE (domain_id, name)
);

CREATE TABLE roles (
    id          TEXT PRIMARY KEY,
    name        TEXT NOT NULL CONSTRAINT roles_name_key UNIQUE,
    description TEXT NOT NULL DEFAULT ''
);

CREATE TABLE role_assignments (
    user_id    TEXT NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    project_id TEXT NOT NULL REFERENCES projects (id) ON DELETE CASCADE,
    role_id    TEXT NOT NULL REFERENCES roles (id) ON DELETE CASCADE,
    PRIMARY KEY (user_id, project_id, role_id)
);
CREATE INDEX role_assignments_project ON role_assignments (project_id);

-- Tokens are stored by the SHA-256 of their text, never the text itself.
CREATE TABLE tokens (
    token_hash TEXT PRIMARY KEY,
    user_id    TEXT NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    project_id TEXT NOT NULL REFERENCES projects (id) ON DELETE CASCADE,
    methods    TEXT NOT NULL,
    audit_id   TEXT NOT NULL,
    issued_at  BIGINT NOT NULL,
    expires_at BIGINT NOT NULL
);
CREATE INDEX tokens_expiry ON tokens (expires_at);

-- ---- networking ---------------------------------------------------------

CREATE TABLE networks (
    id                    TEXT PRIMARY KEY,
    -- Creation order, for stable listing.
    seq BIGINT NOT NULL,
    project_id            TEXT NOT NULL,
    name                  TEXT NOT NULL,
    description           TEXT NOT NULL,
    admin_state_up        BOOLEAN NOT NULL,
    status                TEXT NOT NULL,
    mtu                   BIGINT NOT NULL,
    port_security_enabled BOOLEAN NOT NULL,
    az_hints              TEXT NOT NULL,
    tags                  TEXT NOT NULL DEFAULT '[]',
    created_at            TEXT NOT NULL,
    updated_at            TEXT NOT NULL,
    revision_number       BIGINT NOT NULL
);
CREATE INDEX networks_project ON networks (project_id);
-- SQLite: networks_seq.
CREATE UNIQUE INDEX networks_seq_key ON networks (seq);

-- Who besides the owner may use a network: access_as_shared and
-- access_as_external grants to one project or to '*'.
CREATE TABLE network_rbacs (
    id             TEXT PRIMARY KEY,
    network_id     TEXT NOT NULL REFERENCES networks (id) ON DELETE CASCADE,
    project_id     TEXT NOT NULL,
    action         TEXT NOT NULL,
    target_project TEXT NOT NULL,
    CONSTRAINT network_rbacs_network_id_action_target_project_key
        UNIQUE (network_id, action, target_project)
);
CREATE INDEX network_rbacs_target ON network_rbacs (target_project, action);

-- One row per segment. The UNIQUE constraint is what makes a VNI, a VLAN
-- on a physical network, or a flat physical network impossible to hand out
-- twice: physnet_key is '' when there is no physical network and
-- segmentation_key is 0 for flat segments.
CREATE TABLE segments (
    id               TEXT PRIMARY KEY,
    network_id       TEXT NOT NULL REFERENCES networks (id) ON DELETE CASCADE,
    name             TEXT,
    description      TEXT NOT NULL,
    network_type     TEXT NOT NULL,
    physical_network TEXT,
    segmentation_id  BIGINT,
    physnet_key      TEXT NOT NULL,
    segmentation_key BIGINT NOT NULL,
    seq              BIGINT NOT NULL,
    tags             TEXT NOT NULL DEFAULT '[]',
    created_at       TEXT NOT NULL,
    updated_at       TEXT NOT NULL,
    revision_number  BIGINT NOT NULL,
    CONSTRAINT segments_network_type_physnet_key_segmentation_key_key
        UNIQUE (network_type, physnet_key, segmentation_key)
);
CREATE INDEX segments_network ON segments (network_id);

CREATE TABLE subnetpools (
    id                TEXT PRIMARY KEY,
    -- Creation order, for stable listing.
    seq BIGINT NOT NULL,
    project_id        TEXT NOT NULL,
    name              TEXT NOT NULL,
    description       TEXT NOT NULL,
    ip_version        BIGINT NOT NULL,
    prefixes          TEXT NOT NULL,
    default_prefixlen BIGINT NOT NULL,
    min_prefixlen     BIGINT NOT NULL,
    max_prefixlen     BIGINT NOT NULL,
    default_quota     BIGINT,
    is_default        BOOLEAN NOT NULL,
    shared            BOOLEAN NOT NULL,
    tags              TEXT NOT NULL DEFAULT '[]',
    created_at        TEXT NOT NULL,
    updated_at        TEXT NOT NULL,
    revision_number   BIGINT NOT NULL
);
-- SQLite: subnetpools_seq.
CREATE UNIQUE INDEX subnetpools_seq_key ON subnetpools (seq);

CREATE TABLE subnets (
    id                TEXT PRIMARY KEY,
    -- Creation order, for stable listing.
    seq BIGINT NOT NULL,
    project_id        TEXT NOT NULL,
    network_id        TEXT NOT NULL REFERENCES networks (id) ON DELETE CASCADE,
    name              TEXT NOT NULL,
    description       TEXT NOT NULL,
    ip_version        BIGINT NOT NULL,
    cidr              TEXT NOT NULL,
    gateway_ip        TEXT,
    allocation_pools  TEXT NOT NULL,
    dns_nameservers   TEXT NOT NULL,
    host_routes       TEXT NOT NULL,
    enable_dhcp       BOOLEAN NOT NULL,
    ipv6_ra_mode      TEXT,
    ipv6_address_mode TEXT,
    subnetpool_id     TEXT REFERENCES subnetpools (id),
    segment_id        TEXT REFERENCES segments (id),
    service_types     TEXT NOT NULL,
    -- Moved by triggers whenever an address of the subnet is allocated or
    -- released (see ip_allocations).
    ipam_generation   BIGINT NOT NULL,
    tags              TEXT NOT NULL DEFAULT '[]',
    created_at        TEXT NOT NULL,
    updated_at        TEXT NOT NULL,
    revision_number   BIGINT NOT NULL
);
CREATE INDEX subnets_network ON subnets (network_id);
-- SQLite: subnets_seq.
CREATE UNIQUE INDEX subnets_seq_key ON subnets (seq);
CREATE INDEX subnets_pool ON subnets (subnetpool_id);

CREATE TABLE ports (
    id                    TEXT PRIMARY KEY,
    -- Creation order, for stable listing.
    seq BIGINT NOT NULL,
    project_id            TEXT NOT NULL,
    network_id            TEXT NOT NULL REFERENCES networks (id),
    name                  TEXT NOT NULL,
    description           TEXT NOT NULL,
    admin_state_up        BOOLEAN NOT NULL,
    mac_address           TEXT NOT NULL,
    device_id             TEXT NOT NULL,
    device_owner          TEXT NOT NULL,
    status                TEXT NOT NULL,
    port_security_enabled BOOLEAN NOT NULL,
    allowed_address_pairs TEXT NOT NULL,
    extra_dhcp_opts       TEXT NOT NULL,
    binding_host_id       TEXT NOT NULL,
    binding_profile       TEXT NOT NULL,
    binding_vnic_type     TEXT NOT NULL,
    binding_vif_type      TEXT NOT NULL,
    binding_vif_details   TEXT NOT NULL,
    ip_allocation         TEXT NOT NULL,
    tags                  TEXT NOT NULL DEFAULT '[]',
    created_at            TEXT NOT NULL,
    updated_at            TEXT NOT NULL,
    revision_number       BIGINT NOT NULL,
    CONSTRAINT ports_network_id_mac_address_key UNIQUE (network_id, mac_address)
);
-- Lists by network come out in creation order straight from this index.
CREATE INDEX ports_network ON ports (network_id, seq);
-- SQLite: ports_seq.
CREATE UNIQUE INDEX ports_seq_key ON ports (seq);
CREATE INDEX ports_project ON ports (project_id);
CREATE INDEX ports_device ON ports (device_id);

-- The primary key is what makes an address impossible to hand out twice.
-- ip_key is the address as 16 big-endian bytes, so it sorts numerically
-- (bytea compares bytewise, as SQLite's BLOB does).
CREATE TABLE ip_allocations (
    subnet_id  TEXT NOT NULL REFERENCES subnets (id) ON DELETE CASCADE,
    ip_key     BYTEA NOT NULL,
    ip_address TEXT NOT NULL,
    port_id    TEXT NOT NULL REFERENCES ports (id) ON DELETE CASCADE,
    network_id TEXT NOT NULL,
    seq        BIGINT NOT NULL,
    PRIMARY KEY (subnet_id, ip_key)
);
CREATE INDEX ip_allocations_port ON ip_allocations (port_id);
-- Every allocation or release moves its subnet's IPAM generation, so an
-- in-memory copy of the allocations can tell whether it is current.
-- (SQLite's triggers are always FOR EACH ROW; these are too. Rows removed
-- by ON DELETE CASCADE fire them as well, on both databases.)
CREATE FUNCTION ip_allocations_added() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    UPDATE subnets SET ipam_generation = ipam_generation + 1 WHERE id = NEW.subnet_id;
    RETURN NULL;
END;
$$;
CREATE TRIGGER ip_allocations_added AFTER INSERT ON ip_allocations
    FOR EACH ROW EXECUTE FUNCTION ip_allocations_added();
CREATE FUNCTION ip_allocations_removed() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    UPDATE subnets SET ipam_generation = ipam_generation + 1 WHERE id = OLD.subnet_id;
    RETURN NULL;
END;
$$;
CREATE TRIGGER ip_allocations_removed AFTER DELETE ON ip_allocations
    FOR EACH ROW EXECUTE FUNCTION ip_allocations_removed();
CREATE INDEX ip_allocations_network ON ip_allocations (network_id);

CREATE TABLE quotas (
    project_id TEXT NOT NULL,
    resource   TEXT NOT NULL,
    quota      BIGINT NOT NULL,
    PRIMARY KEY (project_id, resource)
);

-- Creation order (`seq`) comes from a sequence per table on PostgreSQL
-- (SQLite's single writer takes MAX(seq) + 1): concurrent writers never
-- read each other's uncommitted rows, a sequence never hands a number out twice.
CREATE SEQUENCE networks_seq;
CREATE SEQUENCE segments_seq;
CREATE SEQUENCE subnetpools_seq;
CREATE SEQUENCE subnets_seq;
CREATE SEQUENCE ports_seq;
