-- pgcdc on Snowflake, step 4 of 7: the external stage over pgcdc's prefix. Run as LOADER (it
-- holds USAGE on the integration, 002).
--
-- The stage spans the whole prefix; each pipe or task reads one table's folder below it
-- (@pgcdc.raw.pgcdc_stage/public.ecommerce_sales/) and never the bookkeeping under _pgcdc/.
--   list @pgcdc.raw.pgcdc_stage/public.ecommerce_sales/;     -- proves the AWS link works
--
-- Placeholders <bucket> and <prefix>: see 002 and README.md.

use role loader;

create stage if not exists pgcdc.raw.pgcdc_stage
    url = 's3://<bucket>/<prefix>/'
    storage_integration = pgcdc_s3
    directory = (enable = true, auto_refresh = true)
    file_format = (format_name = 'pgcdc.raw.pgcdc_csv')
    comment = 'pgcdc change files, one folder per table: public.ecommerce_sales/dt=YYYY-MM-DD/hour=HH/*.csv.gz';

-- dbt (role TRANSFORMER) compares the stage with RAW: the directory table lists the stage's
-- files (kept current by the same S3 event notifications as the pipe: AUTO_REFRESH), and the
-- checkpoint is read in place with the JSON format (int_pgcdc__files, int_pgcdc__completeness).
grant usage on stage pgcdc.raw.pgcdc_stage to role transformer;
grant usage on file format pgcdc.raw.pgcdc_json to role transformer;
