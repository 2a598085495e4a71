"""Formation backends: read and set how many dynos of a process type run.

base.py holds the FormationBackend protocol; heroku.py talks to the Heroku Platform API (and,
pointed at `pgdyno dev`, to the local platform); memory.py is the in-process fake for tests.
"""

from pgdyno.scaling.formation.base import Formation, FormationBackend, backend_from_settings

__all__ = ["Formation", "FormationBackend", "backend_from_settings"]
