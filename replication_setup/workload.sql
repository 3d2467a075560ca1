-- A live-shop workload on ecommerce_sales for demos and soak runs while pgcdc streams:
-- :txns transactions (default 50), each picked at random:
--   45%  a new invoice of 1-6 lines                        (one INSERT of several rows)
--   20%  quantity/price corrections on 1-3 lines            (UPDATE)
--    8%  a price change of one product on all its lines     (UPDATE of many rows)
--   10%  lines removed                                      (DELETE)
--    7%  a correction: update one line, delete another      (UPDATE + DELETE, one transaction)
--    5%  a cancellation of a recent invoice                 (INSERT of 'C' lines, quantity < 0)
--    5%  descriptions set to NULL, to '' or to text with quotes, commas and a line break
--
--   psql -v txns=200 -f replication_setup/workload.sql
--
-- Each generated statement runs through \gexec as its own transaction (a statement string with
-- several commands is one implicit transaction).

\if :{?txns}
\else
\set txns 50
\endif

select case
    when r < 0.45 then format($w$
        insert into ecommerce_sales
            (invoice_no, stock_code, description, quantity, invoice_date, unit_price, customer_id, country)
        select inv.no, p.stock_code, p.description, 1 + floor(random() * 12)::int,
               localtimestamp(0), p.unit_price, inv.customer_id, inv.country
        from (select (select coalesce(max(ltrim(invoice_no, 'C')::int), 536364) + 1
                      from ecommerce_sales)::text as no,
                     c.customer_id, c.country
              from (select customer_id, country from ecommerce_sales
                    order by random() limit 1) as c) as inv
        cross join (select stock_code, description, unit_price
                    from (select distinct on (stock_code) stock_code, description, unit_price
                          from ecommerce_sales where quantity > 0
                          order by stock_code, id) as s
                    order by random() limit %s) as p
        $w$, 1 + floor(random() * 6)::int)
    when r < 0.65 then format($w$
        update ecommerce_sales
        set quantity = case when quantity < 0 then quantity - 1 else quantity + 1 end,
            unit_price = greatest(unit_price + (random() * 0.4 - 0.2)::numeric(10,2), 0.29)
        where id in (select id from ecommerce_sales order by random() limit %s)
        $w$, 1 + floor(random() * 3)::int)
    when r < 0.73 then $w$
        update ecommerce_sales set unit_price = unit_price + 0.10
        where stock_code = (select stock_code from ecommerce_sales order by random() limit 1)
        $w$
    when r < 0.83 then format($w$
        delete from ecommerce_sales
        where id in (select id from ecommerce_sales order by random() limit %s)
        $w$, 1 + floor(random() * 2)::int)
    when r < 0.90 then $w$
        update ecommerce_sales set quantity = quantity * 2
        where id = (select id from ecommerce_sales order by random() limit 1);
        delete from ecommerce_sales
        where id = (select id from ecommerce_sales order by random() limit 1)
        $w$
    when r < 0.95 then $w$
        insert into ecommerce_sales
            (invoice_no, stock_code, description, quantity, invoice_date, unit_price, customer_id, country)
        select 'C' || invoice_no, stock_code, description, -quantity, localtimestamp(0),
               unit_price, customer_id, country
        from ecommerce_sales
        where invoice_no = (select invoice_no from ecommerce_sales
                            where invoice_no not like 'C%' order by id desc limit 1)
        $w$
    else format($w$
        update ecommerce_sales set description = %s
        where id = (select id from ecommerce_sales order by random() limit 1)
        $w$, (array['null', $q$''$q$, $q$E'GIFT WRAP, "DELUXE"\nwith card'$q$])[1 + floor(random() * 3)::int])
    end
from (select random() as r from generate_series(1, :txns)) as t
\gexec
