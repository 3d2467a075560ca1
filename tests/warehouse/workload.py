#!/usr/bin/env python3
"""A seeded random workload on two tables of other shapes than ecommerce_sales, as SQL for psql
(scripts/fixture.sh runs it while pgcdc streams; tests/warehouse/test_incremental.py checks what
dbt makes of the files).

    workload.py setup                      the tables, added to pgcdc's publication
    workload.py txns --seed S --count N    N transactions: inserts, updates that leave a TOASTed
                                           value unchanged, deletes, key changes, truncates

Shapes:
  public.wh_accounts  composite key (region, account_no); numeric(12,2); a TOASTed text (notes,
                      ~10 kB that does not compress away); timestamptz
  public.wh_events    uuid key; jsonb; a date, a timestamp and a numeric(12,2) that take the
                      values a typed RAW table used to drop files for (NaN, infinity, BC dates,
                      a year DuckDB cannot hold) and a 1 MiB text
Randomness comes from Python's random (seeded) for the plan and PostgreSQL's setseed for the
rows picked, so a seed replays the same workload on the same data.
"""

from __future__ import annotations

import argparse
import random

SETUP = """
create table if not exists public.wh_accounts (
    region text not null,
    account_no integer not null,
    balance numeric(12, 2),
    notes text,
    opened_at timestamptz,
    primary key (region, account_no)
);
create table if not exists public.wh_events (
    event_id uuid primary key,
    payload jsonb,
    happened_on date,
    happened_at timestamp,
    amount numeric(12, 2),
    body text
);
-- A TOASTed value that stays out of line: ~10 kB of hex that compresses poorly.
create or replace function public.wh_big(seed bigint) returns text language sql immutable as
$$ select string_agg(md5((seed * 1000 + i)::text), '') from generate_series(1, 320) as i $$;
do $$
begin
    if exists (select from pg_publication where pubname = 'pgcdc_pub') then
        if not exists (select from pg_publication_tables where pubname = 'pgcdc_pub' and tablename = 'wh_accounts') then
            alter publication pgcdc_pub add table public.wh_accounts, public.wh_events;
        end if;
    end if;
end
$$;
insert into public.wh_accounts
select (array['eu', 'us', 'apac'])[1 + i % 3], i, (i * 7.31)::numeric(12, 2), public.wh_big(i),
       timestamptz '2024-01-01 00:00:00+00' + i * interval '1 hour'
from generate_series(1, 60) as i
on conflict do nothing;
-- The values a typed RAW table dropped whole files for.
insert into public.wh_events values
    ('00000000-0000-4000-8000-000000000001', '{"kind": "nan"}', '2024-02-29', '2024-02-29 12:00:00', 'NaN', 'x'),
    ('00000000-0000-4000-8000-000000000002', '{"kind": "inf"}', 'infinity', 'infinity', 1.5, ''),
    ('00000000-0000-4000-8000-000000000003', '{"kind": "-inf"}', '-infinity', '-infinity', -1.5, null),
    ('00000000-0000-4000-8000-000000000004', '{"kind": "bc"}', '0044-03-15 BC', '0044-03-15 10:00:00 BC', 0, 'bc'),
    ('00000000-0000-4000-8000-000000000005', '{"kind": "far"}', '294276-12-31', '294276-12-31 23:59:59', 99.99, 'far'),
    ('00000000-0000-4000-8000-000000000006', '{"kind": "big"}', '2024-01-01', '2024-01-01 00:00:00', 1, repeat(md5('big'), 32768))
on conflict do nothing;
"""


def transaction(rng: random.Random, n: int) -> str:
    """One transaction of 1-4 random statements."""
    statements = [f"select setseed({rng.random():.6f});"]
    for _ in range(rng.randint(1, 4)):
        kind = rng.choices(
            ["insert", "update", "update_toast", "delete", "key_change", "truncate", "event"],
            weights=[25, 20, 20, 10, 12, 2, 11],
        )[0]
        if kind == "insert":
            statements.append(
                "insert into public.wh_accounts "
                "select (array['eu', 'us', 'apac'])[1 + (random() * 2)::int], "
                "coalesce((select max(account_no) from public.wh_accounts), 0) + i, "
                f"round((random() * 1000)::numeric, 2), public.wh_big({n} * 10 + i), now() "
                f"from generate_series(1, {rng.randint(1, 5)}) as i;"
            )
        elif kind == "update":
            # Every column sent: the notes change too.
            statements.append(
                f"update public.wh_accounts set notes = public.wh_big({n} + 100000), balance = balance + 1 "
                "where ctid in (select ctid from public.wh_accounts order by random() limit 2);"
            )
        elif kind == "update_toast":
            # notes untouched: PostgreSQL does not send the TOASTed value (unchanged in the file).
            statements.append(
                "update public.wh_accounts set balance = balance - 0.5, opened_at = opened_at + interval '1 day' "
                f"where ctid in (select ctid from public.wh_accounts order by random() limit {rng.randint(1, 4)});"
            )
        elif kind == "delete":
            statements.append(
                "delete from public.wh_accounts where ctid in "
                "(select ctid from public.wh_accounts order by random() limit 1);"
            )
        elif kind == "key_change":
            # The key changes, notes do not: D of the old key + U of the new one, notes unchanged.
            statements.append(
                "update public.wh_accounts set account_no = "
                "(select max(account_no) + 1 from public.wh_accounts) "
                "where ctid in (select ctid from public.wh_accounts order by random() limit 1);"
            )
        elif kind == "truncate":
            statements.append("truncate public.wh_accounts;")
            statements.append(
                "insert into public.wh_accounts select 'eu', i, i, public.wh_big(i), now() "
                f"from generate_series({n * 100}, {n * 100 + 5}) as i;"
            )
        else:
            statements.append(
                "update public.wh_events set payload = jsonb_set(payload, '{n}', to_jsonb(" + str(n) + ")) "
                "where ctid in (select ctid from public.wh_events order by random() limit 1);"
            )
    return "begin;\n" + "\n".join(statements) + "\ncommit;\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("setup")
    txns = sub.add_parser("txns")
    txns.add_argument("--seed", type=int, required=True)
    txns.add_argument("--count", type=int, default=100)
    args = parser.parse_args()
    if args.command == "setup":
        print(SETUP)
        return
    rng = random.Random(args.seed)
    for n in range(args.count):
        print(transaction(rng, args.seed % 1000 * 1000 + n))


if __name__ == "__main__":
    main()
