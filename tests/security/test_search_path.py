"""Scenario 4 of the security issue: privilege escalation through the search_path.

Where the enqueue role may CREATE in a schema on the path of pgdyno's sessions (public, on
PostgreSQL 14 and older by default; on 15 and later a grant reproduces it), it defines
`public.=(pgdyno.job_status, pgdyno.job_status)`. Postgres prefers an operator whose argument
types match exactly over pg_catalog's polymorphic enum `=`, wherever it sits on the path, so
any statement of a session with public on its path comparing statuses would run the role's
function with that session's privileges: a worker or an admin's `pgdyno status` connected as a
superuser would make the role one. pgdyno's sessions and functions pin their search_path.
"""

from __future__ import annotations

import psycopg
from helpers import wait_for_status
from psycopg import sql as pgsql
from security_support import BOTH_SERVERS, cli, db_user

import pgdyno

EVIL = """
CREATE TABLE public.evil_calls (at timestamptz DEFAULT clock_timestamp());
GRANT INSERT ON public.evil_calls TO PUBLIC;
CREATE FUNCTION public.evil_eq(a pgdyno.job_status, b pgdyno.job_status) RETURNS boolean
    LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO public.evil_calls DEFAULT VALUES;
    BEGIN
        EXECUTE format('ALTER ROLE %I SUPERUSER', {role});
    EXCEPTION WHEN insufficient_privilege THEN NULL;
    END;
    RETURN a::text = b::text;
END
$$;
CREATE OPERATOR public.= (
    LEFTARG = pgdyno.job_status, RIGHTARG = pgdyno.job_status, FUNCTION = public.evil_eq
);
"""


@BOTH_SERVERS
def test_an_operator_planted_in_public_never_runs_in_pgdynos_sessions(
    db, owner, attacker, enqueue_url, attack
):
    role = db_user(enqueue_url)
    # PostgreSQL <= 14 lets every role CREATE in public; 15 and later need this grant.
    owner.execute(pgsql.SQL("GRANT CREATE ON SCHEMA public TO {}").format(pgsql.Identifier(role)))
    attacker.execute(EVIL.replace("{role}", pgsql.Literal(role).as_string(attacker)))
    # The trap works where a session has public on its path:
    with psycopg.connect(db, autocommit=True) as victim:
        victim.execute("SELECT 'ready'::pgdyno.job_status = 'ready'::pgdyno.job_status")
    assert owner.execute("SELECT count(*) FROM public.evil_calls").fetchone()[0] == 1
    owner.execute(pgsql.SQL("ALTER ROLE {} NOSUPERUSER").format(pgsql.Identifier(role)))
    owner.execute("TRUNCATE public.evil_calls")

    # pgdyno's own sessions, connected as a superuser: worker claims, the dispatcher decides,
    # an admin runs the CLI, the enqueue role's own INSERT runs the enqueue trigger.
    system = attack(db, owner)
    attacker.execute("INSERT INTO pgdyno.jobs (queue, task) VALUES ('q', 'noop')")
    for args in (
        ("status",),
        ("enqueue", "noop", "-q", "q"),
        ("jobs", "list"),
        ("prune", "--older-than", "1d"),
    ):
        assert cli(db, *args).exit_code == 0
    job_id = pgdyno.enqueue(owner, "noop", queue="q")  # an app's connection: public on its path
    wait_for_status(owner, job_id, "done")
    system.assert_unharmed(owner)
    system.stop()
    assert owner.execute("SELECT count(*) FROM public.evil_calls").fetchone()[0] == 0
    assert not owner.execute(
        "SELECT rolsuper FROM pg_roles WHERE rolname = %s", (role,)
    ).fetchone()[0]


def test_every_pgdyno_function_pins_its_search_path(owner):
    unpinned = owner.execute(
        "SELECT p.oid::regprocedure::text FROM pg_proc AS p"
        " WHERE p.pronamespace = 'pgdyno'::regnamespace"
        "   AND NOT coalesce('search_path=pg_catalog, pgdyno, pg_temp' = ANY(p.proconfig), false)"
    ).fetchall()
    assert unpinned == []
