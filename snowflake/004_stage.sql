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
    file_format = (format_name = 'pgcdc.raw.pgcdc_csv')
    comment = 'pgcdc change files, one folder per table: public.ecommerce_sales/dt=YYYY-MM-DD/hour=HH/*.csv.gz';
