-- The rows of the type zoo (type_zoo.sql includes this file twice: ids :base + 1 .. :base + 24).
-- One statement per row; a column a row does not name is NULL.

-- 1: NULL in every column but the key.
insert into public.type_zoo (id) values (:base + 1);

-- 2: empty and zero.
insert into public.type_zoo (id, label, c_smallint, c_integer, c_bigint, c_numeric, c_numeric_12_2,
    c_real, c_double, c_boolean, c_text, c_varchar, c_char, c_bytea, c_date, c_time, c_timetz,
    c_timestamp, c_timestamptz, c_interval, c_uuid, c_json, c_jsonb, c_int_array, c_text_array,
    c_mood, c_positive_int, c_inet, c_cidr, c_money)
values (:base + 2, '', 0, 0, 0, 0, 0,
    0, 0, false, '', '', '', '', '1970-01-01', '00:00:00', '00:00:00+00',
    '2000-01-01 00:00:00', '1970-01-01 00:00:00+00', '0', '00000000-0000-0000-0000-000000000000',
    '""', '{}', '{}', '{""}',
    'sad', 1, '0.0.0.0', '0.0.0.0/0', 0);

-- 3: minimums.
insert into public.type_zoo (id, label, c_smallint, c_integer, c_bigint, c_numeric, c_numeric_12_2,
    c_real, c_double, c_boolean, c_text, c_varchar, c_char, c_bytea, c_date, c_time, c_timetz,
    c_timestamp, c_timestamptz, c_interval, c_uuid, c_json, c_jsonb, c_int_array, c_text_array,
    c_mood, c_positive_int, c_inet, c_cidr, c_money)
values (:base + 3, 'minimum', -32768, -2147483648, -9223372036854775808,
    '-123456789012345678901234567890123456789.123456789012345678901234567890123456789',
    -9999999999.99,
    '-3.4028235e38', '-1.7976931348623157e308', false, ' ', ' ', ' ', '\x00',
    '4714-11-24 BC', '00:00:00', '00:00:00+15:59',
    '4714-11-24 00:00:00 BC', '4714-11-24 00:00:00+00 BC',
    '-178000000 years -2147483647 days -2562047788:00:54.775807',
    '00000000-0000-0000-0000-000000000001', 'null', 'null', '{-2147483648}', '{NULL}',
    'sad', 1, '::', '::/0', '-92233720368547758.08');

-- 4: maximums.
insert into public.type_zoo (id, label, c_smallint, c_integer, c_bigint, c_numeric, c_numeric_12_2,
    c_real, c_double, c_boolean, c_text, c_varchar, c_char, c_bytea, c_date, c_time, c_timetz,
    c_timestamp, c_timestamptz, c_interval, c_uuid, c_json, c_jsonb, c_int_array, c_text_array,
    c_mood, c_positive_int, c_inet, c_cidr, c_money)
values (:base + 4, 'maximum', 32767, 2147483647, 9223372036854775807,
    -- 1000 digits before the point and 100 after.
    (repeat('9', 1000) || '.' || repeat('9', 100))::numeric,
    9999999999.99,
    '3.4028235e38', '1.7976931348623157e308', true,
    repeat('z', 4096), repeat('z', 20), 'zzzzz', '\xff',
    '5874897-12-31', '24:00:00', '24:00:00-15:59',
    '294276-12-31 23:59:59.999999', '294276-12-31 23:59:59.999999+00',
    '178000000 years 2147483647 days 2562047788:00:54.775807',
    'FFFFFFFF-FFFF-FFFF-FFFF-FFFFFFFFFFFF', '[1e400, -1e400]', '[1e400, -1e-400]',
    '{2147483647}', '{zzzz}',
    'it''s "complicated", ok', 2147483647, 'ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff',
    '255.255.255.255/32', '92233720368547758.07');

-- 5: NaN (and +infinity for dates and times).
insert into public.type_zoo (id, label, c_numeric, c_real, c_double, c_date, c_timestamp, c_timestamptz)
values (:base + 5, 'NaN', 'NaN', 'NaN', 'NaN', 'infinity', 'infinity', 'infinity');

-- 6: +Infinity.
insert into public.type_zoo (id, label, c_numeric, c_real, c_double, c_date, c_timestamp, c_timestamptz)
values (:base + 6, '+infinity', 'Infinity', 'Infinity', 'Infinity', 'infinity', 'infinity', 'infinity');

-- 7: -Infinity.
insert into public.type_zoo (id, label, c_numeric, c_real, c_double, c_date, c_timestamp, c_timestamptz)
values (:base + 7, '-infinity', '-Infinity', '-Infinity', '-Infinity', '-infinity', '-infinity', '-infinity');

-- 8: negative zero (floats keep the sign; numeric, money and intervals have no -0).
insert into public.type_zoo (id, label, c_smallint, c_numeric, c_numeric_12_2, c_real, c_double, c_interval, c_money)
values (:base + 8, 'negative zero', -0, '-0.000', '-0.00', '-0', '-0', '-0 days -00:00:00', '-0.00');

-- 9: the smallest steps.
insert into public.type_zoo (id, label, c_smallint, c_numeric, c_numeric_12_2, c_real, c_double,
    c_time, c_timetz, c_timestamp, c_timestamptz, c_interval, c_money, c_positive_int)
values (:base + 9, 'smallest steps', 1,
    ('0.' || repeat('0', 999) || '1')::numeric, 0.01,
    '1.4e-45', '4.9406564584124654e-324',  -- the smallest subnormals
    '00:00:00.000001', '00:00:00.000001+00', '1970-01-01 00:00:00.000001', '1969-12-31 23:59:59.999999+00',
    '00:00:00.000001', 0.01, 1);

-- 10: ordinary values, and floats that are not exact in binary.
insert into public.type_zoo (id, label, c_smallint, c_integer, c_bigint, c_numeric, c_numeric_12_2,
    c_real, c_double, c_boolean, c_text, c_varchar, c_char, c_date, c_time, c_timestamp,
    c_timestamptz, c_interval, c_uuid, c_json, c_jsonb, c_int_array, c_text_array, c_mood,
    c_positive_int, c_inet, c_cidr, c_money)
values (:base + 10, 'ordinary', 42, -42, 1234567890123, '3.14159265358979323846264338327950288419716939937510',
    1234.5, '0.1', '0.1', true, 'hello', 'hello', 'ab', '2024-02-29', '12:34:56.789',
    '2024-02-29 12:34:56.789012', '2024-02-29 12:34:56.789012+00', '1 year 2 mons 3 days 04:05:06.789',
    'a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11', '{"a":1}', '{"a":1}', '{1,2,3}', '{a,b,c}', 'ok',
    42, '192.168.100.128/25', '192.168.100.128/25', '-1234.56');

-- 11: unicode: emoji (with ZWJ sequences and skin tones), CJK, Hangul, a combining accent next to
-- the precomposed letter, right-to-left scripts, a 4-byte musical symbol, zero-width and
-- non-breaking spaces, a byte order mark.
insert into public.type_zoo (id, label, c_text, c_varchar, c_char, c_json, c_jsonb, c_text_array, c_mood)
values (:base + 11, 'unicode',
    E'emoji 🎉 👩\u200d👩\u200d👧\u200d👦 👍🏽, CJK 漢字かなカナ, 한국어, e\u0301 vs \u00e9, עברית العربية, 𝄞, zero\u200bwidth, nbsp\u00a0, bom\ufeff',
    E'漢字かなカナ🎉👍🏽e\u0301\u00e9𝄞ü',  -- 14 characters (of 20), 40 bytes
    '日本',
    E'{"emoji": "🎉", "cjk": "漢字", "escaped": "\\u00e9\\ud83c\\udf89", "nested": {"ü": ["é", "e\u0301"]}}',
    E'{"emoji": "🎉", "cjk": "漢字", "escaped": "\\u00e9\\ud83c\\udf89", "nested": {"ü": ["é", "e\u0301"]}}',
    E'{漢字,"🎉 party",e\u0301,"ü,ö"}',
    'happy');

-- 12: what CSV and PostgreSQL's COPY text format escape: quotes, commas, CR, LF, CRLF, tabs,
-- backslashes (and the two-character text \N, which COPY uses for NULL), the word NULL.
insert into public.type_zoo (id, label, c_text, c_varchar, c_char, c_json, c_jsonb, c_int_array, c_text_array, c_mood)
values (:base + 12, 'csv and escapes',
    E'double "quote" and "" two, single \'quote\', comma, semicolon; CR\rLF\nCRLF\r\ntab\tbackslash \\ \\\\ \\N \\t end\\',
    E'\\N',
    'NULL',
    E'{"quote": "\\"", "backslash": "\\\\", "newline": "\\n", "tab": "\\t", "nul": "\\u0000", "raw tab":\t1,\n "dup": 1, "dup": 2}',
    E'{"quote": "\\"", "backslash": "\\\\", "newline": "\\n", "tab": "\\t", "control": "\\u0001"}',
    '{1,NULL,-3}',
    E'{a,"b,c","d\\"e",NULL,"NULL","null",""," x ","back\\\\slash","{}","tab\there","new\nline","cr\rlf","\\\\N",\'}',
    'it''s "complicated", ok');

-- 13: every control character PostgreSQL can store (U+0001..U+001F, U+007F), and whitespace only.
insert into public.type_zoo (id, label, c_text, c_varchar, c_char, c_text_array)
values (:base + 13, 'control characters',
    (select string_agg(chr(g), '' order by g) from generate_series(1, 31) as g) || chr(127),
    E' \t\n\r\x0b\x0c ',
    E'\x01\x02\x1f\x7f ',
    array[chr(1), chr(31) || chr(127), E'\x0b', E'\x0c']);

-- 14: a text of just over 1 MiB (stored out of line: TOAST) with multi-byte characters in it.
insert into public.type_zoo (id, label, c_integer, c_text, c_bytea, c_json)
values (:base + 14, 'one megabyte', 14,
    repeat(E'pgcdc \u2713 漢字 ', 61681),  -- 17 bytes each: 1,048,577 bytes
    '\x0102', '{"big": false}');

-- 15: bytea with every byte value, in order and reversed.
insert into public.type_zoo (id, label, c_bytea, c_text)
values (:base + 15, 'all bytes',
    (select decode(string_agg(lpad(to_hex(g), 2, '0'), '' order by g), 'hex') from generate_series(0, 255) as g)
    || (select decode(string_agg(lpad(to_hex(g), 2, '0'), '' order by g desc), 'hex') from generate_series(0, 255) as g),
    'every byte value 0..255 then 255..0');

-- 16: time zones: timestamptz entered with offsets other than UTC (written back in UTC), a local
-- mean time with seconds (Amsterdam 1900: +00:19:32), odd timetz offsets, microseconds.
insert into public.type_zoo (id, label, c_time, c_timetz, c_timestamp, c_timestamptz, c_interval, c_text_array)
values (:base + 16, 'time zones', '23:59:59.999999', '12:34:56.789012+05:45',
    '2024-02-29 23:59:59.999999', '2024-02-29 23:59:59.999999-08:00', '36:00:00',
    '{"2024-02-29 23:59:59.999999-08"}');
insert into public.type_zoo (id, label, c_timetz, c_timestamptz)
values (:base + 17, 'time zones 2', '00:00:00.5-03:30', '1900-01-01 00:00:00 Europe/Amsterdam');
insert into public.type_zoo (id, label, c_timetz, c_timestamptz)
values (:base + 18, 'time zones 3', '12:00:00+05:45:30', '2024-06-30 12:00:00 America/St_Johns');

-- 19: before Christ (PostgreSQL prints a " BC" suffix; ISO 8601 has no such form, pgcdc keeps it).
insert into public.type_zoo (id, label, c_date, c_timestamp, c_timestamptz)
values (:base + 19, 'BC', '0044-03-15 BC', '0001-12-31 23:59:59.999999 BC', '0044-03-15 12:00:00+02 BC');

-- 20: the first day AD and the last years with four digits, then five.
insert into public.type_zoo (id, label, c_date, c_timestamp, c_timestamptz)
values (:base + 20, 'year 1 and 9999', '0001-01-01', '0001-01-01 00:00:00', '0001-01-01 00:00:00+00');
insert into public.type_zoo (id, label, c_date, c_timestamp, c_timestamptz)
values (:base + 21, 'year 9999 and 10000', '9999-12-31', '9999-12-31 23:59:59.999999', '10000-01-01 00:00:00+00');

-- 22: deleted again in the stream phase (a D change).
insert into public.type_zoo (id, label, c_integer, c_text, c_interval)
values (:base + 22, 'deleted', 22, 'gone', '-1 years -2 mons +3 days -04:05:06.000001');

-- 23: intervals with mixed signs, and more arrays and network addresses.
insert into public.type_zoo (id, label, c_interval, c_int_array, c_text_array, c_inet, c_cidr, c_json, c_jsonb)
values (:base + 23, 'mixed signs', '-1 years -2 mons +3 days -04:05:06.000001', '{NULL}', '{NULL,NULL}',
    '2001:db8::1/64', '2001:db8::/32', '[]', '[{"a": [[], {}]}, 1.0, 1.50, -0, 1e3]');
insert into public.type_zoo (id, label, c_interval, c_inet, c_cidr)
values (:base + 24, 'mixed signs 2', '1 day -00:00:00.000001', '::ffff:1.2.3.4', '10.0.0.0/8');
