"""rtcp.Config: every field is checked when the Config is made, not at first use."""

from __future__ import annotations

import dataclasses
import enum
import fractions
import math
import typing

import pytest

from rtcp import Config
from rtcp.config import MIN_BUFFER


def test_defaults_are_valid_and_as_specified() -> None:
    cfg = Config()
    assert (cfg.max_datagram, cfg.initial_rto, cfg.min_rto, cfg.max_rto, cfg.msl) == (
        1472, 1.0, 0.2, 60.0, 30.0)
    assert cfg.nodelay is True and cfg.keepalive_idle is None


@pytest.mark.parametrize("changes", [
    {"backlog": 1.5}, {"send_buffer": 4096.0}, {"keepalive_count": True},
    {"nodelay": "no"}, {"sack": 1}, {"connect_timeout": "5"},
    {"keepalive_idle": "never"}, {"congestion_control": None},
])
def test_wrong_types_are_type_errors(changes: dict) -> None:
    with pytest.raises(TypeError, match=next(iter(changes))):
        Config(**changes)


@pytest.mark.parametrize("changes", [
    {"send_buffer": MIN_BUFFER - 1}, {"receive_buffer": 1}, {"max_datagram": 70000},
    {"max_datagram": 50}, {"min_rto": 2.0, "max_rto": 1.0}, {"connect_timeout": 0},
    {"delayed_ack": -0.1}, {"backlog": 0}, {"initial_window": 0},
    {"congestion_control": "cubic"}, {"keepalive_idle": -1.0}, {"min_rto": math.nan},
    {"delayed_ack": math.nan}, {"keepalive_idle": math.nan},
    {"delayed_ack": 0.5}, {"msl": math.inf}, {"max_rto": math.inf}, {"initial_rto": math.inf},
    {"autocork": 0.02}, {"autocork": -1.0},
])
def test_out_of_range_values_are_value_errors(changes: dict) -> None:
    with pytest.raises(ValueError, match="Config: "):
        Config(**changes)


def test_numbers_of_either_kind_are_fine_where_seconds_are_asked() -> None:
    cfg = Config(connect_timeout=3, keepalive_idle=5, send_buffer=MIN_BUFFER)
    assert cfg.connect_timeout == 3 and cfg.keepalive_idle == 5


def test_replace_validates_again_and_config_is_frozen() -> None:
    cfg = Config()
    assert cfg.replace(backlog=4).backlog == 4
    with pytest.raises(TypeError):
        cfg.replace(backlog=4.5)
    with pytest.raises(dataclasses.FrozenInstanceError):
        cfg.backlog = 3  # type: ignore[misc]


def test_integer_and_real_types_become_plain_numbers() -> None:
    class Backlog(enum.IntEnum):
        SMALL = 16

    cfg = Config(backlog=Backlog.SMALL, min_rto=fractions.Fraction(1, 4), connect_timeout=3)
    assert cfg.backlog == 16 and type(cfg.backlog) is int
    assert cfg.min_rto == 0.25 and type(cfg.min_rto) is float
    assert type(cfg.connect_timeout) is float


def test_a_subclass_may_add_fields_of_its_own() -> None:
    @dataclasses.dataclass(frozen=True, slots=True)
    class AppConfig(Config):
        retries: int = 3
        label: typing.Optional[str] = None  # noqa: UP045 (a real type object, not a string)

    cfg = AppConfig(retries=4, backlog=8)
    assert (cfg.retries, cfg.backlog, cfg.label) == (4, 8, None)
    with pytest.raises(TypeError, match="retries"):
        AppConfig(retries=4.5)


def test_default_config_is_a_frozen_default() -> None:
    """Calls without config= share one instance: it must equal Config() and be immutable."""
    import dataclasses

    from rtcp.config import DEFAULT_CONFIG

    assert DEFAULT_CONFIG == Config()
    with pytest.raises(dataclasses.FrozenInstanceError):
        DEFAULT_CONFIG.max_datagram = 1  # type: ignore[misc]


def test_no_limit_timeouts_may_be_infinite() -> None:
    """connect/user/close timeouts of inf mean "no limit", a caller's choice."""
    cfg = Config(connect_timeout=math.inf, user_timeout=math.inf, close_timeout=math.inf)
    assert cfg.user_timeout == math.inf


def test_an_unknown_congestion_control_is_named_with_the_choices() -> None:
    with pytest.raises(ValueError, match="'westwood', 'newreno' or 'bbr', not 'cubic'"):
        Config(congestion_control="cubic")
