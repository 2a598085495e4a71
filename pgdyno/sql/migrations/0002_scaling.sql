-- Scaling state: the rules the dispatcher was started with, one row per process type that
-- serializes every scaling decision for that type, and the log of scaling actions.

-- queue -> process type, as given by `pgdyno dispatcher --scale QUEUE=TYPE[,max=N]...`.
-- Recorded so that workers (which scale themselves to zero) and `pgdyno status` see them.
CREATE TABLE pgdyno.scale_rules (
    queue         text PRIMARY KEY,
    process_type  text NOT NULL,
    max_quantity  integer NOT NULL DEFAULT 1,
    jobs_per_dyno integer NOT NULL DEFAULT 1,
    dyno_size     text,
    linger_s      double precision NOT NULL DEFAULT 30,
    updated_at    timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT process_type_must_be_a_heroku_process_name CHECK (process_type ~ '^[-\w]{1,128}$'),
    CONSTRAINT max_must_be_at_least_1 CHECK (max_quantity >= 1),
    CONSTRAINT per_must_be_at_least_1 CHECK (jobs_per_dyno >= 1),
    CONSTRAINT linger_must_not_be_negative CHECK (linger_s >= 0)
);

-- One row per scaled process type. Every decision for a type (the dispatcher's scale-up, a
-- worker's scale-to-zero) locks this row FOR UPDATE and holds it across its check of the
-- queues and its call to the formation API, so decisions never interleave: a job committed
-- while a worker scales its type to zero is seen by the dispatcher right after, under the
-- same lock, and scaled up again.
CREATE TABLE pgdyno.formations (
    process_type  text PRIMARY KEY,
    -- The quantity pgdyno last set or read from the platform; NULL until known.
    quantity      integer,
    dyno_size     text,
    known_at      timestamptz,
    -- The last failed formation call, shown by `pgdyno status` until a call succeeds.
    last_error    text,
    last_error_at timestamptz
);

CREATE TABLE pgdyno.scale_events (
    id            bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    at            timestamptz NOT NULL DEFAULT clock_timestamp(),
    process_type  text NOT NULL,
    from_quantity integer,
    to_quantity   integer NOT NULL,
    reason        text NOT NULL,
    actor         text NOT NULL,
    outcome       text NOT NULL,            -- 'ok' or 'error: <what happened>'
    request_id    text,
    duration_ms   double precision
);
CREATE INDEX scale_events_type_at_idx ON pgdyno.scale_events (process_type, at);
