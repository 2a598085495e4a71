-- Named statements for the roles pgdyno documents (pgdyno/roles.py). The functions are in
-- migration 0009; a role name is bound and quoted as an identifier, never formatted in.

-- name: grant_enqueue
-- Applies the grants (as the caller, the owner of pgdyno.jobs) and returns them.
SELECT statement
  FROM pgdyno.grant_enqueue(pg_catalog.quote_ident(%(role)s)::pg_catalog.regrole,
                            %(returning_id)s) AS statement;

-- name: grant_enqueue_statements
SELECT statement
  FROM pgdyno.grant_enqueue_statements(pg_catalog.quote_ident(%(role)s)::pg_catalog.regrole,
                                       %(returning_id)s) AS statement;
