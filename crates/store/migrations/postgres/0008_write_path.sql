-- PostgreSQL twin of migrations/sqlite/0008_write_path.sql, and the commit
-- announcement (which SQLite needs not: its stores of one file share a
-- process).
--
-- The IPAM change log: what moved each subnet's ipam_generation, one row per
-- generation. A server whose in-memory copy of a subnet's allocations is a
-- few generations behind (another server allocated meanwhile) reads the
-- rows after its generation instead of every allocation of the subnet.
-- Only the last 1024 generations of a subnet are kept; a copy further
-- behind, or one that finds a gap, reloads the subnet whole, as before.
-- The log is derived data: `neutrino db copy` does not copy it and leaves
-- it empty in the target.
CREATE TABLE ip_allocation_log (
    subnet_id  TEXT NOT NULL,
    generation BIGINT NOT NULL,
    ip_key     BYTEA NOT NULL,
    allocated  BOOLEAN NOT NULL,
    PRIMARY KEY (subnet_id, generation)
);

-- One function for both directions; the triggers keep their names
-- (`neutrino db copy` knows the schema's triggers by name). The subnet may
-- be gone when rows go by ON DELETE CASCADE: then nothing is logged.
CREATE FUNCTION ip_allocations_changed() RETURNS trigger
LANGUAGE plpgsql AS $$
DECLARE
    row ip_allocations;
    g BIGINT;
BEGIN
    IF TG_OP = 'INSERT' THEN
        row := NEW;
    ELSE
        row := OLD;
    END IF;
    UPDATE subnets SET ipam_generation = ipam_generation + 1 WHERE id = row.subnet_id
        RETURNING ipam_generation INTO g;
    IF FOUND THEN
        INSERT INTO ip_allocation_log (subnet_id, generation, ip_key, allocated)
            VALUES (row.subnet_id, g, row.ip_key, TG_OP = 'INSERT');
        DELETE FROM ip_allocation_log WHERE subnet_id = row.subnet_id AND generation <= g - 1024;
    END IF;
    RETURN NULL;
END;
$$;
DROP TRIGGER ip_allocations_added ON ip_allocations;
DROP TRIGGER ip_allocations_removed ON ip_allocations;
DROP FUNCTION ip_allocations_added();
DROP FUNCTION ip_allocations_removed();
CREATE TRIGGER ip_allocations_added AFTER INSERT ON ip_allocations
    FOR EACH ROW EXECUTE FUNCTION ip_allocations_changed();
CREATE TRIGGER ip_allocations_removed AFTER DELETE ON ip_allocations
    FOR EACH ROW EXECUTE FUNCTION ip_allocations_changed();
CREATE FUNCTION subnets_removed() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    DELETE FROM ip_allocation_log WHERE subnet_id = OLD.id;
    RETURN NULL;
END;
$$;
CREATE TRIGGER subnets_removed AFTER DELETE ON subnets
    FOR EACH ROW EXECUTE FUNCTION subnets_removed();

-- Every write transaction that records changes moves the feed's head once;
-- the move tells every server's listener (delivered at commit, in commit
-- order). A trigger rather than a statement of its own: one round trip
-- fewer while the write lock is held.
CREATE FUNCTION feed_head_announce() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    PERFORM pg_notify('neutrino_feed', NEW.revision::text);
    RETURN NULL;
END;
$$;
CREATE TRIGGER feed_head_announce AFTER UPDATE OF revision ON feed_head
    FOR EACH ROW EXECUTE FUNCTION feed_head_announce();
