-- Named statements for the sessions pgdyno opens (pgdyno/db.py).

-- name: session_pin_search_path
-- pgdyno's own sessions resolve names in pg_catalog and pgdyno only (pg_temp, listed last,
-- is never searched for functions or operators): see pgdyno/db.py.
SET search_path = pg_catalog, pgdyno, pg_temp;
