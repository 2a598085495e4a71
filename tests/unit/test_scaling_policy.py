"""The scaling policy is a pure function: a table of cases."""

from __future__ import annotations

import pytest

from pgdyno.errors import ConfigError
from pgdyno.scaling.policy import (
    Load,
    Rule,
    may_scale_to_zero,
    parse_rule,
    policies,
    scale_up_target,
)


def policy(*rules: Rule):
    return next(iter(policies(rules).values()))


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("reports=winston", Rule("reports", "winston")),
        (
            "reports=winston,max=3,per=2,size=performance-l,linger=45s",
            Rule("reports", "winston", 3, 2, "Performance-L", 45.0),
        ),
        ("reports=winston,linger=0", Rule("reports", "winston", linger_s=0.0)),
        (" reports = winston , max=2 ", Rule("reports", "winston", max_quantity=2)),
    ],
)
def test_parse_rule(text, expected):
    assert parse_rule(text) == expected


def test_parse_rule_uses_the_default_linger_when_none_is_given():
    assert parse_rule("reports=winston", default_linger=5.0).linger_s == 5.0


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("reports", "QUEUE=TYPE"),
        ("=winston", "QUEUE=TYPE"),
        ("reports=win ston", "QUEUE=TYPE"),
        ("reports=winston,max=0", "max must be at least 1"),
        ("reports=winston,per=x", "per must be a whole number"),
        ("reports=winston,color=red", "unknown option 'color'"),
        ("reports=winston,max", "needs a value"),
        ("reports=winston,linger=soon", "not a duration"),
        # issue 12, scenario 9: sizes Heroku refuses are refused at dispatcher start.
        ("reports=winston,size=1X", r"Heroku dyno size \(Heroku renamed it: write Standard-1X"),
        ("reports=winston,size=bogus-size", "not a Heroku dyno size; use Eco, Basic"),
        ("reports=winston,size=dyno-2c", "not a Heroku dyno size"),
        ("reports=winston,size=eco,max=2", "at most one dyno per process type"),
    ],
)
def test_bad_rules_say_what_is_wrong(text, message):
    with pytest.raises(ConfigError, match=message):
        parse_rule(text)


@pytest.mark.parametrize(
    ("size", "canonical"),
    [
        ("standard-1x", "Standard-1X"),
        ("Standard-1X", "Standard-1X"),
        ("PERFORMANCE-L", "Performance-L"),
        ("performance-l-ram", "Performance-L-RAM"),
        ("private-2xl", "Private-2XL"),
        ("dyno-2c-8gb", "dyno-2c-8gb"),
        ("Dyno-1C-0.5GB", "dyno-1c-0.5gb"),
    ],
)
def test_sizes_are_case_insensitive_and_kept_in_heroku_spelling(size, canonical):
    assert parse_rule(f"reports=winston,max=2,size={size}").dyno_size == canonical


def test_queues_of_one_type_must_agree_on_size():
    with pytest.raises(ConfigError, match="different sizes"):
        policies(
            [
                Rule("a", "winston", dyno_size="performance-l"),
                Rule("b", "winston", dyno_size="standard-2x"),
            ]
        )


def test_a_queue_may_have_only_one_rule():
    with pytest.raises(ConfigError, match="two --scale rules"):
        policies([Rule("a", "winston"), Rule("a", "other")])


@pytest.mark.parametrize(
    ("max_q", "per", "ready", "running", "current", "expected"),
    [
        (1, 1, 0, 0, 0, None),  # nothing to do
        (1, 1, 1, 0, 0, 1),  # spin up from zero
        (1, 1, 5, 0, 0, 1),  # capped by max
        (3, 1, 2, 0, 0, 2),  # one per job
        (3, 2, 5, 0, 0, 3),  # ceil(5 / 2)
        (3, 2, 1, 0, 0, 1),  # at least one
        (3, 1, 0, 3, 3, None),  # already enough
        (3, 1, 1, 0, 2, None),  # never scale down to a smaller non-zero number
        (3, 1, 0, 1, 0, 1),  # a running job with no dyno (rescued soon): keep one
        (3, 1, 2, 1, 1, 3),  # ready and running both count
        (3, 1, 1, 0, None, 1),  # unknown current quantity
    ],
)
def test_scale_up_target(max_q, per, ready, running, current, expected):
    p = policy(Rule("reports", "winston", max_q, per))
    assert scale_up_target(p, {"reports": Load(ready, running)}, current) == expected


def test_several_queues_of_one_type_add_up():
    p = policy(Rule("a", "winston", 4, 2), Rule("b", "winston", 4, 1))
    assert scale_up_target(p, {"a": Load(3, 0), "b": Load(1, 0)}, 0) == 3  # ceil(1.5 + 1)


@pytest.mark.parametrize(
    ("ready", "running", "expected"),
    [
        (0, 0, True),
        (1, 0, False),
        (0, 1, False),
    ],
)
def test_scale_to_zero_only_when_nothing_is_ready_or_running(ready, running, expected):
    p = policy(Rule("a", "winston"), Rule("b", "winston"))
    assert may_scale_to_zero(p, {"a": Load(0, 0), "b": Load(ready, running)}) is expected
