-- PostgreSQL twin of migrations/sqlite/0006_agent_state.sql. Difference:
-- the partial unique index is named ports_network_id_binding_host_id_key
-- (SQLite: ports_one_dhcp_per_host); nothing else.
--
-- Agent state shared by every server on the database: the hosts agents
-- register, the leases that keep a job (scheduling) on one server at a
-- time, and the rule that a host serves a network's DHCP through one port.

-- One row per host registered over the agent channel.
CREATE TABLE hosts (
    host              TEXT PRIMARY KEY,
    tunnel_ip         TEXT,
    -- {"physnet": "bridge", ...}
    bridge_mappings   TEXT NOT NULL,
    -- ["compute", "dhcp", ...]
    roles             TEXT NOT NULL,
    version           TEXT NOT NULL,
    availability_zone TEXT,
    -- Unix milliseconds.
    registered_at     BIGINT NOT NULL,
    heartbeat_at      BIGINT NOT NULL
);

-- A host's heartbeat moves all its agent records.
CREATE INDEX agents_host ON agents (host);

-- Held by `holder` until `expires_ms` (unix milliseconds).
CREATE TABLE leases (
    name       TEXT PRIMARY KEY,
    holder     TEXT NOT NULL,
    expires_ms BIGINT NOT NULL
);

-- However many servers schedule at once, a host gets one DHCP port per
-- network.
CREATE UNIQUE INDEX ports_network_id_binding_host_id_key ON ports (network_id, binding_host_id)
    WHERE device_owner = 'network:dhcp' AND binding_host_id <> '';
