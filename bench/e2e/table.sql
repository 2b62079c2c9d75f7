-- The benchmark table, as Sluice's PostgreSQL sink creates it from the declared schema of
-- bench/e2e/sluice-*.yaml (checked by scripts/bench.sh): the ceiling and the hand-written
-- baseline load into a table of this shape. psql -v table=bench.NAME -f table.sql
DROP TABLE IF EXISTS :table;
CREATE TABLE :table (
    id         bigint PRIMARY KEY,
    updated_at timestamptz,
    created_at timestamptz,
    status     text,
    amount     double precision,
    currency   text,
    customer   jsonb,
    items      jsonb,
    tags       jsonb,
    notes      text
);
