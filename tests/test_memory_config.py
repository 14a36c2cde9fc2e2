"""The memory keys of the config: ``memory.budgets`` and each model's ``footprint``."""

from __future__ import annotations

import textwrap

import attrs
import pytest

from swapd.config import Config, ConfigError, parse_config
from swapd.core.memory import (
    RAM,
    Footprint,
    FootprintSource,
    budgets_of,
    choose_footprint,
    declared_footprint,
)
from swapd.errors import ConfigProblem

GiB = 1024**3


def load(text: str) -> Config:
    return parse_config(textwrap.dedent(text), file="test.yaml", environ={})


def problems(text: str) -> list[ConfigProblem]:
    with pytest.raises(ConfigError) as info:
        load(text)
    return list(info.value.problems)


GOOD = """
memory:
  budgets:
    ram: 80%
    gpu0: 22GiB
models:
  big:
    cmd: server --port ${PORT}
    footprint:
      gpu0: 9GiB
      ram: 2GiB
    footprintLearn: false
  small:
    cmd: server --port ${PORT}
"""


def test_memory_keys_load_and_default() -> None:
    config = load(GOOD)
    assert dict(config.memory.budgets) == {"ram": "80%", "gpu0": "22GiB"}
    assert dict(config.models["big"].footprint) == {"gpu0": "9GiB", "ram": "2GiB"}
    assert config.models["big"].footprint_learn is False
    assert config.models["small"].footprint == {}
    assert config.models["small"].footprint_learn is True
    assert dict(load("models: {}").memory.budgets) == {}


def test_budgets_resolve_against_capacities() -> None:
    config = load(GOOD)
    assert budgets_of(config, {RAM: 100 * GiB, "gpu0": 24 * GiB}) == {
        RAM: 80 * GiB,
        "gpu0": 22 * GiB,
    }
    # A share of a device this machine lacks limits nothing; a fixed size still applies.
    assert budgets_of(config, {}) == {"gpu0": 22 * GiB}


def test_declared_footprint() -> None:
    config = load(GOOD)
    declared = declared_footprint(config.models["big"])
    assert declared is not None and declared.source is FootprintSource.DECLARED
    assert dict(declared.bytes_on) == {"gpu0": 9 * GiB, RAM: 2 * GiB}
    assert declared_footprint(config.models["small"]) is None


def test_bad_budgets_are_reported_with_their_lines() -> None:
    found = problems(
        """
        memory:
          budgets:
            vram: 10GiB
            gpu0: lots
            ram: 120%
        models: {}
        """
    )
    assert [(p.line, p.path) for p in found] == [
        (4, "memory.budgets.vram"),
        (5, "memory.budgets.gpu0"),
        (6, "memory.budgets.ram"),
    ]
    assert "unknown device 'vram'; expected `ram` or `gpu<N>`" in found[0].message
    assert "'lots' is not a size" in found[1].message and "80%" in found[1].message
    assert "out of range" in found[2].message


def test_bad_footprints_are_reported_with_their_lines() -> None:
    found = problems(
        """
        models:
          m:
            cmd: server --port ${PORT}
            footprint:
              gpu0: 9 parsecs
              cpu: 1GiB
        """
    )
    assert [(p.line, p.path) for p in found] == [
        (6, "models.m.footprint.gpu0"),
        (7, "models.m.footprint.cpu"),
    ]
    assert "'9 parsecs' is not a size" in found[0].message
    assert "unknown device 'cpu'" in found[1].message


def test_memory_must_be_a_map() -> None:
    (problem,) = problems("memory: 80%\nmodels: {}\n")
    assert problem.path == "memory"


def test_choose_footprint_prefers_learned_then_declared_then_estimate() -> None:
    config = load(GOOD)
    big, small = config.models["big"], config.models["small"]
    learned = Footprint(bytes_on={"gpu0": 10 * GiB}, source=FootprintSource.LEARNED)
    estimate = Footprint(bytes_on={RAM: 3 * GiB})
    # big declares and says footprintLearn: false, so its declaration wins over a measurement.
    chosen = choose_footprint(big, learned, estimate)
    assert chosen is not None and chosen.source is FootprintSource.DECLARED
    learning_big = attrs.evolve(big, footprint_learn=True)
    assert choose_footprint(learning_big, learned, estimate) is learned
    declared = choose_footprint(learning_big, None, estimate)
    assert declared is not None and declared.source is FootprintSource.DECLARED
    assert choose_footprint(small, None, estimate) is estimate
    assert choose_footprint(small, None, None) is None


def test_learned_footprint_is_the_peak_of_samples() -> None:
    first = Footprint(bytes_on={RAM: 5, "gpu0": 100}, source=FootprintSource.LEARNED)
    second = Footprint(bytes_on={RAM: 7, "gpu1": 3}, source=FootprintSource.LEARNED)
    peak = first.peak_with(second)
    assert dict(peak.bytes_on) == {RAM: 7, "gpu0": 100, "gpu1": 3}
    assert peak.source is FootprintSource.LEARNED
