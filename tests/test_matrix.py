"""The matrix solver (``core/matrix.py``): the DSL, expansion, and what a request evicts.

The worked example is the delta spec's (section 2.6). The properties compare the solver,
which expands lazily onto the running models and prunes, with a brute force over the full,
unpruned expansion of random expressions.
"""

from __future__ import annotations

import itertools

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from swapd.core.matrix import Matrix, MatrixProblems, compile_matrix

MODELS = {"gemma", "qwen", "voxtral", "reranker", "big-70b"}
SPEC_VARS = {"g": "gemma", "q": "qwen", "v": "voxtral", "e": "reranker"}
SPEC_SETS = {
    "standard": "(g | q) & v",
    "with_rerank": "(g | q) & v & e",
    "solo": "big-70b",
    "plus": "+standard & e",
}


def spec_matrix() -> Matrix:
    return compile_matrix(
        vars=SPEC_VARS,
        sets=SPEC_SETS,
        evict_costs={"v": 50, "big-70b": 30},
        models=MODELS,
    )


def messages(**definition: object) -> list[tuple[tuple[str, ...], str]]:
    kwargs: dict[str, object] = {"vars": {}, "evict_costs": {}, "models": MODELS}
    kwargs.update(definition)
    with pytest.raises(MatrixProblems) as info:
        compile_matrix(**kwargs)  # type: ignore[arg-type]
    return [(p.where, p.message) for p in info.value.problems]


# --- the spec's worked example -------------------------------------------------------------


def test_request_for_a_model_that_fits_next_to_the_running_ones_evicts_nothing() -> None:
    choice = spec_matrix().choose("reranker", {"gemma", "voxtral"})
    assert choice.evict == ()
    assert choice.set_name == "with_rerank"
    assert choice.cost == 0
    assert choice.target == ("gemma", "reranker", "voxtral")


def test_equal_costs_go_to_the_earlier_set() -> None:
    matrix = spec_matrix()
    choice = matrix.choose("qwen", {"gemma", "voxtral"})
    # standard {q,v} and with_rerank {q,v,e} both cost 1 (gemma): standard is defined first.
    assert (choice.set_name, choice.evict, choice.cost) == ("standard", ("gemma",), 1)
    assert choice.describe() == (
        'matrix: model=qwen set=standard dsl="(g | q) & v" evict=[gemma] '
        "target=[qwen voxtral] cost=1"
    )
    assert matrix.blockers("qwen", {"gemma", "voxtral"}) == {"gemma"}


def test_a_model_alone_in_its_set_evicts_everything_else() -> None:
    choice = spec_matrix().choose("big-70b", {"gemma", "voxtral"})
    assert choice.evict == ("gemma", "voxtral")
    assert (choice.set_name, choice.cost) == ("solo", 51)


def test_a_running_model_evicts_nothing() -> None:
    choice = spec_matrix().choose("gemma", {"gemma", "big-70b"})
    assert choice.evict == ()
    assert choice.set_name is None


def test_a_model_in_no_set_runs_alone() -> None:
    matrix = compile_matrix(vars={}, sets={"s": "gemma & qwen"}, evict_costs={}, models=MODELS)
    choice = matrix.choose("voxtral", {"gemma", "qwen"})
    assert choice.evict == ("gemma", "qwen")
    assert (choice.set_name, choice.target, choice.cost) == (None, ("voxtral",), 2)
    # and anything in a set evicts it
    assert matrix.blockers("gemma", {"voxtral"}) == {"voxtral"}


def test_compatible_means_some_set_holds_both() -> None:
    matrix = spec_matrix()
    assert matrix.compatible("gemma", "voxtral")
    assert matrix.compatible("reranker", "qwen")  # with_rerank and plus
    assert not matrix.compatible("gemma", "qwen")
    assert not matrix.compatible("big-70b", "gemma")
    assert matrix.compatible("big-70b", "big-70b")


def test_the_cheapest_set_wins_over_an_earlier_dearer_one() -> None:
    matrix = compile_matrix(
        vars={},
        sets={"first": "qwen & gemma", "second": "qwen & voxtral"},
        evict_costs={"voxtral": 5},
        models=MODELS,
    )
    # first evicts voxtral (5), second evicts gemma (1)
    assert matrix.choose("qwen", {"gemma", "voxtral"}).set_name == "second"
    assert matrix.blockers("qwen", {"gemma", "voxtral"}) == {"gemma"}


def test_within_a_set_the_earlier_alternative_wins_a_tie() -> None:
    matrix = compile_matrix(
        vars={}, sets={"s": "voxtral & gemma | voxtral & qwen"}, evict_costs={}, models=MODELS
    )
    assert matrix.blockers("voxtral", {"gemma", "qwen"}) == {"qwen"}
    flipped = compile_matrix(
        vars={}, sets={"s": "voxtral & qwen | voxtral & gemma"}, evict_costs={}, models=MODELS
    )
    assert flipped.blockers("voxtral", {"gemma", "qwen"}) == {"gemma"}


def test_a_referenced_set_comes_before_the_set_that_references_it() -> None:
    # `a` is defined first but uses `b`, so `b` is tried first: both cost 1 for qwen.
    matrix = compile_matrix(
        vars={},
        sets={"a": "+b | qwen & voxtral", "b": "qwen & gemma"},
        evict_costs={},
        models=MODELS,
    )
    assert [s.name for s in matrix.sets] == ["b", "a"]
    choice = matrix.choose("qwen", {"gemma", "voxtral"})
    assert (choice.set_name, choice.evict) == ("b", ("voxtral",))


def test_vars_shadow_model_ids_and_ids_work_without_vars() -> None:
    matrix = compile_matrix(
        vars={"gemma": "qwen"}, sets={"s": "gemma & voxtral"}, evict_costs={}, models=MODELS
    )
    assert matrix.alternatives("s") == (frozenset({"qwen", "voxtral"}),)


# --- the DSL and expansion -------------------------------------------------------------------


@pytest.mark.parametrize(
    ("dsl", "expected"),
    [
        ("gemma", [{"gemma"}]),
        ("gemma | qwen & voxtral", [{"gemma"}, {"qwen", "voxtral"}]),  # & binds tighter
        ("(gemma | qwen) & voxtral", [{"gemma", "voxtral"}, {"qwen", "voxtral"}]),
        ("  ( gemma|qwen )&(voxtral |reranker) ", None),
        ("gemma & gemma", [{"gemma"}]),
        ("gemma & voxtral | gemma", [{"gemma", "voxtral"}]),  # contained in an earlier one
        ("gemma | gemma & voxtral", [{"gemma"}, {"gemma", "voxtral"}]),  # kept: may tie first
        ("big-70b", [{"big-70b"}]),
    ],
)
def test_expansion(dsl: str, expected: list[set[str]] | None) -> None:
    matrix = compile_matrix(vars={}, sets={"s": dsl}, evict_costs={}, models=MODELS)
    if expected is None:
        expected = [
            {"gemma", "voxtral"},
            {"gemma", "reranker"},
            {"qwen", "voxtral"},
            {"qwen", "reranker"},
        ]
    assert [set(a) for a in matrix.alternatives("s")] == expected


def test_references_inline_other_sets_and_dots_underscores_are_identifier_characters() -> None:
    matrix = compile_matrix(
        vars={},
        sets={"base": "m_1.q4 | m-2", "more": "+base & m-3"},
        evict_costs={},
        models={"m_1.q4", "m-2", "m-3"},
    )
    assert [set(a) for a in matrix.alternatives("more")] == [{"m_1.q4", "m-3"}, {"m-2", "m-3"}]


def test_a_wide_product_is_not_expanded_to_solve() -> None:
    # 2**40 alternatives in full; the solver only looks at the running models.
    models = {f"a{i}" for i in range(40)} | {f"b{i}" for i in range(40)}
    dsl = " & ".join(f"(a{i} | b{i})" for i in range(40))
    matrix = compile_matrix(vars={}, sets={"wide": dsl}, evict_costs={}, models=models)
    assert matrix.blockers("a0", {"b0", "a1", "b2"}) == {"b0"}
    assert matrix.compatible("a3", "b7")
    assert not matrix.compatible("a3", "b3")


@pytest.mark.parametrize(
    ("dsl", "message"),
    [
        ("", 'matrix: set "s": empty DSL expression'),
        ("   ", 'matrix: set "s": empty DSL expression'),
        ("gemma # x", "matrix: set \"s\": unexpected character '#' at position 6"),
        ("gemma &", 'matrix: set "s": unexpected end of expression'),
        ("gemma qwen", "matrix: set \"s\": unexpected 'qwen' at position 6"),
        ("(gemma | qwen", "matrix: set \"s\": missing ')' for the '(' at position 0"),
        ("gemma)", "matrix: set \"s\": unexpected ')' at position 5"),
        ("| gemma", "matrix: set \"s\": unexpected '|' at position 0"),
        ("+(gemma)", "matrix: set \"s\": '+' must be followed by a set name (position 1)"),
    ],
)
def test_dsl_syntax_errors(dsl: str, message: str) -> None:
    assert messages(sets={"s": dsl}) == [(("sets", "s"), message)]


def test_name_errors() -> None:
    found = messages(
        vars={"g": "gemma", "bad_key": "qwen", "x": "ghost", "a": "alias-of-qwen"},
        sets={"s": "g & nope | +missing", "t": "alias-of-qwen"},
        evict_costs={"g": 0, "nobody": 2, "gemma": 3, "voxtral": -1},
        aliases={"alias-of-qwen": "qwen"},
    )
    hint = ' ("alias-of-qwen" is an alias of "qwen"; name the model ID)'
    assert found == [
        (
            ("vars", "bad_key"),
            "var key \"bad_key\" must contain only alphanumeric, '-' or '.' characters and "
            "be 1-32 characters long",
        ),
        (("vars", "x"), 'var key "x" references unknown model "ghost"'),
        (("vars", "a"), 'var key "a" references unknown model "alias-of-qwen"' + hint),
        (("evict_costs", "g"), 'evict_cost for "g" must be a positive integer, got 0'),
        (("evict_costs", "nobody"), 'evict_costs: unknown var or model "nobody"'),
        (("evict_costs", "voxtral"), 'evict_cost for "voxtral" must be a positive integer, got -1'),
        (("sets", "s"), 'set "s": unknown var or model "nope"'),
        (("sets", "s"), 'matrix: set "s" references undefined set "missing"'),
        (("sets", "t"), 'set "t": unknown var or model "alias-of-qwen"' + hint),
    ]


def test_two_costs_for_one_model_are_an_error() -> None:
    found = messages(vars={"g": "gemma"}, sets={"s": "g"}, evict_costs={"g": 2, "gemma": 3})
    assert found == [
        (("evict_costs", "gemma"), 'evict_costs: "gemma" and "g" both name model "gemma"; keep one')
    ]


def test_cycles_and_empty_matrices() -> None:
    assert messages(sets={}) == [(("sets",), "matrix: matrix must define at least one set")]
    assert messages(sets={"a": "+b & gemma", "b": "+a", "c": "+c"}) == [
        (("sets", "a"), 'matrix: circular reference detected involving set "a"'),
        (("sets", "c"), 'matrix: circular reference detected involving set "c"'),
    ]


# --- properties: the pruned, lazy solver equals brute force over the full expansion -------------

NAMES = ["m0", "m1", "m2", "m3", "m4"]


def _expressions() -> st.SearchStrategy[str]:
    leaf = st.sampled_from(NAMES)
    return st.recursive(
        leaf,
        lambda inner: st.one_of(
            st.tuples(inner, st.sampled_from([" & ", " | "]), inner).map(
                lambda t: f"({t[0]}{t[1]}{t[2]})"
            ),
            st.tuples(inner, inner).map(lambda t: f"{t[0]} | {t[1]}"),
            st.tuples(inner, inner).map(lambda t: f"{t[0]} & {t[1]}"),
        ),
        max_leaves=6,
    )


def _full(expr: str) -> list[frozenset[str]]:
    """Every alternative of ``expr`` in expression order, nothing pruned (by eval)."""

    class Fam:
        def __init__(self, alts: list[frozenset[str]]) -> None:
            self.alts = alts

        def __or__(self, other: Fam) -> Fam:
            return Fam(self.alts + other.alts)

        def __and__(self, other: Fam) -> Fam:
            return Fam([a | b for a, b in itertools.product(self.alts, other.alts)])

    scope = {name: Fam([frozenset({name})]) for name in NAMES}
    return eval(expr, {"__builtins__": {}}, scope).alts  # the generated test input


@settings(max_examples=300, deadline=None)
@given(
    sets=st.lists(_expressions(), min_size=1, max_size=3),
    costs=st.dictionaries(st.sampled_from(NAMES), st.integers(1, 4)),
    running=st.sets(st.sampled_from(NAMES)),
    target=st.sampled_from(NAMES),
)
def test_the_solver_matches_brute_force(
    sets: list[str], costs: dict[str, int], running: set[str], target: str
) -> None:
    definition = {f"s{i}": dsl for i, dsl in enumerate(sets)}
    matrix = compile_matrix(vars={}, sets=definition, evict_costs=costs, models=set(NAMES))
    choice = matrix.choose(target, running)

    def cost(alternative: frozenset[str]) -> int:
        return sum(costs.get(m, 1) for m in running - alternative)

    candidates = [
        (cost(alt), name, alt)
        for name, dsl in definition.items()
        for alt in _full(dsl)
        if target in alt
    ]
    if target in running:
        assert choice.evict == ()
    elif not candidates:
        assert set(choice.evict) == running
    else:
        best_cost, best_set, best = min(candidates, key=lambda c: c[0])  # first minimum
        assert choice.cost == best_cost == min(cost(a) for _, _, a in candidates)
        assert set(choice.evict) == running - best
        assert choice.set_name == best_set
        assert target in choice.target
        assert set(choice.target) == (running - set(choice.evict)) | {target}
    assert matrix.blockers(target, running) == frozenset(choice.evict)
    for a, b in itertools.combinations(NAMES, 2):
        together = any({a, b} <= alt for dsl in definition.values() for alt in _full(dsl))
        assert matrix.compatible(a, b) == together
