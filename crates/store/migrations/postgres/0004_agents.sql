-- PostgreSQL twin of migrations/sqlite/0004_agents.sql. Difference: the
-- UNIQUE constraint is named agents_agent_type_host_key; nothing else.
--
-- Agents (one per host and agent type) and what is scheduled to them.

CREATE TABLE agents (
    id                TEXT PRIMARY KEY,
    agent_type        TEXT NOT NULL,
    binary_name       TEXT NOT NULL,
    topic             TEXT NOT NULL,
    host              TEXT NOT NULL,
    admin_state_up    BOOLEAN NOT NULL,
    description       TEXT,
    availability_zone TEXT,
    configurations    TEXT NOT NULL,
    resources_synced  BOOLEAN,
    -- Agent timestamps, as Neutron prints them ('YYYY-MM-DD HH:MM:SS').
    created_at        TEXT NOT NULL,
    started_at        TEXT NOT NULL,
    heartbeat_at      TEXT NOT NULL,
    CONSTRAINT agents_agent_type_host_key UNIQUE (agent_type, host)
);

CREATE TABLE network_dhcp_agents (
    network_id TEXT NOT NULL REFERENCES networks (id) ON DELETE CASCADE,
    agent_id   TEXT NOT NULL REFERENCES agents (id) ON DELETE CASCADE,
    PRIMARY KEY (network_id, agent_id)
);
CREATE INDEX network_dhcp_agents_agent ON network_dhcp_agents (agent_id);

CREATE TABLE router_l3_agents (
    router_id TEXT NOT NULL REFERENCES routers (id) ON DELETE CASCADE,
    agent_id  TEXT NOT NULL REFERENCES agents (id) ON DELETE CASCADE,
    PRIMARY KEY (router_id, agent_id)
);
CREATE INDEX router_l3_agents_agent ON router_l3_agents (agent_id);
