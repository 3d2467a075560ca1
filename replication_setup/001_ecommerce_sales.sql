-- The source table: one row per invoice line, shaped like the UCI "Online Retail" data set the
-- original nightly pipeline extracted (seed-README.md). Idempotent.

create table if not exists ecommerce_sales (
    id            bigint generated always as identity primary key,
    invoice_no    text          not null,  -- six digits; a leading 'C' marks a cancellation
    stock_code    text          not null,  -- e.g. 85123A
    description   text,
    quantity      integer       not null,  -- negative on cancellations
    invoice_date  timestamp     not null,
    unit_price    numeric(10,2) not null,  -- GBP
    customer_id   integer,                 -- null for guest checkouts
    country       text          not null
);

comment on table ecommerce_sales is
    'Invoice lines of a UK online gift retailer; streamed by pgcdc (publication pgcdc_pub).';

create index if not exists ecommerce_sales_invoice_no_idx on ecommerce_sales (invoice_no);
