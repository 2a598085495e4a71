"""The task registry (tasks.py): names, duplicates, importing task modules."""

from __future__ import annotations

import pytest

import pgdyno
from pgdyno import tasks
from pgdyno.errors import ConfigError


@pgdyno.task("unit.registered")
def registered() -> None: ...


def test_task_name_defaults_to_the_function_name():
    @pgdyno.task()
    def unit_default_name() -> None: ...

    assert tasks.lookup("unit_default_name") is unit_default_name


def test_registering_another_function_under_a_taken_name_is_an_error():
    with pytest.raises(ConfigError, match=r"task 'unit\.registered' is already registered by"):

        @pgdyno.task("unit.registered")
        def other_registered() -> None: ...

    pgdyno.task("unit.registered")(
        registered
    )  # the same function again is fine (a module imported twice)


def test_importing_a_missing_task_module_says_to_check_import_and_path():
    with pytest.raises(ConfigError, match="cannot import task module 'unit_no_such_mod'"):
        tasks.import_modules(["unit_no_such_mod"])
