-- PostgreSQL twin of migrations/sqlite/0003_l3.sql. Differences: UNIQUE
-- constraints and unique indexes are named `<table>_<columns>_key`, except
-- two whose column lists would pass PostgreSQL's 63-byte limit on names:
-- floatingips_association_key and port_forwardings_internal_key.
--
-- Routers, floating IPs and port forwardings.
--
-- Router interfaces and gateways are ports (device_owner
-- network:router_interface / network:router_gateway, device_id = router);
-- a floating IP's address lives on a port of the external network
-- (device_owner network:floatingip, device_id = floating IP).

CREATE TABLE routers (
    id              TEXT PRIMARY KEY,
    seq             BIGINT NOT NULL,
    project_id      TEXT NOT NULL,
    name            TEXT NOT NULL,
    description     TEXT NOT NULL,
    admin_state_up  BOOLEAN NOT NULL,
    status          TEXT NOT NULL,
    ha              BOOLEAN NOT NULL,
    distributed     BOOLEAN NOT NULL,
    -- The external gateway: network, its port, and whether to SNAT.
    gw_network_id   TEXT REFERENCES networks (id),
    gw_port_id      TEXT REFERENCES ports (id),
    enable_snat     BOOLEAN NOT NULL,
    -- Extra routes: [{"destination": CIDR, "nexthop": IP}, ...]
    routes          TEXT NOT NULL DEFAULT '[]',
    az_hints        TEXT NOT NULL DEFAULT '[]',
    tags            TEXT NOT NULL DEFAULT '[]',
    created_at      TEXT NOT NULL,
    updated_at      TEXT NOT NULL,
    revision_number BIGINT NOT NULL
);
-- SQLite: routers_seq.
CREATE UNIQUE INDEX routers_seq_key ON routers (seq);
CREATE INDEX routers_project ON routers (project_id);
CREATE INDEX routers_gw_network ON routers (gw_network_id);

CREATE TABLE floatingips (
    id                  TEXT PRIMARY KEY,
    seq                 BIGINT NOT NULL,
    project_id          TEXT NOT NULL,
    floating_network_id TEXT NOT NULL REFERENCES networks (id),
    floating_port_id    TEXT NOT NULL REFERENCES ports (id),
    floating_ip_address TEXT NOT NULL,
    -- The association: internal port and address, and the router serving
    -- it (also set, without a port, while port forwardings exist).
    fixed_port_id       TEXT REFERENCES ports (id),
    fixed_ip_address    TEXT,
    router_id           TEXT REFERENCES routers (id),
    status              TEXT NOT NULL,
    description         TEXT NOT NULL,
    tags                TEXT NOT NULL DEFAULT '[]',
    created_at          TEXT NOT NULL,
    updated_at          TEXT NOT NULL,
    revision_number     BIGINT NOT NULL
);
-- SQLite: floatingips_seq.
CREATE UNIQUE INDEX floatingips_seq_key ON floatingips (seq);
CREATE INDEX floatingips_project ON floatingips (project_id);
CREATE INDEX floatingips_fixed_port ON floatingips (fixed_port_id);
CREATE INDEX floatingips_router ON floatingips (router_id);
CREATE INDEX floatingips_network ON floatingips (floating_network_id);
-- One floating IP per (external network, internal address); unassociated
-- rows have NULLs, which never collide (PostgreSQL's default NULLS
-- DISTINCT, as in SQLite). SQLite: floatingips_association; the
-- `<table>_<columns>_key` name would be 66 bytes, past PostgreSQL's 63.
CREATE UNIQUE INDEX floatingips_association_key
    ON floatingips (floating_network_id, fixed_port_id, fixed_ip_address);

CREATE TABLE port_forwardings (
    id                  TEXT PRIMARY KEY,
    seq                 BIGINT NOT NULL,
    floatingip_id       TEXT NOT NULL REFERENCES floatingips (id) ON DELETE CASCADE,
    internal_port_id    TEXT NOT NULL REFERENCES ports (id),
    internal_ip_address TEXT NOT NULL,
    -- Port ranges, both ends included (a single port: start = end).
    internal_port       BIGINT NOT NULL,
    internal_port_end   BIGINT NOT NULL,
    external_port       BIGINT NOT NULL,
    external_port_end   BIGINT NOT NULL,
    protocol            TEXT NOT NULL,
    description         TEXT NOT NULL,
    CONSTRAINT port_forwardings_floatingip_id_external_port_protocol_key
        UNIQUE (floatingip_id, external_port, protocol),
    -- The `<table>_<columns>_key` name would be 80 bytes, past the limit.
    CONSTRAINT port_forwardings_internal_key
        UNIQUE (internal_port_id, internal_ip_address, internal_port, protocol)
);
-- SQLite: port_forwardings_seq.
CREATE UNIQUE INDEX port_forwardings_seq_key ON port_forwardings (seq);
CREATE INDEX port_forwardings_internal ON port_forwardings (internal_port_id);

-- Creation order (`seq`) comes from a sequence per table on PostgreSQL
-- (SQLite's single writer takes MAX(seq) + 1): concurrent writers never
-- read each other's uncommitted rows, a sequence never hands a number out twice.
CREATE SEQUENCE routers_seq;
CREATE SEQUENCE floatingips_seq;
CREATE SEQUENCE port_forwardings_seq;
