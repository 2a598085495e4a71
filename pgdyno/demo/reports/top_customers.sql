-- The customers who spent the most, with their order count and latest order.
-- param: limit integer = 20
-- param: countries text[] = null
SELECT c.id, c.name, c.email, c.country,
       count(*) AS orders,
       sum(o.total) AS spent,
       max(o.ordered_at) AS last_order
  FROM demo.orders AS o
  JOIN demo.customers AS c ON c.id = o.customer_id
 WHERE o.status <> 'refunded'
   AND (%(countries)s::text[] IS NULL OR c.country = ANY (%(countries)s::text[]))
 GROUP BY c.id
 ORDER BY spent DESC, c.id
 LIMIT %(limit)s;
