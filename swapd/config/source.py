"""YAML text → a tree of mappings, sequences and strings that remembers where each came from.

This is the only module that imports strictyaml. We use its parser, which is what makes
the YAML strict: no duplicate keys, no tags, and no implicit typing (every scalar arrives
as text; the schema in ``model.py`` decides what it means, so ``yes`` stays a string and
``0755`` never becomes a number). Flow style (``aliases: [a, b]``) is allowed because
llama-swap files use it everywhere.

Anchors, aliases and merge keys (``&base``, ``*base``, ``<<: *base``, ``<<: [*a, *b]``)
are allowed, because llama-swap reads them and real files use them to share a model
template. They are handled by the parser strictyaml is built on (ruamel), not by a text
pre-pass: an alias is the anchored node itself, so every position inside it is the
anchor's text, and a merge key becomes the mapping's ``merge`` list (earlier sources win,
the mapping's own keys win over all of them). ``key_position`` follows that list, so a
merged-in key points at the line where the anchor's mapping wrote it, and a key that
overrides a merged one points at its own line. A document whose aliases would expand past
``MAX_EXPANDED_NODES`` ("billion laughs") is refused.

We deliberately stop at strictyaml's parse tree and apply our own schema walk
(``shape.py``) instead of strictyaml's validators, for two measured reasons: its
validators stop at the first error (we report all of them), and they recompute line
numbers by re-dumping the document, which took 63 s on a 1,000-model file; the parse
alone takes about 2 s there. The tree's ``lc`` records give exact key positions for free.

The loader is strictyaml's, minus its round-trip scanner: that scanner turns every
comment and blank line into tokens and re-gathers them before each token is read, only so
that a dump could write the comments back; swapd never dumps the tree. The base scanner
skips comments, and the strict check (no tags) is made here on the same tokens
strictyaml checks. Measured on a 1,000-model file: the parse took ~30% less.
"""

from __future__ import annotations

import re
from typing import Any

import strictyaml.parser
from strictyaml import exceptions as strict_exceptions
from strictyaml.ruamel import YAMLError, tokens
from strictyaml.ruamel import main as ruamel_main
from strictyaml.ruamel.comments import CommentedMap, CommentedSeq
from strictyaml.ruamel.composer import Composer
from strictyaml.ruamel.parser import RoundTripParser
from strictyaml.ruamel.reader import Reader
from strictyaml.ruamel.resolver import VersionedResolver
from strictyaml.ruamel.scalarstring import (
    DoubleQuotedScalarString,
    FoldedScalarString,
    LiteralScalarString,
    SingleQuotedScalarString,
)
from strictyaml.ruamel.scanner import Scanner, ScannerError
from strictyaml.ruamel.tokens import CommentToken, ScalarToken

from swapd.errors import ConfigError, ConfigProblem

__all__ = [
    "MAX_EXPANDED_NODES",
    "Mapping",
    "Sequence",
    "anchor_of",
    "is_block",
    "is_quoted",
    "key_position",
    "parse_yaml",
]

#: Nodes a document may hold once its aliases are expanded (a 1,000-model file has ~30,000).
MAX_EXPANDED_NODES = 2_000_000

Mapping = CommentedMap
Sequence = CommentedSeq


# A plain scalar's run of characters up to the next break (ruamel's scan_plain inner
# loop, YAML 1.2 rules): whitespace, line breaks and the end of the text stop it, and so
# does ":" before whitespace; in flow context also "," "[" "]" "{" "}" (a "?" never does).
_END = " \n\0\t\r\x85\u2028\u2029"
_PLAIN_BLOCK = re.compile(f"(?:[^{_END}:]|:(?=[^{_END}]))*")
_SPACES = re.compile(" *")
_COMMENT = re.compile("#[^\n\0\r\x85\u2028\u2029]*")  # "#" to the end of the line
_PLAIN_FLOW = re.compile(f"(?:[^{_END}:,\\[\\]{{}}]|:(?=[^{_END}]))*")


class _StrictScanner(Scanner):  # type: ignore[misc]
    """The base scanner (comments skipped) with strictyaml's check for tags (anchors and
    aliases are allowed, unlike strictyaml); plain scalars are scanned by regular
    expression instead of one character at a time."""

    label = "config"

    def scan_plain(self) -> Any:
        """ruamel's ``Scanner.scan_plain`` with its two per-character loops (find the end
        of the run, then move the reader over it) done in one regex match and one jump;
        same tokens, same errors. YAML 1.1 documents take ruamel's own code."""
        if self.scanner_processing_version == (1, 1):
            return super().scan_plain()
        reader = self.reader
        chunks: list[str] = []
        start_mark = reader.get_mark()
        end_mark = start_mark
        indent = self.indent + 1
        spaces: list[str] = []
        while True:
            if reader.peek() == "#":
                break
            buffer = reader.buffer
            pointer = reader.pointer
            pattern = _PLAIN_FLOW if self.flow_level else _PLAIN_BLOCK
            match = pattern.match(buffer, pointer)
            length = match.end() - pointer if match is not None else 0
            ch = reader.peek(length)
            if (
                self.flow_level
                and ch == ":"
                and reader.peek(length + 1) not in "\0 \t\r\n\x85\u2028\u2029,[]{}"
            ):
                reader.forward(length)
                raise ScannerError(
                    "while scanning a plain scalar",
                    start_mark,
                    "found unexpected ':'",
                    reader.get_mark(),
                    "Please check http://pyyaml.org/wiki/YAMLColonInFlowContext for details.",
                )
            if length == 0:
                break
            self.allow_simple_key = False
            chunks.extend(spaces)
            chunk = buffer[pointer : pointer + length]
            chunks.append(chunk)
            # reader.forward(length), without its loop: the run holds no line break
            reader.pointer += length
            reader.index += length
            reader.column += length - chunk.count("\ufeff")
            end_mark = reader.get_mark()
            spaces = self.scan_plain_spaces(indent, start_mark)
            if (
                not spaces
                or reader.peek() == "#"
                or (not self.flow_level and reader.column < indent)
            ):
                break
        token = ScalarToken("".join(chunks), True, start_mark, end_mark)
        if spaces and spaces[0] == "\n":
            # Create a comment token to preserve the trailing line breaks (as ruamel does).
            comment = CommentToken("".join(spaces) + "\n", start_mark, end_mark)
            token.add_post_comment(comment)
        return token

    def need_more_tokens(self) -> bool:
        """ruamel's ``need_more_tokens`` with ``stale_possible_simple_keys`` and
        ``next_possible_simple_key`` folded into one pass over the pending keys (the
        parser asks before every token)."""
        if self.done:
            return False
        if not self.tokens:
            return True
        keys = self.possible_simple_keys
        if not keys:
            return False
        reader = self.reader
        line, index = reader.line, reader.index
        nearest = None
        for level in list(keys):
            key = keys[level]
            if key.line != line or index - key.index > 1024:
                if key.required:
                    raise ScannerError(
                        "while scanning a simple key",
                        key.mark,
                        "could not find expected ':'",
                        reader.get_mark(),
                    )
                del keys[level]
            elif nearest is None or key.token_number < nearest:
                nearest = key.token_number
        return bool(nearest == self.tokens_taken)

    def scan_to_next_token(self) -> None:
        """ruamel's ``scan_to_next_token`` (skip spaces, comments and line breaks), with the
        runs of spaces and the comment text skipped by regex instead of per character."""
        reader = self.reader
        if reader.index == 0 and reader.peek() == "\ufeff":
            reader.forward()
        while True:
            for pattern in (_SPACES, _COMMENT):
                match = pattern.match(reader.buffer, reader.pointer)
                length = match.end() - reader.pointer if match is not None else 0
                if length:  # no line break in either run: move without the reader's loop
                    chunk = reader.buffer[reader.pointer : reader.pointer + length]
                    reader.pointer += length
                    reader.index += length
                    reader.column += length - chunk.count("\ufeff")
            if self.scan_line_break():
                if not self.flow_level:
                    self.allow_simple_key = True
            else:
                return

    def check_token(self, *choices: Any) -> bool:
        # need_more_tokens() is False, with nothing to do, when tokens are queued and no
        # simple key is pending; the parser asks ~3 times per token, so skip the call then.
        while (not self.tokens or self.possible_simple_keys) and self.need_more_tokens():
            self.fetch_more_tokens()
        if not self.tokens:
            return False
        if not choices:
            return True
        token = self.tokens[0]
        if not isinstance(token, choices):
            return False
        token.start_mark.name = token.end_mark.name = self.label
        if isinstance(token, tokens.TagToken):
            raise strict_exceptions.TagTokenDisallowed(
                "While scanning",
                token.end_mark,
                "Found disallowed tag tokens (do not specify types in markup)",
                token.start_mark,
            )
        return True


class _Loader(
    Reader,  # type: ignore[misc]
    _StrictScanner,
    RoundTripParser,  # type: ignore[misc]
    Composer,  # type: ignore[misc]
    strictyaml.parser.StrictYAMLConstructor,  # type: ignore[misc]
    VersionedResolver,  # type: ignore[misc]
):
    # Flow style is allowed (llama-swap files use it); quote style is kept so that "123"
    # stays a string where the schema allows any value.
    allow_flow_style = True

    def __init__(self, stream: str, version: Any = None, preserve_quotes: Any = None) -> None:
        Reader.__init__(self, stream, loader=self)
        _StrictScanner.__init__(self, loader=self)  # type: ignore[call-arg]
        RoundTripParser.__init__(self, loader=self)
        Composer.__init__(self, loader=self)
        strictyaml.parser.StrictYAMLConstructor.__init__(self, preserve_quotes=True, loader=self)
        VersionedResolver.__init__(self, version, loader=self)


def parse_yaml(text: str, *, file: str) -> Any:
    """Parse one YAML document. Returns a Mapping, a Sequence, a str, or None if empty.

    Raises ConfigError (with the line) on a syntax error or a construct strict YAML forbids.
    """
    try:
        tree = ruamel_main.load(text, Loader=_Loader)
    except YAMLError as exc:
        mark = getattr(exc, "problem_mark", None) or getattr(exc, "context_mark", None)
        line = mark.line + 1 if mark is not None else 0
        column = mark.column + 1 if mark is not None else 0
        problem = getattr(exc, "problem", None) or str(exc)
        context = getattr(exc, "context", None)
        message = _describe_syntax_error(type(exc).__name__, str(problem), context)
        raise ConfigError([ConfigProblem(file, line, column, "", message)]) from None
    if _expanded_size(tree, {}) > MAX_EXPANDED_NODES:
        raise ConfigError(
            [
                ConfigProblem(
                    file,
                    0,
                    0,
                    "",
                    f"YAML aliases expand this document past {MAX_EXPANDED_NODES} values; "
                    "refused (nested aliases multiply)",
                )
            ]
        )
    return tree


def _expanded_size(node: Any, seen: dict[int, int]) -> int:
    """How many values ``node`` holds with every alias expanded; shared nodes are counted
    once per use but computed once (``seen``), so this is linear in the parsed text."""
    if not isinstance(node, Mapping | Sequence):
        return 1
    known = seen.get(id(node))
    if known is not None:
        return known
    seen[id(node)] = 1  # a recursive alias (an anchor used inside itself) counts once
    children = node.values() if isinstance(node, Mapping) else node
    size = 1 + sum(_expanded_size(child, seen) for child in children)
    seen[id(node)] = size
    return size


def _describe_syntax_error(kind: str, problem: str, context: Any) -> str:
    problem = problem.strip()
    if kind == "DuplicateKeysDisallowed":
        return f"{problem} (each key may appear once per mapping)"
    if kind == "TagTokenDisallowed":
        return "YAML tags (!!int, !tag) are not allowed; the schema decides types"
    if context:
        return f"invalid YAML: {str(context).strip()}: {problem}"
    return f"invalid YAML: {problem}"


def key_position(mapping: Any, key: str) -> tuple[int, int]:
    """1-based (line, column) of ``key`` in a parsed mapping, (0, 0) when unknown.

    A key the mapping got through a merge key (``<<: *base``) is found where the merged
    mapping wrote it: the first merge source holding it, as the merge itself picks."""
    try:
        line, col = mapping.lc.key(key)
    except (AttributeError, KeyError, TypeError):
        for _, merged in getattr(mapping, "merge", ()):
            if key in merged:
                return key_position(merged, key)
        return (0, 0)
    return (line + 1, col + 1)


def anchor_of(node: Any) -> str | None:
    """The anchor name (``&name``) written on a parsed node, if any."""
    anchor = getattr(node, "anchor", None)
    value = getattr(anchor, "value", None)
    return value if isinstance(value, str) else None


def item_position(sequence: Any, index: int) -> tuple[int, int]:
    """1-based (line, column) of item ``index`` of a parsed sequence."""
    try:
        line, col = sequence.lc.item(index)
    except (AttributeError, KeyError, IndexError, TypeError):
        return (0, 0)
    return (line + 1, col + 1)


def is_quoted(scalar: str) -> bool:
    """True for '...' and "..." scalars, whose text is always a string."""
    return isinstance(scalar, SingleQuotedScalarString | DoubleQuotedScalarString)


def is_block(scalar: str) -> bool:
    """True for | and > block scalars, whose text is always a string."""
    return isinstance(scalar, LiteralScalarString | FoldedScalarString)
