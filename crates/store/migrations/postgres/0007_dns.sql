-- PostgreSQL twin of migrations/sqlite/0007_dns.sql; identical.
--
-- Internal DNS (the dns-integration and dns-domain-ports extensions): a
-- port's dns_name and dns_domain, a network's dns_domain. The API checks and
-- lower-cases them; '' means not set, which is what existing rows get.

ALTER TABLE ports ADD COLUMN dns_name TEXT NOT NULL DEFAULT '';
ALTER TABLE ports ADD COLUMN dns_domain TEXT NOT NULL DEFAULT '';
ALTER TABLE networks ADD COLUMN dns_domain TEXT NOT NULL DEFAULT '';
