-- The role pgcdc connects as, with only what it needs: LOGIN and REPLICATION (to create its slot
-- and stream), CONNECT on this database, USAGE on the schema and SELECT on the captured tables
-- (for the initial snapshot). No superuser, no ownership, no write access. Run as a superuser
-- (REPLICATION can only be granted by one) in the database pgcdc captures, after 001 and 002:
--
--   psql -v ON_ERROR_STOP=1 -v pgcdc_password="$PGCDC_PASSWORD" -d shop -f replication_setup/003_role.sql
--
-- Without pgcdc_password the role is created (or kept) without touching its password; set it
-- later interactively with `\password pgcdc`, which keeps it out of shell history and `ps`.
-- Idempotent: running it again changes nothing (and sets the password again if one is given).
--
-- The role also needs a pg_hba.conf line for replication connections, e.g.
--   hostssl replication pgcdc 10.0.0.0/8 scram-sha-256
--   hostssl shop        pgcdc 10.0.0.0/8 scram-sha-256
-- (pgcdc opens a `replication=database` connection, which pg_hba.conf matches on the database
-- name `replication`, and an ordinary one for the snapshot and checks.)
-- Capturing another table: add it to the publication (002) and grant SELECT on it here.

do $$
begin
    if not exists (select from pg_roles where rolname = 'pgcdc') then
        create role pgcdc login replication;
    end if;
    -- Least privilege, also for a role that existed before with more.
    alter role pgcdc with login replication nosuperuser nocreatedb nocreaterole nobypassrls;
    execute format('grant connect on database %I to pgcdc', current_database());
end
$$;

\if :{?pgcdc_password}
alter role pgcdc password :'pgcdc_password';
\endif

grant usage on schema public to pgcdc;
grant select on table public.ecommerce_sales to pgcdc;
