"""`python -m pgdyno` is the `pgdyno` command."""

from __future__ import annotations

from pgdyno.cli import main

main()
