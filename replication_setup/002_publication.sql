-- The publication pgcdc subscribes to (its slot uses pgoutput with publication_names =
-- 'pgcdc_pub'). Idempotent: CREATE PUBLICATION has no IF NOT EXISTS.
--
-- The primary key is the replica identity, so deletes carry `id`; updates and deletes of a table
-- without one would fail once it is published.

do $$
begin
    if not exists (select 1 from pg_publication where pubname = 'pgcdc_pub') then
        create publication pgcdc_pub for table ecommerce_sales;
    elsif not exists (
        select 1 from pg_publication_tables
        where pubname = 'pgcdc_pub' and schemaname = 'public' and tablename = 'ecommerce_sales'
    ) then
        alter publication pgcdc_pub add table ecommerce_sales;
    end if;
end
$$;
