"""llama-swap's matrix router: which models may run together, and what to evict for a request.

A matrix names *sets*, each a small expression over models::

    vars: {g: gemma, q: qwen, v: voxtral, e: reranker}
    evict_costs: {v: 50}
    sets:
      standard:    "(g | q) & v"        # gemma or qwen, together with voxtral
      with_rerank: "(g | q) & v & e"
      plus:        "+standard & e"      # inlines the set `standard`

The DSL: identifiers of letters, digits, ``_``, ``-`` and ``.`` (a var first, else a model
ID; aliases are not accepted); ``&`` binds tighter than ``|``; ``( )`` groups; ``+name``
inlines another set; whitespace is ignored. Each expression stands for a family of
*alternatives* (concrete model sets): ``a | b`` offers the alternatives of both sides in
order, ``a & b`` the union of one alternative from each side (left-major order). A set says
which models *may* run side by side; only the requested model is started.

The solver, for a requested model X while the models R occupy slots:

1. X ∈ R: nothing is evicted;
2. otherwise every alternative containing X costs the summed ``evict_costs`` (default 1) of
   the members of R outside it; the cheapest wins; ties go to the earlier set (definition
   order, except that a set used through ``+ref`` comes before the set that uses it), then
   to the earlier alternative in expression order;
3. R minus the winner is evicted; if X is in no set at all, all of R is evicted.

Efficiency. Expressions are never expanded eagerly (``(a|b) & (c|d) & ...`` doubles with
every factor). The solver only cares which members of R and X an alternative holds, so it
expands each expression *projected* onto that small universe, and drops every alternative
contained in an earlier one: such an alternative can never win (the earlier one holds X
whenever it does, costs no more, and comes first), so the answer is exactly that of the full
expansion. Results are cached per universe.

Pure: standard library and attrs only. This module imports nothing from swapd, because
``config/routing.py`` uses it to check matrix definitions at load time (the one place the
config layer calls into ``core``); the eviction side is wired in ``eviction.py``.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping, Sequence, Set

import attrs

__all__ = [
    "Matrix",
    "MatrixChoice",
    "MatrixProblem",
    "MatrixProblems",
    "compile_matrix",
    "parse_dsl",
]

#: llama-swap's rule for var keys (the DSL itself also allows ``_`` in identifiers).
VAR_KEY = re.compile(r"[a-zA-Z0-9.-]{1,32}")
_IDENT_CHARS = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_-.")
_CACHE_LIMIT = 4096

Alternatives = tuple[frozenset[str], ...]


# --- errors ---------------------------------------------------------------------------------


@attrs.frozen
class MatrixProblem:
    """One thing wrong with a matrix. ``where`` is the key path inside the matrix mapping
    (``("sets", "standard")``, ``("vars", "g")``, or ``()`` for the matrix as a whole)."""

    where: tuple[str, ...]
    message: str


class MatrixProblems(ValueError):
    """A matrix that cannot be compiled; carries every problem found."""

    def __init__(self, problems: Sequence[MatrixProblem]) -> None:
        super().__init__("; ".join(p.message for p in problems))
        self.problems = tuple(problems)


class _SyntaxProblem(ValueError):
    pass


# --- the expression tree ----------------------------------------------------------------------


@attrs.frozen
class Name:
    """An identifier as written (resolved to a model ID by ``compile_matrix``)."""

    name: str


@attrs.frozen
class Ref:
    """``+name``: the alternatives of another set."""

    name: str


@attrs.frozen
class AnyOf:
    """``a | b | ...``"""

    items: tuple[Node, ...]


@attrs.frozen
class AllOf:
    """``a & b & ...``"""

    items: tuple[Node, ...]


Node = Name | Ref | AnyOf | AllOf


def _tokens(text: str) -> list[tuple[int, str]]:
    """(position, token) pairs; a token is an identifier or one of ``& | ( ) +``."""
    out: list[tuple[int, str]] = []
    i = 0
    while i < len(text):
        char = text[i]
        if char.isspace():
            i += 1
        elif char in "&|()+":
            out.append((i, char))
            i += 1
        elif char in _IDENT_CHARS:
            start = i
            while i < len(text) and text[i] in _IDENT_CHARS:
                i += 1
            out.append((start, text[start:i]))
        else:
            raise _SyntaxProblem(f"unexpected character {char!r} at position {i}")
    return out


class _Parser:
    """Recursive descent: expr := term ('|' term)*; term := factor ('&' factor)*;
    factor := ident | '+' ident | '(' expr ')'."""

    def __init__(self, text: str) -> None:
        self.tokens = _tokens(text)
        self.index = 0

    def peek(self) -> str | None:
        return self.tokens[self.index][1] if self.index < len(self.tokens) else None

    def take(self) -> tuple[int, str]:
        if self.index >= len(self.tokens):
            raise _SyntaxProblem("unexpected end of expression")
        token = self.tokens[self.index]
        self.index += 1
        return token

    def expression(self) -> Node:
        items = [self.term()]
        while self.peek() == "|":
            self.take()
            items.append(self.term())
        return items[0] if len(items) == 1 else AnyOf(tuple(items))

    def term(self) -> Node:
        items = [self.factor()]
        while self.peek() == "&":
            self.take()
            items.append(self.factor())
        return items[0] if len(items) == 1 else AllOf(tuple(items))

    def factor(self) -> Node:
        position, symbol = self.take()
        if symbol == "(":
            inner = self.expression()
            if self.peek() != ")":
                raise _SyntaxProblem(f"missing ')' for the '(' at position {position}")
            self.take()
            return inner
        if symbol == "+":
            at, name = self.take()
            if name[0] not in _IDENT_CHARS:
                raise _SyntaxProblem(f"'+' must be followed by a set name (position {at})")
            return Ref(name)
        if symbol[0] in _IDENT_CHARS:
            return Name(symbol)
        raise _SyntaxProblem(f"unexpected {symbol!r} at position {position}")


def parse_dsl(text: str) -> Node:
    """Parse one set expression. Raises ValueError with the reason (no ``matrix:`` prefix)."""
    if not text.strip():
        raise _SyntaxProblem("empty DSL expression")
    parser = _Parser(text)
    node = parser.expression()
    if parser.index < len(parser.tokens):
        position, symbol = parser.tokens[parser.index]
        raise _SyntaxProblem(f"unexpected {symbol!r} at position {position}")
    return node


def _refs(node: Node) -> list[str]:
    """Set names referenced by ``node``, in expression order."""
    if isinstance(node, Ref):
        return [node.name]
    if isinstance(node, Name):
        return []
    return [r for item in node.items for r in _refs(item)]


def _names(node: Node) -> list[str]:
    if isinstance(node, Name):
        return [node.name]
    if isinstance(node, Ref):
        return []
    return [n for item in node.items for n in _names(item)]


def _resolve(node: Node, lookup: Mapping[str, str]) -> Node:
    if isinstance(node, Name):
        return Name(lookup[node.name])
    if isinstance(node, Ref):
        return node
    items = tuple(_resolve(item, lookup) for item in node.items)
    return AnyOf(items) if isinstance(node, AnyOf) else AllOf(items)


# --- alternatives ---------------------------------------------------------------------------


def _keep_first_maximal(alternatives: Iterable[frozenset[str]]) -> Alternatives:
    """Drop every alternative contained in (or equal to) an earlier one: it can never win."""
    kept: list[frozenset[str]] = []
    for alternative in alternatives:
        if not any(alternative <= earlier for earlier in kept):
            kept.append(alternative)
    return tuple(kept)


@attrs.frozen
class MatrixSet:
    name: str
    dsl: str
    expr: Node  # identifiers resolved to model IDs
    models: frozenset[str]  # every model the set can hold, through its references too


@attrs.frozen
class MatrixChoice:
    """What the solver decided for one request; ``describe()`` is the INFO line.

    ``set_name`` is None (and ``dsl`` empty) when nothing had to be chosen (the model
    already occupies a slot) or when the model is in no set (everything is evicted).
    ``target`` is what occupies slots once the swap is done: the kept models and ``model``.
    """

    model: str
    set_name: str | None
    dsl: str
    evict: tuple[str, ...]
    target: tuple[str, ...]
    cost: int

    def describe(self) -> str:
        """llama-swap's INFO line for a swap:
        ``matrix: model=X set=S dsl="..." evict=[...] target=[...] cost=N``."""
        return (
            f"matrix: model={self.model} set={self.set_name or '-'} dsl={_go_quote(self.dsl)} "
            f"evict=[{' '.join(self.evict)}] target=[{' '.join(self.target)}] cost={self.cost}"
        )


def _go_quote(text: str) -> str:
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'


@attrs.frozen(eq=False)
class Matrix:
    """A compiled matrix; implements ``eviction.EvictionRule``.

    ``sets`` are in solver order (referenced sets first); ``costs`` maps model IDs to their
    eviction cost (models not listed cost 1).
    """

    sets: tuple[MatrixSet, ...]
    costs: Mapping[str, int]
    _by_name: dict[str, MatrixSet] = attrs.field(init=False, repr=False)
    _cache: dict[tuple[str, frozenset[str]], Alternatives] = attrs.field(
        init=False, repr=False, factory=dict
    )

    def __attrs_post_init__(self) -> None:
        object.__setattr__(self, "_by_name", {s.name: s for s in self.sets})

    # -- the EvictionRule protocol --

    def blockers(self, target: str, occupying: Set[str]) -> frozenset[str]:
        """The models in ``occupying`` that must leave before ``target`` may run."""
        return frozenset(self.choose(target, occupying).evict)

    def compatible(self, a: str, b: str) -> bool:
        """Whether some alternative of some set holds both ``a`` and ``b``."""
        if a == b:
            return True
        pair = frozenset((a, b))
        return any(pair in self.alternatives(s.name, pair) for s in self.sets if pair <= s.models)

    # -- the solver --

    def choose(self, target: str, occupying: Set[str]) -> MatrixChoice:
        """Decide what ``target`` evicts while ``occupying`` hold slots (see the module doc)."""
        running = frozenset(occupying)
        if target in running:
            return MatrixChoice(
                model=target,
                set_name=None,
                dsl="",
                evict=(),
                target=tuple(sorted(running)),
                cost=0,
            )
        universe = running | {target}
        best: tuple[int, MatrixSet, frozenset[str]] | None = None
        for matrix_set in self.sets:
            if target not in matrix_set.models:
                continue
            for alternative in self.alternatives(matrix_set.name, universe):
                if target not in alternative:
                    continue
                cost = sum(self.cost_of(m) for m in running - alternative)
                if best is None or cost < best[0]:
                    best = (cost, matrix_set, alternative)
        if best is None:  # in no set: run alone
            return MatrixChoice(
                model=target,
                set_name=None,
                dsl="",
                evict=tuple(sorted(running)),
                target=(target,),
                cost=sum(self.cost_of(m) for m in running),
            )
        cost, chosen, alternative = best
        return MatrixChoice(
            model=target,
            set_name=chosen.name,
            dsl=chosen.dsl,
            evict=tuple(sorted(running - alternative)),
            target=tuple(sorted(alternative)),
            cost=cost,
        )

    def cost_of(self, model_id: str) -> int:
        return self.costs.get(model_id, 1)

    def alternatives(self, name: str, universe: frozenset[str] | None = None) -> Alternatives:
        """The alternatives of set ``name`` in expression order, each cut down to
        ``universe`` (None: not cut, the full expansion, which can be exponentially long),
        without those contained in an earlier one."""
        if universe is None:
            return self._expand(self._by_name[name].expr, None)
        key = (name, universe)
        found = self._cache.get(key)
        if found is None:
            if len(self._cache) >= _CACHE_LIMIT:
                self._cache.clear()
            found = self._expand(self._by_name[name].expr, universe)
            self._cache[key] = found
        return found

    def _expand(self, node: Node, universe: frozenset[str] | None) -> Alternatives:
        if isinstance(node, Name):
            if universe is None or node.name in universe:
                return (frozenset((node.name,)),)
            return (frozenset(),)
        if isinstance(node, Ref):
            return self.alternatives(node.name, universe)
        parts = [self._expand(item, universe) for item in node.items]
        if isinstance(node, AnyOf):
            return _keep_first_maximal(a for part in parts for a in part)
        product: Alternatives = (frozenset(),)
        for part in parts:
            product = _keep_first_maximal(left | right for left in product for right in part)
        return product


# --- compiling a matrix definition --------------------------------------------------------------


def compile_matrix(
    *,
    vars: Mapping[str, str],  # noqa: A002 - llama-swap's key
    sets: Mapping[str, str],
    evict_costs: Mapping[str, int],
    models: Set[str],
    aliases: Mapping[str, str] | None = None,
) -> Matrix:
    """Check a matrix definition against the model IDs and compile it.

    ``aliases`` (alias → model ID) only improves messages: aliases are never accepted.
    Raises MatrixProblems listing every problem, each with the key it belongs to.
    """
    alias_of = aliases or {}
    problems: list[MatrixProblem] = []

    def alias_hint(name: str) -> str:
        if name in alias_of:
            return f' ("{name}" is an alias of "{alias_of[name]}"; name the model ID)'
        return ""

    lookup: dict[str, str] = {m: m for m in models}
    for key, value in vars.items():
        if not VAR_KEY.fullmatch(key):
            problems.append(
                MatrixProblem(
                    ("vars", key),
                    f"var key \"{key}\" must contain only alphanumeric, '-' or '.' "
                    "characters and be 1-32 characters long",
                )
            )
        elif value not in models:
            problems.append(
                MatrixProblem(
                    ("vars", key),
                    f'var key "{key}" references unknown model "{value}"{alias_hint(value)}',
                )
            )
    lookup.update({k: v for k, v in vars.items() if v in models})

    costs: dict[str, int] = {}
    named_by: dict[str, str] = {}
    for key, cost in evict_costs.items():
        model_id = lookup.get(key)
        if model_id is None:
            problems.append(
                MatrixProblem(
                    ("evict_costs", key),
                    f'evict_costs: unknown var or model "{key}"{alias_hint(key)}',
                )
            )
        elif cost <= 0:
            problems.append(
                MatrixProblem(
                    ("evict_costs", key),
                    f'evict_cost for "{key}" must be a positive integer, got {cost}',
                )
            )
        elif model_id in named_by:
            problems.append(
                MatrixProblem(
                    ("evict_costs", key),
                    f'evict_costs: "{key}" and "{named_by[model_id]}" both name model '
                    f'"{model_id}"; keep one',
                )
            )
        else:
            costs[model_id] = cost
            named_by[model_id] = key

    if not sets:
        problems.append(MatrixProblem(("sets",), "matrix: matrix must define at least one set"))
    parsed: dict[str, Node] = {}
    for name, dsl in sets.items():
        here = ("sets", name)
        try:
            node = parse_dsl(dsl)
        except _SyntaxProblem as exc:
            problems.append(MatrixProblem(here, f'matrix: set "{name}": {exc}'))
            continue
        unknown = [n for n in dict.fromkeys(_names(node)) if n not in lookup]
        problems.extend(
            MatrixProblem(here, f'set "{name}": unknown var or model "{n}"{alias_hint(n)}')
            for n in unknown
        )
        undefined = [r for r in dict.fromkeys(_refs(node)) if r not in sets]
        problems.extend(
            MatrixProblem(here, f'matrix: set "{name}" references undefined set "{r}"')
            for r in undefined
        )
        if not unknown and not undefined:
            parsed[name] = _resolve(node, lookup)

    order, cyclic = _solver_order(parsed, sets)
    problems.extend(
        MatrixProblem(("sets", name), f'matrix: circular reference detected involving set "{name}"')
        for name in cyclic
    )
    if problems:
        raise MatrixProblems(problems)

    compiled: dict[str, MatrixSet] = {}
    for name in order:
        node = parsed[name]
        held = frozenset(_names(node)).union(*(compiled[r].models for r in _refs(node)))
        compiled[name] = MatrixSet(name=name, dsl=sets[name], expr=node, models=held)
    return Matrix(sets=tuple(compiled[name] for name in order), costs=costs)


def _solver_order(
    parsed: Mapping[str, Node], sets: Mapping[str, str]
) -> tuple[list[str], list[str]]:
    """Definition order, with each set's references (depth first) placed before it.
    Returns that order and the sets found on a reference cycle."""
    order: list[str] = []
    done: set[str] = set()
    active: list[str] = []
    cyclic: list[str] = []

    def visit(name: str) -> None:
        if name in done or name not in parsed:
            return
        if name in active:
            if name not in cyclic:
                cyclic.append(name)
            return
        active.append(name)
        for ref in _refs(parsed[name]):
            visit(ref)
        active.pop()
        done.add(name)
        order.append(name)

    for name in sets:
        visit(name)
    return order, cyclic
