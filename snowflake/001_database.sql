-- pgcdc on Snowflake, step 1 of 7: the database, its schemas, the warehouses, three roles and
-- their grants. Run as ACCOUNTADMIN (the script switches to the narrower system roles itself);
-- every statement is idempotent, so running the file again changes nothing.
--
--   PGCDC.RAW     the change rows exactly as pgcdc wrote them (filled by the pipe or the task)
--   PGCDC.DEV     what dbt builds (invoices, products, ...)
--   LOADER        owns and runs the loading objects in RAW (file format, stage, table, pipe, task)
--   TRANSFORMER   dbt: reads RAW, builds in DEV (and in schemas it creates itself)
--   READER        analysts and dashboards: read DEV
--   LOADING       XSMALL warehouse for the scheduled COPY (007); Snowpipe needs none
--   TRANSFORMING  XSMALL warehouse for dbt
--
-- Names are fixed on purpose: dbt/profiles.yml and the later scripts use them. Users are
-- account-specific: grant the roles at the end of this file.

use role sysadmin;

create database if not exists pgcdc
    comment = 'pgcdc: PostgreSQL change stream (RAW) and the models dbt builds from it';
create schema if not exists pgcdc.raw
    comment = 'Change rows loaded from pgcdc''s CSV files; append-only, one table per source table';
create schema if not exists pgcdc.dev
    comment = 'dbt models built from RAW';

-- XSMALL is plenty: a COPY of a few 60-second files or a dbt run over the change stream. Both
-- suspend after a minute idle and start on the next query, so an idle pipeline costs nothing.
create warehouse if not exists loading
    with warehouse_size = xsmall
    auto_suspend = 60
    auto_resume = true
    initially_suspended = true
    comment = 'pgcdc: scheduled COPY INTO RAW (snowflake/007_task.sql)';
create warehouse if not exists transforming
    with warehouse_size = xsmall
    auto_suspend = 60
    auto_resume = true
    initially_suspended = true
    comment = 'pgcdc: dbt runs';

use role useradmin;

create role if not exists loader comment = 'pgcdc: owns and runs the loading objects in PGCDC.RAW';
create role if not exists transformer comment = 'pgcdc: dbt; reads PGCDC.RAW, builds in PGCDC.DEV';
create role if not exists reader comment = 'pgcdc: reads the models in PGCDC.DEV';

use role securityadmin;

-- Custom roles belong under SYSADMIN, so administrators can manage what they own.
grant role loader to role sysadmin;
grant role transformer to role sysadmin;
grant role reader to role sysadmin;

-- LOADER creates the RAW objects in 003-007 and so owns them: the pipe and the task run with
-- their owner's privileges, and schema evolution (005) needs the table's owner.
grant usage on database pgcdc to role loader;
grant usage on schema pgcdc.raw to role loader;
grant create file format, create stage, create table, create pipe, create task
    on schema pgcdc.raw to role loader;
grant usage, operate on warehouse loading to role loader;

-- TRANSFORMER reads every RAW table, present and future, and builds in DEV. CREATE SCHEMA lets
-- dbt make the schema a profile names (e.g. a per-developer or CI schema).
grant usage on database pgcdc to role transformer;
grant create schema on database pgcdc to role transformer;
grant usage on schema pgcdc.raw to role transformer;
grant select on all tables in schema pgcdc.raw to role transformer;
grant select on future tables in schema pgcdc.raw to role transformer;
grant usage, create table, create view on schema pgcdc.dev to role transformer;
grant usage on warehouse transforming to role transformer;

-- READER sees what dbt builds in DEV, never RAW.
grant usage on database pgcdc to role reader;
grant usage on schema pgcdc.dev to role reader;
grant select on all tables in schema pgcdc.dev to role reader;
grant select on future tables in schema pgcdc.dev to role reader;
grant select on all views in schema pgcdc.dev to role reader;
grant select on future views in schema pgcdc.dev to role reader;
grant usage on warehouse transforming to role reader;

-- Who gets which role is up to you, e.g.:
--   grant role transformer to user <dbt_user>;
--   grant role reader to user <analyst_user>;
--   grant role loader to user <admin_user>;        -- to run 003-007 and operate the pipe
