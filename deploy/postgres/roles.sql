-- Least-privilege roles for inboxd (docs/security.md). Run once per cluster as a
-- superuser, then once more per database with the database's name in :db, e.g.
--
--   psql -v db=inboxd -f deploy/postgres/roles.sql postgres
--
-- and give each role a password (ALTER ROLE … PASSWORD '…') or your own auth method.
--   inboxd_owner    owns the database and its tables; `inboxd migrate` runs as it.
--   inboxd_runtime  what `inboxd serve` needs (INBOX_MIGRATE=false): read and write the
--                   tables, nothing else: no CREATE, no DDL, no superuser.
--   inboxd_reader   SELECT only, for INBOX_READ_DATABASE_URL (the /v1 reads).
\set ON_ERROR_STOP on

SELECT 'CREATE ROLE inboxd_owner LOGIN' WHERE NOT EXISTS (SELECT FROM pg_roles WHERE rolname = 'inboxd_owner') \gexec
SELECT 'CREATE ROLE inboxd_runtime LOGIN' WHERE NOT EXISTS (SELECT FROM pg_roles WHERE rolname = 'inboxd_runtime') \gexec
SELECT 'CREATE ROLE inboxd_reader LOGIN' WHERE NOT EXISTS (SELECT FROM pg_roles WHERE rolname = 'inboxd_reader') \gexec

SELECT format('CREATE DATABASE %I OWNER inboxd_owner', :'db')
WHERE NOT EXISTS (SELECT FROM pg_database WHERE datname = :'db') \gexec
SELECT format('REVOKE ALL ON DATABASE %I FROM PUBLIC', :'db') \gexec
SELECT format('GRANT CONNECT, TEMPORARY ON DATABASE %I TO inboxd_runtime, inboxd_reader', :'db') \gexec

\connect :db
-- Only the owner creates anything in the schema.
REVOKE CREATE ON SCHEMA public FROM PUBLIC;
GRANT USAGE ON SCHEMA public TO inboxd_runtime, inboxd_reader;
-- Tables the owner creates later (every migration) are granted as they appear.
ALTER DEFAULT PRIVILEGES FOR ROLE inboxd_owner IN SCHEMA public
    GRANT SELECT, INSERT, UPDATE, DELETE ON TABLES TO inboxd_runtime;
ALTER DEFAULT PRIVILEGES FOR ROLE inboxd_owner IN SCHEMA public
    GRANT USAGE, SELECT ON SEQUENCES TO inboxd_runtime;
ALTER DEFAULT PRIVILEGES FOR ROLE inboxd_owner IN SCHEMA public
    GRANT SELECT ON TABLES TO inboxd_reader;
-- And those that exist already (a database migrated before the roles).
GRANT SELECT, INSERT, UPDATE, DELETE ON ALL TABLES IN SCHEMA public TO inboxd_runtime;
GRANT USAGE, SELECT ON ALL SEQUENCES IN SCHEMA public TO inboxd_runtime;
GRANT SELECT ON ALL TABLES IN SCHEMA public TO inboxd_reader;
