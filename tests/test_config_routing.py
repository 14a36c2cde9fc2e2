"""The ``routing`` block and the legacy top-level ``groups``/``matrix`` (delta spec 2.5, 2.6).

Each error test asserts the message and where it points (line and setting path). The
equivalence tests show that a legacy file and its ``routing`` translation load to the same
effective groups, matrix and eviction decisions.
"""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from swapd.config import DEFAULT_GROUP, Config, ConfigError, load_config, parse_config
from swapd.core.eviction import GroupRule, priority_of, rule_for
from swapd.core.matrix import Matrix

ROOT = Path(__file__).parent.parent

MODELS = """
models:
  gemma: {cmd: "s --port ${PORT}"}
  qwen: {cmd: "s --port ${PORT}", aliases: [coder]}
  voxtral: {cmd: "s --port ${PORT}"}
  reranker: {cmd: "s --port ${PORT}"}
  big-70b: {cmd: "s --port ${PORT}"}
"""
MODEL_LINES = MODELS.count("\n")  # the first line after MODELS is this + 1

MATRIX_BODY = """
vars: {g: gemma, q: qwen, v: voxtral, e: reranker}
evict_costs: {v: 50, big-70b: 30}
sets:
  standard: "(g | q) & v"
  with_rerank: "(g | q) & v & e"
  solo: "big-70b"
  plus: "+standard & e"
"""

GROUPS_BODY = """
chat: {members: [gemma, qwen]}
tools: {swap: false, exclusive: false, persistent: true, members: [voxtral, reranker]}
"""


def indent(text: str, spaces: int) -> str:
    return textwrap.indent(text.strip("\n"), " " * spaces) + "\n"


def load(text: str) -> Config:
    return parse_config(MODELS + textwrap.dedent(text), file="test.yaml")


def problems(text: str) -> list[tuple[int, str, str]]:
    with pytest.raises(ConfigError) as info:
        load(text)
    return [(p.line - MODEL_LINES, p.path, p.message) for p in info.value.problems]


# --- equivalence ------------------------------------------------------------------------------


def test_routing_groups_load_like_top_level_groups() -> None:
    legacy = load("groups:\n" + indent(GROUPS_BODY, 2))
    routed = load("routing:\n  router:\n    settings:\n      groups:\n" + indent(GROUPS_BODY, 8))
    explicit = load(
        "routing:\n  router:\n    use: group\n    settings:\n      groups:\n"
        + indent(GROUPS_BODY, 8)
    )
    assert legacy.groups == routed.groups == explicit.groups
    assert routed.groups[DEFAULT_GROUP].members == ("big-70b",)
    assert routed.active_matrix is None
    for config in (legacy, routed, explicit):
        rule = rule_for(config)
        assert isinstance(rule, GroupRule)
        assert rule.blockers("qwen", {"gemma", "voxtral", "big-70b"}) == {"gemma", "big-70b"}
        assert rule.compatible("voxtral", "reranker")


def test_routing_matrix_loads_like_top_level_matrix() -> None:
    legacy = load("matrix:\n" + indent(MATRIX_BODY, 2))
    routed = load(
        "routing:\n  router:\n    use: matrix\n    settings:\n      matrix:\n"
        + indent(MATRIX_BODY, 8)
    )
    assert legacy.active_matrix == routed.active_matrix
    assert routed.active_matrix is not None
    assert dict(routed.active_matrix.evict_costs) == {"v": 50, "big-70b": 30}
    assert list(routed.active_matrix.sets) == ["standard", "with_rerank", "solo", "plus"]
    for config in (legacy, routed):
        # In matrix mode every model is its own unit; groups hold only (default).
        assert list(config.groups) == [DEFAULT_GROUP]
        assert config.groups[DEFAULT_GROUP].members == (
            "big-70b",
            "gemma",
            "qwen",
            "reranker",
            "voxtral",
        )
        rule = rule_for(config)
        assert isinstance(rule, Matrix)
        assert rule.blockers("reranker", {"gemma", "voxtral"}) == set()
        assert rule.blockers("qwen", {"gemma", "voxtral"}) == {"gemma"}
        assert rule.blockers("big-70b", {"gemma", "voxtral"}) == {"gemma", "voxtral"}


def test_use_picks_one_of_both_settings() -> None:
    text = (
        "routing:\n  router:\n    use: {use}\n    settings:\n      groups:\n"
        + indent(GROUPS_BODY, 8)
        + "      matrix:\n"
        + indent(MATRIX_BODY, 8)
    )
    as_groups = load(text.replace("{use}", "group"))
    assert as_groups.active_matrix is None
    assert set(as_groups.groups) == {"chat", "tools", DEFAULT_GROUP}
    as_matrix = load(text.replace("{use}", "matrix"))
    assert as_matrix.active_matrix is not None
    assert set(as_matrix.groups) == {DEFAULT_GROUP}
    assert dict(as_matrix.routing.router.settings.groups).keys() == {"chat", "tools"}


def test_scheduler_may_sit_next_to_legacy_groups_and_priorities_accept_aliases() -> None:
    config = load(
        "groups:\n"
        + indent(GROUPS_BODY, 2)
        + """
routing:
  scheduler:
    use: fifo
    settings:
      fifo:
        priority: {voxtral: 10, coder: 5, gemma: -1}
"""
    )
    assert priority_of(config, "voxtral") == 10
    # llama-swap accepts an alias key but never applies it; swapd applies it to its model.
    assert priority_of(config, "qwen") == 5
    assert priority_of(config, "gemma") == -1
    assert priority_of(config, "reranker") == 0
    assert priority_of(config, "not-a-model") == 0
    assert isinstance(rule_for(config), GroupRule)


def test_defaults_without_any_routing_keys() -> None:
    config = load("")
    assert config.routing.router.use == "group"
    assert config.routing.scheduler.use == "fifo"
    assert config.active_matrix is None
    assert priority_of(config, "gemma") == 0


# --- errors ------------------------------------------------------------------------------------

LEGACY_AND_NEW = (
    "config uses both the legacy top-level 'matrix'/'groups' keys and the new "
    "'routing.router' block; please migrate the top-level keys into 'routing.router' and "
    "remove them"
)


@pytest.mark.parametrize(
    "router",
    [
        "    use: group\n",
        "    settings:\n      groups: {x: {members: [gemma]}}\n",
        "    settings:\n      matrix: {sets: {s: gemma}}\n",
    ],
)
@pytest.mark.parametrize("legacy", ["groups: {y: {members: [qwen]}}\n", "matrix: {sets: {t: q}}\n"])
def test_legacy_keys_and_the_new_router_block(legacy: str, router: str) -> None:
    text = legacy.replace("{sets: {t: q}}", "{sets: {t: qwen}}") + "routing:\n  router:\n" + router
    assert problems(text) == [(3, "routing.router", LEGACY_AND_NEW)]


def test_an_empty_groups_mapping_is_not_a_legacy_router() -> None:
    config = load(
        "groups: {}\nrouting:\n  router:\n    use: matrix\n    settings:\n      matrix:\n"
        + indent(MATRIX_BODY, 8)
    )
    assert config.active_matrix is not None
    assert list(config.groups) == [DEFAULT_GROUP]


def test_top_level_groups_and_matrix_together() -> None:
    text = "groups: {y: {members: [qwen]}}\nmatrix:\n  sets: {t: qwen}\n"
    assert problems(text) == [(2, "matrix", "config cannot use both 'groups' and 'matrix'")]


def test_unknown_router_and_scheduler() -> None:
    text = """
routing:
  router:
    use: mesh
  scheduler:
    use: lifo
"""
    assert problems(text) == [
        (4, "routing.router.use", 'unknown router "mesh" (valid: group, matrix)'),
        (6, "routing.scheduler.use", 'unknown scheduler "lifo" (valid: fifo)'),
    ]


def test_use_matrix_needs_settings_matrix() -> None:
    text = "routing:\n  router:\n    use: matrix\n    settings:\n      groups: {}\n"
    assert problems(text) == [
        (
            3,
            "routing.router.use",
            "routing.router.use is 'matrix' but routing.router.settings.matrix is not set",
        )
    ]


def test_priorities_must_name_models_once() -> None:
    text = """
routing:
  scheduler:
    settings:
      fifo:
        priority:
          ghost: 3
          qwen: 2
          coder: 1
"""
    assert problems(text) == [
        (
            7,
            "routing.scheduler.settings.fifo.priority.ghost",
            'priority references unknown model "ghost"',
        ),
        (
            9,
            "routing.scheduler.settings.fifo.priority.coder",
            '"coder" and "qwen" both give the priority of model "qwen"; keep one',
        ),
    ]


def test_routing_group_members_are_checked_where_they_are_written() -> None:
    text = """
routing:
  router:
    settings:
      groups:
        chat: {members: [gemma, ghost, coder]}
        "(default)": {members: []}
"""
    base = "routing.router.settings.groups"
    assert problems(text) == [
        (7, f"{base}['(default)']", "the group name (default) is reserved"),
    ]
    # Members that are not model IDs are warnings (llama-swap v193 loaded such files),
    # reported where they are written; strict mode makes them errors.
    lenient = """
routing:
  router:
    settings:
      groups:
        chat: {members: [gemma, ghost, coder]}
"""
    warnings = load(lenient).warnings
    assert any(
        f"{base}.chat.members[1]" in w and "'ghost' is not a model ID" in w for w in warnings
    )
    assert any(
        f"{base}.chat.members[2]" in w and "'coder' is an alias of 'qwen'" in w for w in warnings
    )
    with pytest.raises(ConfigError):
        parse_config(MODELS + textwrap.dedent(lenient), file="test.yaml", strict=True)


@pytest.mark.parametrize(
    ("prefix", "base", "indent_by"),
    [
        ("matrix:\n", "matrix", 2),
        ("routing:\n  router:\n    use: matrix\n    settings:\n      matrix:\n", None, 8),
    ],
)
def test_matrix_errors_point_at_their_keys(prefix: str, base: str | None, indent_by: int) -> None:
    body = """
vars:
  g: gemma
  bad_key: qwen
  c: coder
evict_costs:
  g: 0
  nobody: 2
sets:
  ok: "g & voxtral"
  broken: "(g | voxtral"
  stranger: "g & who"
  dangling: "+elsewhere & g"
  loop: "+loop"
"""
    base = base or "routing.router.settings.matrix"
    first = prefix.count("\n")  # line of `vars:`, counted from 1 after MODELS
    found = problems(prefix + indent(body, indent_by))
    alias_hint = ' ("coder" is an alias of "qwen"; name the model ID)'
    assert found == [
        (
            first + 3,
            f"{base}.vars.bad_key",
            "var key \"bad_key\" must contain only alphanumeric, '-' or '.' characters and "
            "be 1-32 characters long",
        ),
        (first + 4, f"{base}.vars.c", 'var key "c" references unknown model "coder"' + alias_hint),
        (
            first + 6,
            f"{base}.evict_costs.g",
            'evict_cost for "g" must be a positive integer, got 0',
        ),
        (first + 7, f"{base}.evict_costs.nobody", 'evict_costs: unknown var or model "nobody"'),
        (
            first + 10,
            f"{base}.sets.broken",
            "matrix: set \"broken\": missing ')' for the '(' at position 0",
        ),
        (first + 11, f"{base}.sets.stranger", 'set "stranger": unknown var or model "who"'),
        (
            first + 12,
            f"{base}.sets.dangling",
            'matrix: set "dangling" references undefined set "elsewhere"',
        ),
        (
            first + 13,
            f"{base}.sets.loop",
            'matrix: circular reference detected involving set "loop"',
        ),
    ]


def test_a_matrix_without_sets() -> None:
    assert problems("matrix:\n  vars: {g: gemma}\n") == [
        (1, "matrix.sets", "matrix: matrix must define at least one set")
    ]


def test_a_non_integer_cost_is_a_typing_error() -> None:
    assert problems("matrix:\n  sets: {s: gemma}\n  evict_costs: {gemma: lots}\n") == [
        (3, "matrix.evict_costs.gemma", "expected a whole number, found 'lots'")
    ]


# --- the example file ---------------------------------------------------------------------------


def test_the_matrix_example_loads_and_uses_the_matrix() -> None:
    config = load_config(ROOT / "examples/matrix.yaml")
    rule = rule_for(config)
    assert isinstance(rule, Matrix)
    assert rule.choose("qwen", {"gemma", "voxtral"}).set_name == "standard"
    assert priority_of(config, "voxtral") == 10
    assert priority_of(config, "qwen") == 5  # through its alias `coder`
    result = subprocess.run(
        [sys.executable, "-m", "swapd", "check-config", "examples/matrix.yaml"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
        cwd=ROOT,
    )
    assert result.returncode == 0, result.stderr
    assert "(ok)" in result.stdout
