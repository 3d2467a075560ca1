-- pgcdc on Snowflake, step 3 of 7: the file format of pgcdc's change files (README.md of the
-- repository, "The file format"): gzip CSV, RFC 4180 quoting, one header line, UTF-8, NULL as
-- an unquoted empty field and the empty string as "". Run as LOADER.
--
-- Why each option (the Snowflake default is not always what pgcdc needs):
--   parse_header = true
--       Column names come from each file's header, so loads match columns by name
--       (MATCH_BY_COLUMN_NAME in 006/007): a column added to or dropped from the source table
--       changes the header of later files and the load still works. PARSE_HEADER and SKIP_HEADER
--       are mutually exclusive: the header is consumed by PARSE_HEADER, do not add SKIP_HEADER.
--   field_optionally_enclosed_by = '"'
--       pgcdc quotes a field that is empty or holds a comma, a quote, CR or LF, doubling quotes
--       inside (RFC 4180). Default NONE would load the quotes as data.
--   empty_field_as_null = true, null_if = ()
--       An empty field between two delimiters (,,) is SQL NULL; an enclosed empty field ("") is
--       not an empty field, so it loads as the empty string. NULL_IF must stay empty: its default
--       ('\\N') would turn a real value \N into NULL, and NULL_IF = ('') would also match a
--       quoted "", erasing the difference between NULL and ''.
--   escape_unenclosed_field = none, escape = none
--       pgcdc writes PostgreSQL's text output byte for byte, so a backslash is data. The default
--       ESCAPE_UNENCLOSED_FIELD ('\\') would read \t or \N in an unquoted field as escapes.
--   trim_space = false
--       Leading and trailing spaces are data ('SET/2 RED RETROSPOT TEA TOWELS ').
--   multi_line = true
--       A quoted field may contain line breaks.
--   error_on_column_count_mismatch = false
--       Required for loading CSV with INCLUDE_METADATA and for schema evolution; with
--       MATCH_BY_COLUMN_NAME every row still lands in the column its header names.
--   compression = auto
--       Detects gzip from the .gz suffix, so pgcdc's batch.format = "csv" loads too.
--   timestamp_format = auto
--       _commit_ts is ISO 8601 with a Z (2024-03-05T17:05:00.123456Z), timestamp columns are
--       PostgreSQL's text output (2010-12-01 08:26:00); AUTO reads both.
--
-- IF NOT EXISTS: to change an option later use ALTER FILE FORMAT ... SET, which keeps the
-- stage's and the pipe's reference to it.

use role loader;

create file format if not exists pgcdc.raw.pgcdc_csv
    type = csv
    compression = auto
    field_delimiter = ','
    record_delimiter = '\n'
    parse_header = true
    field_optionally_enclosed_by = '"'
    escape = none
    escape_unenclosed_field = none
    null_if = ()
    empty_field_as_null = true
    trim_space = false
    multi_line = true
    error_on_column_count_mismatch = false
    timestamp_format = auto
    encoding = 'UTF8'
    comment = 'pgcdc change files: gzip CSV with a header, RFC 4180 quoting, NULL = unquoted empty field, '''' = ""';

-- pgcdc's checkpoint (_pgcdc/SLOT/checkpoint.json), read in place by dbt
-- (int_pgcdc__completeness): everything at or before its commit_lsn is durable in the stage.
create file format if not exists pgcdc.raw.pgcdc_json
    type = json
    compression = auto
    comment = 'pgcdc checkpoint.json';
