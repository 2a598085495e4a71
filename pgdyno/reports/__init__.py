"""Reports: the worker's built-in `report` task, for queries whose results are too big to hold.

    catalog.py   the reports folder: NAME.sql files, their parameters and settings
    params.py    parameter types: JSON or CLI values to typed values the driver quotes
    sqltext.py   reads SQL text without a server: one statement, read-only start, placeholders
    task.py      the `report` task as every worker registers it (imports runner.py on first use)
    runner.py    the `report` task's work: read-only transaction, COPY ... TO STDOUT, store, measure
    stream.py    CSV to gzip pieces in flat memory, with row/byte counts and progress
    store.py     where results go: Postgres (default), a directory, an HTTP PUT
    fence.py     where the HTTP PUT may go: PGDYNO_REPORTS_HTTP_ALLOW, addresses on the socket
    upload_url.py  an upload URL read as the HTTP client sends it, or refused
    results.py   reading results back (`pgdyno report fetch` / `show`)
    rss.py       the process's peak RSS while a report runs
(the demo's schema, data and reports are pgdyno/demo/)

Nothing here is imported by a worker but task.py, until its first report job runs.
"""
