-- Server settings pgcdc needs, for a self-managed PostgreSQL (13 or later). Run as a superuser
-- (or a role granted ALTER SYSTEM) in any database:
--
--   psql -v ON_ERROR_STOP=1 -f replication_setup/000_server_settings.sql
--
-- Each setting is only ever raised, never lowered, and left alone when it is already good
-- enough, so running the file again changes nothing. ALTER SYSTEM writes postgresql.auto.conf.
--
-- wal_level, max_replication_slots and max_wal_senders take effect only after a RESTART of the
-- server; the file ends by naming the settings still waiting for one. max_slot_wal_keep_size
-- takes effect at once (reload).
--
-- Managed services refuse ALTER SYSTEM; set the same through their own switch instead:
-- Amazon RDS / Aurora: rds.logical_replication = 1 in the parameter group; Cloud SQL:
-- cloudsql.logical_decoding = on; Azure Database for PostgreSQL: wal_level = logical in the
-- server parameters.
--
-- (ALTER SYSTEM cannot run inside a transaction or a DO block, hence psql's \if for the guards.)

-- wal_level = logical: pgoutput decodes the WAL into row changes only at this level.
select current_setting('wal_level') <> 'logical' as pgcdc_set_wal_level \gset
\if :pgcdc_set_wal_level
alter system set wal_level = logical;
\endif

-- One slot per pgcdc process (one per publication), plus headroom for other consumers, for
-- physical replicas and for a slot recreated while an old one still exists.
select current_setting('max_replication_slots')::int < 10 as pgcdc_set_slots \gset
\if :pgcdc_set_slots
alter system set max_replication_slots = 10;
\endif

-- One WAL sender per streaming connection: each pgcdc, each physical replica, pg_basebackup.
select current_setting('max_wal_senders')::int < 10 as pgcdc_set_senders \gset
\if :pgcdc_set_senders
alter system set max_wal_senders = 10;
\endif

-- How much WAL a slot may hold back. A replication slot keeps every WAL segment its consumer
-- has not confirmed; by default (-1) without limit. If pgcdc stops for long (or its S3 is
-- unreachable: it then acknowledges nothing), WAL piles up until the disk is full and the
-- primary stops: the whole database pays for a stalled sidecar.
--
-- With a limit, PostgreSQL protects itself instead: beyond it the slot is invalidated
-- (pg_replication_slots.wal_status = 'lost'), the database stays up, and pgcdc refuses to
-- resume (the changes in between are gone) and says how to start over with a new snapshot
-- (`pgcdc slot reset`). Size it to ride out the longest pgcdc or S3 outage you expect (peak WAL
-- rate x outage; e.g. 50 GB holds ~14 h at 1 MB/s) and keep it well below the free disk space.
-- Watch pgcdc's retained-WAL metric or pg_replication_slots.safe_wal_size long before the limit.
-- Set only while it is unlimited: a limit chosen by the operator stays as it is.
select current_setting('max_slot_wal_keep_size') = '-1' as pgcdc_set_keep_size \gset
\if :pgcdc_set_keep_size
alter system set max_slot_wal_keep_size = '50GB';
\endif

select pg_reload_conf() as pgcdc_reloaded \gset

-- The settings above that wait for a restart (empty: nothing to do).
select string_agg(name, ', ' order by name) as pgcdc_pending_restart
from pg_settings
where pending_restart
  and name in ('wal_level', 'max_replication_slots', 'max_wal_senders', 'max_slot_wal_keep_size')
\gset
\if :{?pgcdc_pending_restart}
\echo 'pgcdc: restart PostgreSQL to apply' :pgcdc_pending_restart
\endif
