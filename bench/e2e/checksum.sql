-- Row count and checksum of a benchmark table, in the form fetch.py computes them from the
-- source: md5 over "id:updated_at-as-unix-seconds" in id order, comma-separated.
-- psql -X -A -t -v table=bench.NAME -f checksum.sql   →   "ROWS|MD5"
SELECT count(*) || '|' || coalesce(md5(string_agg(
           id::text || ':' || extract(epoch FROM updated_at::timestamptz)::bigint::text,
           ',' ORDER BY id)), '')
FROM :table;
