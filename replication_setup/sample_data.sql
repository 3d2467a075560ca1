-- Sample rows for ecommerce_sales, shaped like the UCI "Online Retail" data set: a UK online gift
-- retailer, invoices from 2010-12-01 to 2011-12-09 of several lines each, about 2% cancellations
-- ('C' invoice numbers, negative quantities), about 20% lines without a customer id, 38
-- countries with the United Kingdom far ahead, real stock codes, descriptions and prices.
--
--   psql -v rows=2000 -f replication_setup/sample_data.sql      (default: 2000 rows)
--
-- Deterministic: the "random" choices come from md5 of the row number, not random(), so the same
-- :rows always inserts the same rows in the same order (ids follow the row number). Run it on an
-- empty table: a second run appends the same invoices again.

\if :{?rows}
\else
\set rows 2000
\endif

with
-- ~45 products: (stock_code, description, unit_price in GBP).
products (k, stock_code, description, unit_price) as (
    select row_number() over () - 1, p.* from (values
        ('85123A', 'WHITE HANGING HEART T-LIGHT HOLDER', 2.55),
        ('71053',  'WHITE METAL LANTERN', 3.39),
        ('84406B', 'CREAM CUPID HEARTS COAT HANGER', 2.75),
        ('84029G', 'KNITTED UNION FLAG HOT WATER BOTTLE', 3.39),
        ('84029E', 'RED WOOLLY HOTTIE WHITE HEART.', 3.39),
        ('22752',  'SET 7 BABUSHKA NESTING BOXES', 7.65),
        ('21730',  'GLASS STAR FROSTED T-LIGHT HOLDER', 4.25),
        ('22633',  'HAND WARMER UNION JACK', 1.85),
        ('22632',  'HAND WARMER RED POLKA DOT', 1.85),
        ('84879',  'ASSORTED COLOUR BIRD ORNAMENT', 1.69),
        ('22745',  'POPPY''S PLAYHOUSE BEDROOM ', 2.10),
        ('22748',  'POPPY''S PLAYHOUSE KITCHEN', 2.10),
        ('22749',  'FELTCRAFT PRINCESS CHARLOTTE DOLL', 3.75),
        ('22310',  'IVORY KNITTED MUG COSY ', 1.65),
        ('84969',  'BOX OF 6 ASSORTED COLOUR TEASPOONS', 4.25),
        ('22623',  'BOX OF VINTAGE JIGSAW BLOCKS ', 4.95),
        ('22622',  'BOX OF VINTAGE ALPHABET BLOCKS', 9.95),
        ('21754',  'HOME BUILDING BLOCK WORD', 5.95),
        ('21755',  'LOVE BUILDING BLOCK WORD', 5.95),
        ('21777',  'RECIPE BOX WITH METAL HEART', 7.95),
        ('48187',  'DOORMAT NEW ENGLAND', 7.95),
        ('22960',  'JAM MAKING SET WITH JARS', 4.25),
        ('22913',  'RED COAT RACK PARIS FASHION', 4.95),
        ('22912',  'YELLOW COAT RACK PARIS FASHION', 4.95),
        ('22914',  'BLUE COAT RACK PARIS FASHION', 4.95),
        ('22728',  'ALARM CLOCK BAKELIKE PINK', 3.75),
        ('22727',  'ALARM CLOCK BAKELIKE RED ', 3.75),
        ('22726',  'ALARM CLOCK BAKELIKE GREEN', 3.75),
        ('21724',  'PANDA AND BUNNIES STICKER SHEET', 0.85),
        ('21883',  'STARS GIFT TAPE ', 0.65),
        ('10002',  'INFLATABLE POLITICAL GLOBE ', 0.85),
        ('21791',  'VINTAGE HEADS AND TAILS CARD GAME ', 1.25),
        ('21035',  'SET/2 RED RETROSPOT TEA TOWELS ', 2.95),
        ('22326',  'ROUND SNACK BOXES SET OF4 WOODLAND ', 2.95),
        ('22629',  'SPACEBOY LUNCH BOX ', 1.95),
        ('85099B', 'JUMBO BAG RED RETROSPOT', 1.65),
        ('20725',  'LUNCH BAG RED RETROSPOT', 1.65),
        ('23084',  'RABBIT NIGHT LIGHT', 2.08),
        ('84077',  'WORLD WAR 2 GLIDERS ASSTD DESIGNS', 0.29),
        ('22197',  'SMALL POPCORN HOLDER', 0.85),
        ('22423',  'REGENCY CAKESTAND 3 TIER', 12.75),
        ('22839',  '3 TIER CAKE TIN GREEN AND CREAM', 14.95),
        ('22846',  'BREAD BIN DINER STYLE RED ', 16.95),
        ('22826',  'LOVE SEAT ANTIQUE WHITE METAL', 8.50),
        ('POST',   'POSTAGE', 18.00),
        ('22655',  'VINTAGE RED KITCHEN CABINET', 50.00)
    ) as p (stock_code, description, unit_price)
),
-- The 38 countries with weights close to their share of invoice lines.
countries (country, weight) as (values
    ('United Kingdom', 890), ('Germany', 19), ('France', 17), ('EIRE', 15), ('Spain', 5),
    ('Netherlands', 5), ('Belgium', 4), ('Switzerland', 4), ('Portugal', 3), ('Australia', 3),
    ('Norway', 2), ('Italy', 2), ('Channel Islands', 2), ('Finland', 2), ('Cyprus', 1),
    ('Sweden', 1), ('Austria', 1), ('Denmark', 1), ('Japan', 1), ('Poland', 1), ('Israel', 1),
    ('USA', 1), ('Hong Kong', 1), ('Singapore', 1), ('Iceland', 1), ('Canada', 1),
    ('Greece', 1), ('Malta', 1), ('United Arab Emirates', 1), ('European Community', 1),
    ('RSA', 1), ('Lebanon', 1), ('Lithuania', 1), ('Brazil', 1), ('Czech Republic', 1),
    ('Bahrain', 1), ('Saudi Arabia', 1), ('Unspecified', 1)
),
country_ranges as (
    select country,
           sum(weight) over (order by weight desc, country) - weight as lo,
           sum(weight) over (order by weight desc, country) as hi,
           sum(weight) over () as total
    from countries
),
quantities (k, quantity) as (
    select row_number() over () - 1, q
    from unnest(array[1, 1, 1, 2, 2, 2, 3, 4, 4, 6, 6, 8, 10, 12, 12, 12, 24, 24, 36, 48]) as q
),
-- md5 gives four independent 32-bit numbers per seed (r0..r3).
lines as (
    select g, md5('line:' || g) as h from generate_series(1, :rows) as g
),
lines_r as (
    select g,
           ('x' || substr(h, 1, 8))::bit(32)::bigint as r0,
           ('x' || substr(h, 9, 8))::bit(32)::bigint as r1,
           ('x' || substr(h, 17, 8))::bit(32)::bigint as r2,
           ('x' || substr(h, 25, 8))::bit(32)::bigint as r3
    from lines
),
-- About one line in five starts a new invoice: invoices of ~5 lines.
numbered as (
    select *, sum(case when g = 1 or r3 % 5 = 0 then 1 else 0 end) over (order by g) as inv
    from lines_r
),
invoice_ids as (
    select inv, count(*) over () as invoices, md5('invoice:' || inv) as h
    from (select distinct inv from numbered) as i
),
invoices as (
    select inv,
           ('x' || substr(h, 1, 8))::bit(32)::bigint % 50 = 0 as cancelled,
           case when ('x' || substr(h, 9, 8))::bit(32)::bigint % 5 = 0 then null
                else 12346 + (('x' || substr(h, 9, 8))::bit(32)::bigint / 5) % 5942
           end::integer as customer_id,
           -- Invoices follow the calendar: Dec 2010 to Dec 2011, 07:00-20:00.
           timestamp '2010-12-01 07:00'
             + ((inv - 1) * 373 / greatest(invoices - 1, 1)) * interval '1 day'
             + (('x' || substr(h, 17, 8))::bit(32)::bigint % 780) * interval '1 minute'
             as invoice_date,
           ('x' || substr(h, 25, 8))::bit(32)::bigint as guest_r
    from invoice_ids
),
invoices_c as (
    -- A customer always buys from the same country; guests get one per invoice.
    select i.*, c.country
    from invoices as i
    join country_ranges as c
      on (case when i.customer_id is null then i.guest_r
               else ('x' || substr(md5('customer:' || i.customer_id), 1, 8))::bit(32)::bigint
          end) % c.total >= c.lo
     and (case when i.customer_id is null then i.guest_r
               else ('x' || substr(md5('customer:' || i.customer_id), 1, 8))::bit(32)::bigint
          end) % c.total < c.hi
)
insert into ecommerce_sales
    (invoice_no, stock_code, description, quantity, invoice_date, unit_price, customer_id, country)
select case when i.cancelled then 'C' else '' end || (536364 + n.inv)::text,
       p.stock_code,
       case when n.r2 % 200 = 0 then null else p.description end,
       case when i.cancelled then -q.quantity else q.quantity end,
       i.invoice_date,
       -- Wholesale quantities get the lower price tier.
       case when q.quantity >= 12 then greatest(round(p.unit_price * 0.85, 2), 0.29)
            else p.unit_price end,
       i.customer_id,
       i.country
from numbered as n
join invoices_c as i on i.inv = n.inv
join products as p on p.k = n.r0 % (select count(*) from products)
join quantities as q on q.k = n.r1 % (select count(*) from quantities)
order by n.g;
