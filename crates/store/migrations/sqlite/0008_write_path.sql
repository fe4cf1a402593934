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
    ip_key     BLOB NOT NULL,
    allocated  BOOLEAN NOT NULL,
    PRIMARY KEY (subnet_id, generation)
);

-- Same names as before (`neutrino db copy` knows the schema's triggers by
-- name). The subnet may be gone when rows go by ON DELETE CASCADE: then
-- nothing is logged.
DROP TRIGGER ip_allocations_added;
CREATE TRIGGER ip_allocations_added AFTER INSERT ON ip_allocations BEGIN
    UPDATE subnets SET ipam_generation = ipam_generation + 1 WHERE id = NEW.subnet_id;
    INSERT INTO ip_allocation_log (subnet_id, generation, ip_key, allocated)
        SELECT id, ipam_generation, NEW.ip_key, 1 FROM subnets WHERE id = NEW.subnet_id;
    DELETE FROM ip_allocation_log WHERE subnet_id = NEW.subnet_id
        AND generation <= (SELECT ipam_generation FROM subnets WHERE id = NEW.subnet_id) - 1024;
END;
DROP TRIGGER ip_allocations_removed;
CREATE TRIGGER ip_allocations_removed AFTER DELETE ON ip_allocations BEGIN
    UPDATE subnets SET ipam_generation = ipam_generation + 1 WHERE id = OLD.subnet_id;
    INSERT INTO ip_allocation_log (subnet_id, generation, ip_key, allocated)
        SELECT id, ipam_generation, OLD.ip_key, 0 FROM subnets WHERE id = OLD.subnet_id;
    DELETE FROM ip_allocation_log WHERE subnet_id = OLD.subnet_id
        AND generation <= (SELECT ipam_generation FROM subnets WHERE id = OLD.subnet_id) - 1024;
END;
CREATE TRIGGER subnets_removed AFTER DELETE ON subnets BEGIN
    DELETE FROM ip_allocation_log WHERE subnet_id = OLD.id;
END;
