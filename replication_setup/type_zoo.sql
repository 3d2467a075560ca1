-- The type zoo: one column per PostgreSQL type pgcdc is checked against, filled with edge values,
-- so the warehouse test (tests/warehouse/test_type_zoo.py) can prove that every value survives
-- PostgreSQL -> pgcdc's files -> DuckDB exactly. Not part of the shop schema: scripts/demo.sh runs
-- it only with DEMO_SCENARIO=fixture (it is not numbered, so the replication_setup/[0-9]*.sql
-- loop never picks it up).
--
--   psql -v phase=snapshot -f type_zoo.sql   the type, domain, table and canonical view; the zoo
--                                            rows with ids 1..24; adds the table to pgcdc_pub when
--                                            that publication exists. Run BEFORE pgcdc starts:
--                                            these rows arrive through pgcdc's initial snapshot
--                                            (COPY text format).
--   psql -v phase=stream -f type_zoo.sql     the same rows again with ids 101..124, then updates
--                                            and deletes. Run WHILE pgcdc streams: these arrive
--                                            through pgoutput.
--   psql -f type_zoo.sql                     both (phase=all), for a look by hand.
--
-- Every edge value goes through both paths, the snapshot's COPY parser and the pgoutput decoder.
-- A row's "kind" is id % 100 (row 14 and row 114 hold the same values, until the updates).
--
-- Left out on purpose:
--   * NUL (U+0000) in text: PostgreSQL's text types cannot store it. json keeps "\u0000" as the
--     six characters of its escape (row 12 has one); jsonb rejects it.
--   * multi-dimensional arrays and arrays with explicit lower bounds ('[0:1]={1,2}'): pgcdc
--     writes PostgreSQL's text for them like any array, but they need another DuckDB type
--     (INTEGER[][]) or stay text; the zoo's arrays are one-dimensional.
--   * time zone offsets with seconds in timestamptz: the session runs in UTC, so every
--     timestamptz comes out as +00 (a historic local mean time, row 16, only moves the value).
--     timetz keeps its own offset, seconds included ('12:00:00+05:45:30', row 16).
--   * every other type (range, geometric, bit, xml, tsvector, macaddr, pg_lsn, composite types):
--     written as PostgreSQL's text like everything else, not in this zoo.
-- Values a warehouse cannot hold exactly are kept in the zoo and named in the test and in
-- README.md ("Type mapping"): the largest timestamp, 294276-12-31 23:59:59.999999, is past the end
-- of DuckDB's TIMESTAMP range.

\if :{?phase}
\else
\set phase all
\endif
select :'phase' in ('snapshot', 'all') as zoo_snapshot_phase,
       :'phase' in ('stream', 'all') as zoo_stream_phase,
       :'phase' not in ('snapshot', 'stream', 'all') as zoo_bad_phase
\gset
\if :zoo_bad_phase
\echo 'type_zoo.sql: phase must be snapshot, stream or all, not' :'phase'
\quit
\endif

\if :zoo_snapshot_phase
do $$
begin
    if not exists (select from pg_type where typname = 'mood' and typnamespace = 'public'::regnamespace) then
        create type public.mood as enum ('sad', 'ok', 'happy', 'it''s "complicated", ok');
    end if;
    if not exists (select from pg_type where typname = 'positive_int' and typnamespace = 'public'::regnamespace) then
        create domain public.positive_int as integer check (value > 0);
    end if;
end
$$;

create table if not exists public.type_zoo (
    id              integer primary key,
    label           text,                        -- what the row is about (null in the all-null row)
    c_smallint      smallint,
    c_integer       integer,
    c_bigint        bigint,
    c_numeric       numeric,                     -- unconstrained: NaN, +-Infinity, any length
    c_numeric_12_2  numeric(12,2),
    c_real          real,
    c_double        double precision,
    c_boolean       boolean,
    c_text          text,
    c_varchar       varchar(20),
    c_char          char(5),
    c_bytea         bytea,
    c_date          date,
    c_time          time,
    c_timetz        timetz,
    c_timestamp     timestamp,
    c_timestamptz   timestamptz,
    c_interval      interval,
    c_uuid          uuid,
    c_json          json,
    c_jsonb         jsonb,
    c_int_array     integer[],
    c_text_array    text[],
    c_mood          public.mood,
    c_positive_int  public.positive_int,
    c_inet          inet,
    c_cidr          cidr,
    c_money         money
);

-- Every column in a form that does not depend on how it is printed, for the test to compare
-- against what DuckDB holds (tests/warehouse/test_type_zoo.py renders DuckDB's values the same
-- way). Columns not rewritten here are printed by COPY under pgcdc's session settings.
--   bytea        lower-case hex without \x
--   date         days since 1970-01-01, or infinity / -infinity
--   time         microseconds since midnight
--   timetz       microseconds since midnight (local) and the offset in seconds east of UTC
--   timestamp    microseconds since 1970-01-01 00:00 (wall clock), or infinity / -infinity
--   timestamptz  microseconds since 1970-01-01 00:00 UTC, or infinity / -infinity
--   interval     months, days and microseconds: PostgreSQL's three fields
--   money        a plain decimal
create or replace view public.type_zoo_canonical as
select id, label, c_smallint, c_integer, c_bigint, c_numeric, c_numeric_12_2, c_real, c_double,
       c_boolean, c_text, c_varchar, c_char,
       encode(c_bytea, 'hex') as c_bytea,
       case when isfinite(c_date) then (c_date - date '1970-01-01')::text else c_date::text end as c_date,
       (extract(epoch from c_time) * 1000000)::bigint::text as c_time,
       (extract(epoch from c_timetz::time) * 1000000)::bigint::text || ' '
           || extract(timezone from c_timetz)::bigint::text as c_timetz,
       case when isfinite(c_timestamp) then (extract(epoch from c_timestamp) * 1000000)::numeric(30, 0)::text
            else c_timestamp::text end as c_timestamp,
       case when isfinite(c_timestamptz) then (extract(epoch from c_timestamptz) * 1000000)::numeric(30, 0)::text
            else c_timestamptz::text end as c_timestamptz,
       (extract(year from c_interval) * 12 + extract(month from c_interval))::bigint::text || ' '
           || extract(day from c_interval)::bigint::text || ' '
           || (extract(hour from c_interval) * 3600000000 + extract(minute from c_interval) * 60000000
               + extract(microseconds from c_interval))::numeric(30, 0)::text as c_interval,
       c_uuid, c_json, c_jsonb, c_int_array, c_text_array, c_mood, c_positive_int, c_inet, c_cidr,
       c_money::numeric::text as c_money
from public.type_zoo;

-- Captured by pgcdc: in its publication (when there is one) like ecommerce_sales (002).
do $$
begin
    if exists (select from pg_publication where pubname = 'pgcdc_pub')
       and not exists (select from pg_publication_tables
                       where pubname = 'pgcdc_pub' and schemaname = 'public' and tablename = 'type_zoo') then
        alter publication pgcdc_pub add table public.type_zoo;
    end if;
end
$$;
\set base 0
\ir type_zoo_rows.sql
\endif

\if :zoo_stream_phase
\set base 100
\ir type_zoo_rows.sql

-- Updates and deletes, each its own transaction.
-- An update that leaves the 1 MB text alone: pgoutput does not send the unchanged TOASTed value,
-- pgcdc lists it in _unchanged, and the warehouse must keep the previous value.
update public.type_zoo set c_integer = c_integer + 1, c_json = '{"updated": true}' where id in (14, 114);
-- Values become NULL and NULL becomes values; '' becomes NULL (and must not stay '').
update public.type_zoo
set c_text = null, c_bytea = null, c_text_array = '{NULL,""}', c_numeric = 'NaN',
    c_timestamptz = '2038-01-19 03:14:08+00', c_interval = '-1 mons +1 days'
where id in (2, 102);
update public.type_zoo
set label = 'all null, then one value', c_double = '-0', c_date = '-infinity'
where id = 101;
-- Arithmetic on the server, so the new values are not literals.
update public.type_zoo
set c_timestamptz = c_timestamptz + interval '1 microsecond', c_interval = -c_interval,
    c_time = c_time - interval '1 microsecond'
where id in (16, 116);
delete from public.type_zoo where id in (22, 122);
\endif
