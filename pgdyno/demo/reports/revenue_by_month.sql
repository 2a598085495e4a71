-- Revenue and paid orders per month and country, from a date on.
-- param: since date = 2024-01-01
-- param: country text = null
-- set: statement_timeout = 5min
-- set: work_mem = 64MB
SELECT date_trunc('month', o.ordered_at AT TIME ZONE 'UTC')::date AS month,
       c.country,
       count(*) AS orders,
       sum(o.total) AS revenue
  FROM demo.orders AS o
  JOIN demo.customers AS c ON c.id = o.customer_id
 WHERE o.ordered_at >= %(since)s
   AND o.status <> 'refunded'
   AND (%(country)s::text IS NULL OR c.country = %(country)s)
 GROUP BY 1, 2
 ORDER BY 1, 2;
