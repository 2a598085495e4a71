"""The local platform (`pgdyno dev`): the Procfile's process types as local processes, behind
the same formation HTTP API as Heroku, so the real Heroku client runs end to end locally."""

from __future__ import annotations

from pgdyno.platform.local import LocalPlatform

__all__ = ["LocalPlatform"]
