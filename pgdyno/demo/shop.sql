-- The demo shop that `make run` reports on: customers and their orders, generated in the
-- database with generate_series (fast, and the same data on every run: no random()).
-- Loaded by pgdyno/reports/demo.py; nothing in pgdyno itself depends on it.

-- name: demo_install
CREATE SCHEMA IF NOT EXISTS demo;

CREATE TABLE IF NOT EXISTS demo.customers (
    id         bigint      PRIMARY KEY,
    name       text        NOT NULL,
    email      text        NOT NULL,
    country    text        NOT NULL,
    created_at timestamptz NOT NULL
);

CREATE TABLE IF NOT EXISTS demo.orders (
    id          bigint        PRIMARY KEY,
    customer_id bigint        NOT NULL,
    ordered_at  timestamptz   NOT NULL,
    status      text          NOT NULL,
    total       numeric(12,2) NOT NULL,
    note        text
);

-- Replaces the data with n_customers customers and n_orders orders spread over 2024 and 2025.
-- Some names and notes hold commas, quotes and line breaks, as real data does.
CREATE OR REPLACE FUNCTION demo.seed(n_customers integer, n_orders bigint) RETURNS void
    LANGUAGE plpgsql AS $$
BEGIN
    TRUNCATE demo.orders, demo.customers;
    INSERT INTO demo.customers (id, name, email, country, created_at)
    SELECT g,
           CASE WHEN g % 97 = 0 THEN format('"The %s Company", Ltd.', g)
                ELSE 'Customer ' || g END,
           'customer' || g || '@example.com',
           (ARRAY['DE', 'FR', 'NL', 'US', 'GB', 'SE', 'ES', 'IT'])[(g * 7) % 8 + 1],
           timestamptz '2023-01-01 00:00:00+00' + (g % 730) * interval '1 day'
      FROM generate_series(1, n_customers) AS g;
    INSERT INTO demo.orders (id, customer_id, ordered_at, status, total, note)
    SELECT g,
           (g * 7919) % n_customers + 1,
           timestamptz '2024-01-01 00:00:00+00' + ((g * 104729) % (730 * 86400)) * interval '1 second',
           (ARRAY['paid', 'paid', 'paid', 'shipped', 'refunded'])[g % 5 + 1],
           round(((g * 2654435761) % 100000) / 100.0 + 5, 2),
           CASE WHEN g % 89 = 0 THEN E'leave at the door\nring twice'
                WHEN g % 61 = 0 THEN 'gift, "wrapped"' END
      FROM generate_series(1, n_orders) AS g;
    ANALYZE demo.customers, demo.orders;
END
$$;

-- name: demo_seed
SELECT demo.seed(%(customers)s, %(orders)s);
