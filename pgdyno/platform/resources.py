"""The local platform's resources in the Heroku Platform API's shapes: account, app, formation,
dyno, and the checks of a formation update (quantity, size), with Heroku's error bodies.

Shapes follow the Platform API reference (the formation with `dyno_size: {id, name}` and the
deprecated `size`, the batch update's `updates: [{type, quantity, size | dyno_size}]`); the
quantity may come as a number, a numeric string or a relative "+1"/"-1", as the Heroku CLI
sends it.
"""

from __future__ import annotations

import re
import uuid
from datetime import UTC, datetime
from typing import Any

from pgdyno.platform.dynos import Dyno, DynoManager
from pgdyno.scaling import sizes

#: Most dynos of one process type (Heroku's default limit for Standard and Performance).
MAX_QUANTITY = 100
_RELATIVE = re.compile(r"^\s*([+-]?)(\d+)\s*$")
#: Fixed ids for dyno sizes (Heroku's are fixed per size too).
_SIZE_NAMESPACE = uuid.UUID("7b3a1f6e-2f0c-4f57-9d7e-5c1a0e9b4d21")


class ApiError(Exception):
    """An answer with Heroku's error body: {"id": error_id, "message": message}."""

    def __init__(self, status: int, error_id: str, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.error_id = error_id
        self.message = message


def timestamp(at: float) -> str:
    """A wall-clock time as the API writes it: 2012-01-01T12:00:00Z."""
    return datetime.fromtimestamp(at, UTC).isoformat(timespec="seconds").replace("+00:00", "Z")


def size_id(name: str) -> str:
    return str(uuid.uuid5(_SIZE_NAMESPACE, name.lower()))


class Resources:
    """The app's resources over a DynoManager: ids, shapes, lookups by name or id."""

    def __init__(self, app: str, dynos: DynoManager, created: float) -> None:
        self.app = app
        self.app_id = str(uuid.uuid4())
        self.account_id = str(uuid.uuid4())
        self.dynos = dynos
        self.created = created
        self.formation_ids = {name: str(uuid.uuid4()) for name in dynos.commands}

    # --- lookups -----------------------------------------------------------------------------

    def check_app(self, name_or_id: str) -> None:
        if name_or_id not in (self.app, self.app_id):
            raise ApiError(404, "not_found", "Couldn't find that app.")

    def process_type(self, type_or_id: str) -> str:
        """The process type named, or whose formation id is, `type_or_id`; 404 otherwise."""
        if type_or_id in self.dynos.commands:
            return type_or_id
        for name, formation_id in self.formation_ids.items():
            if formation_id == type_or_id:
                return name
        raise ApiError(404, "not_found", "Couldn't find that formation.")

    def dyno(self, name_or_id: str) -> Dyno:
        for dyno in self.dynos.dynos():
            if name_or_id in (dyno.name, dyno.id):
                return dyno
        raise ApiError(404, "not_found", "Couldn't find that dyno.")

    # --- shapes ------------------------------------------------------------------------------

    def account(self) -> dict[str, Any]:
        created = timestamp(self.created)
        return {
            "allow_tracking": False,
            "beta": False,
            "created_at": created,
            "default_organization": None,
            "default_team": None,
            "delinquent_at": None,
            "email": "developer@pgdyno.local",
            "federated": False,
            "id": self.account_id,
            "identity_provider": None,
            "last_login": created,
            "name": "pgdyno dev",
            "sms_number": None,
            "suspended_at": None,
            "two_factor_authentication": False,
            "updated_at": created,
            "verified": True,
        }

    def app_info(self) -> dict[str, Any]:
        created = timestamp(self.created)
        stack = {"id": str(uuid.uuid5(_SIZE_NAMESPACE, "heroku-24")), "name": "heroku-24"}
        return {
            "acm": False,
            "archived_at": None,
            "build_stack": stack,
            "buildpack_provided_description": None,
            "created_at": created,
            "generation": {"id": str(uuid.uuid5(_SIZE_NAMESPACE, "cedar")), "name": "cedar"},
            "git_url": f"https://git.heroku.com/{self.app}.git",
            "id": self.app_id,
            "internal_routing": None,
            "maintenance": False,
            "name": self.app,
            "organization": None,
            "owner": {"email": "developer@pgdyno.local", "id": self.account_id},
            "process_tier": "production",
            "region": {"id": str(uuid.uuid5(_SIZE_NAMESPACE, "us")), "name": "us"},
            "released_at": created,
            "repo_size": None,
            "slug_size": None,
            "space": None,
            "stack": stack,
            "team": None,
            "updated_at": created,
            "web_url": f"http://127.0.0.1/{self.app}/",
        }

    def _app_ref(self) -> dict[str, str]:
        return {"id": self.app_id, "name": self.app}

    def formation(self, process_type: str) -> dict[str, Any]:
        size = self.dynos.sizes[process_type]
        return {
            "app": self._app_ref(),
            "command": self.dynos.commands[process_type],
            "created_at": timestamp(self.created),
            "dyno_size": {"id": size_id(size), "name": size},
            "id": self.formation_ids[process_type],
            "quantity": self.dynos.quantities[process_type],
            "size": size,
            "type": process_type,
            "updated_at": timestamp(self.dynos.updated[process_type]),
        }

    def formations(self) -> list[dict[str, Any]]:
        return [self.formation(name) for name in self.dynos.commands]

    def dyno_info(self, dyno: Dyno) -> dict[str, Any]:
        return {
            "app": self._app_ref(),
            "attach_url": None,
            "command": self.dynos.commands[dyno.process_type],
            "created_at": timestamp(dyno.created),
            "id": dyno.id,
            "name": dyno.name,
            "release": {"id": str(uuid.uuid5(_SIZE_NAMESPACE, self.app)), "version": 1},
            "size": self.dynos.sizes[dyno.process_type],
            "state": "starting" if self.dynos.booting(dyno) else "up",
            "type": dyno.process_type,
            "updated_at": timestamp(dyno.created),
        }

    # --- updates -----------------------------------------------------------------------------

    def update(self, process_type: str, body: dict[str, Any]) -> tuple[int | None, str | None]:
        """(new quantity or None, canonical size or None) from one formation update; 422
        with Heroku's body when a value is not acceptable."""
        unknown = set(body) - {"quantity", "size", "dyno_size", "type", "process"}
        if unknown:
            raise ApiError(
                422, "invalid_params", f"Unknown attributes: {', '.join(sorted(unknown))}."
            )
        quantity = _quantity(body.get("quantity"), self.dynos.quantities[process_type])
        size = _size(body)
        if size is not None:
            size = sizes.canonical(size)
            if size is None:
                raise ApiError(
                    422,
                    "invalid_params",
                    f"No such size as {_size(body)}. Available dyno sizes are "
                    f"{', '.join(sizes.CEDAR)}, and dyno-<N>c-<M>gb sizes on Fir.",
                )
        effective = size or self.dynos.sizes[process_type]
        if effective in sizes.SINGLE and (quantity or 0) > 1:
            raise ApiError(
                422,
                "invalid_params",
                f"Cannot update to more than 1 {effective} size dynos per process type.",
            )
        return quantity, size

    def batch(self, body: dict[str, Any]) -> list[tuple[str, int | None, str | None]]:
        """The checked updates of a batch update; all or none (422 for any bad one)."""
        updates = body.get("updates")
        if set(body) != {"updates"} or not isinstance(updates, list) or not updates:
            raise ApiError(
                422, "invalid_params", 'Request body must be {"updates": [{"type": ...}, ...]}.'
            )
        checked = []
        for update in updates:
            if not isinstance(update, dict):
                raise ApiError(422, "invalid_params", "Each update must be a JSON object.")
            named = update.get("type", update.get("process"))
            if not isinstance(named, str):
                raise ApiError(422, "invalid_params", "Each update needs a type.")
            process_type = self.process_type(named)
            checked.append((process_type, *self.update(process_type, update)))
        return checked


def _quantity(value: object, current: int) -> int | None:
    """A quantity as a number, a numeric string, or relative ("+1", "-2"); None: unchanged."""
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | str):
        raise ApiError(422, "invalid_params", "Quantity must be an integer.")
    if isinstance(value, int):
        quantity = value
    else:
        match = _RELATIVE.match(value)
        if not match:
            raise ApiError(422, "invalid_params", f"Quantity {value!r} is not an integer.")
        sign, digits = match.groups()
        quantity = current + int(digits) * (-1 if sign == "-" else 1) if sign else int(digits)
    if not 0 <= quantity <= MAX_QUANTITY:
        raise ApiError(
            422, "invalid_params", f"Quantity must be an integer between 0 and {MAX_QUANTITY}."
        )
    return quantity


def _size(body: dict[str, Any]) -> str | None:
    size = body.get("size")
    dyno_size = body.get("dyno_size")
    if dyno_size is not None:
        if not isinstance(dyno_size, dict):
            raise ApiError(422, "invalid_params", 'dyno_size must be {"name": "<size>"}.')
        named = dyno_size.get("name")
        if named is None and isinstance(dyno_size.get("id"), str):
            named = next((n for n in sizes.CEDAR if size_id(n) == dyno_size["id"]), None)
            if named is None:
                raise ApiError(422, "invalid_params", "No such dyno size id.")
        size = named
    if size is not None and (not isinstance(size, str) or not size.strip()):
        raise ApiError(422, "invalid_params", "Size must be a dyno size name.")
    return size
