-- Every order with its customer, in id order: the whole-database export that used to need a
-- big dyno. Streamed, it runs in the same memory whatever its size.
-- param: since date = 2000-01-01
-- param: limit integer = null
-- set: statement_timeout = 30min
SELECT o.id, o.ordered_at, o.status, o.total, o.note,
       c.id AS customer_id, c.name AS customer, c.email, c.country
  FROM demo.orders AS o
  JOIN demo.customers AS c ON c.id = o.customer_id
 WHERE o.ordered_at >= %(since)s
 ORDER BY o.id
 LIMIT %(limit)s;
