-- The awkward changes a warehouse must get right, run by scripts/demo.sh with
-- DEMO_SCENARIO=fixture while pgcdc streams (the files it produces feed the warehouse tests):
--   a TRUNCATE (everything older is gone), a reload after it, a key-changing UPDATE,
--   and an UPDATE that leaves a TOASTed description unchanged (pgcdc lists it in _unchanged).

truncate ecommerce_sales;

\if :{?rows}
\else
\set rows 500
\endif
\ir sample_data.sql

-- A 100 kB description, random enough to be stored out of line (TOAST), then an update that
-- does not touch it: pgoutput does not send the unchanged value, and the warehouse must keep it.
insert into ecommerce_sales
    (invoice_no, stock_code, description, quantity, invoice_date, unit_price, customer_id, country)
select '581588', '23843', string_agg(md5(g::text), '' order by g), 3,
       timestamp '2011-12-09 12:50:00', 2.08, 12680, 'France'
from generate_series(1, 3200) g;
update ecommerce_sales set quantity = quantity + 1 where invoice_no = '581588';

-- A key change: the warehouse must not keep the old key alive.
update ecommerce_sales set id = default
where id = (select min(id) from ecommerce_sales);
