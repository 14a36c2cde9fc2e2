r"""``cmd`` / ``cmdStop`` text → comment-free text, and text → argv, the way llama-swap does it.

Two steps happen at different times (reference section 2.5):

- At load time, before macros are expanded, whole comment lines are removed
  (:func:`strip_comment_lines`). That is why ``${PORT}`` in a comment line neither
  allocates a port nor counts as an unknown macro.
- At start time the command is split into argv (:func:`split_command`): comment lines
  are dropped again, trailing-backslash lines are joined, and what is left is split with
  POSIX-shell-like quoting (:func:`split_posix`, a port of the ``Posix`` dialect of
  ``github.com/billziss-gh/golib/shlex``, which llama-swap uses).

The splitter is deliberately hand-written rather than :mod:`shlex`, whose rules differ:
``shlex.split`` splits on CR, raises on an unterminated quote, keeps the ``\`` of ``"\$"``
and turns backslash-newline into a newline instead of a continuation. There is no shell:
no variables, globs or redirections.
"""

from __future__ import annotations

import enum

__all__ = ["split_command", "split_posix", "strip_comment_lines"]

# Go's unicode.IsSpace, which strings.TrimSpace uses. Python's bare str.strip() would
# also strip U+001C..U+001F, which Go keeps.
_GO_SPACE = (
    "\t\n\v\f\r \x85\xa0\u1680"
    "\u2000\u2001\u2002\u2003\u2004\u2005\u2006\u2007\u2008\u2009\u200a"
    "\u2028\u2029\u202f\u205f\u3000"
)

# The POSIX dialect's separators. CR is *not* one: it stays inside the token.
_SEPARATORS = frozenset(" \t\n")
_QUOTES = frozenset("'\"")
# Inside double quotes a backslash escapes only these (and a newline, see below).
_DQUOTE_ESCAPABLE = frozenset('$`"\\')


def _is_comment(line: str) -> bool:
    return line.strip(_GO_SPACE).startswith("#")


def strip_comment_lines(text: str) -> str:
    r"""Remove every line whose text, ignoring surrounding whitespace, starts with ``#``.

    This is llama-swap's ``StripComments``: the text is split on ``\n`` and the kept lines
    are joined with ``\n`` again, byte for byte (indentation, blank lines and a trailing
    ``\r`` stay). A trailing newline therefore survives when the last line is kept
    (``"a\n"`` → ``"a\n"``) and goes when the line before it is a comment
    (``"a\n# c"`` → ``"a"``; ``"a\n# c\n"`` → ``"a\n"``). A ``#`` after other text on
    the same line is not a comment.
    """
    return "\n".join(line for line in text.split("\n") if not _is_comment(line))


def split_command(text: str) -> list[str]:
    r"""Split a ``cmd`` into argv exactly as llama-swap's ``SanitizeCommand`` does (POSIX).

    1. The text is cut into lines on ``\n``. A line whose trimmed text starts with ``#``
       is dropped. A line whose trimmed text ends with ``\`` is replaced by that trimmed
       text minus the backslash, plus one space (so indentation before a continued line's
       text is lost). Every other line is kept unchanged. The lines are joined with ``\n``.
    2. The result is split by :func:`split_posix`.
    3. No tokens at all → ``ValueError("empty command")``.

    Step 1 does not know about quotes: it also applies to lines inside a multi-line
    quoted argument, and a line ending in an escaped backslash (``\\``) still loses its
    last backslash.

    Example (YAML ``cmd: |`` block)::

        python model1.py \
          # a comment, even with ${PORT} in it
          -a "double quotes" --b 'it''s' \
          --c '"x y"' "'z'" --x 1 # not a comment

    splits to ``["python", "model1.py", "-a", "double quotes", "--b", "its", "--c",
    '"x y"', "'z'", "--x", "1", "#", "not", "a", "comment"]``.
    """
    lines: list[str] = []
    for line in text.split("\n"):
        trimmed = line.strip(_GO_SPACE)
        if trimmed.startswith("#"):
            continue
        if trimmed.endswith("\\"):
            lines.append(trimmed[:-1] + " ")
        else:
            lines.append(line)
    argv = split_posix("\n".join(lines))
    if not argv:
        raise ValueError("empty command")
    return argv


class _State(enum.Enum):
    BETWEEN = enum.auto()  # between tokens (skipping separators)
    WORD = enum.auto()  # inside a token, unquoted
    SINGLE = enum.auto()  # inside a token, within '...'
    DOUBLE = enum.auto()  # inside a token, within "..."


_OPENS = {"'": _State.SINGLE, '"': _State.DOUBLE}


def split_posix(text: str) -> list[str]:
    r"""Split ``text`` into words with POSIX-shell-like quoting and nothing else.

    Rules (those of golib's ``shlex.Posix.Split``):

    - Words are separated by runs of space, tab and newline. CR and other whitespace
      are ordinary characters.
    - ``'...'``: everything up to the next ``'`` is literal, backslashes included.
    - ``"..."``: a backslash escapes only ``$``, backtick, ``"`` and ``\``; before any
      other character it is kept literally.
    - Unquoted, a backslash makes the next character literal (``a\ b`` is one word).
    - Unquoted and inside ``"..."``, a backslash before a newline is dropped together
      with the newline (a line continuation), and a backslash that ends the text is
      dropped.
    - Quoted and unquoted parts join into one word (``a"b c"'d'`` → ``ab cd``); ``""``
      and ``''`` make an empty word.
    - A quote left open never errors: the word runs to the end of the text.
    - ``#``, ``$``, ``*``, ``;``, ``|`` and the like have no special meaning.

    Example: the text ``a 'b c' "d\"e" f\ g ''`` splits to
    ``["a", "b c", 'd"e', "f g", ""]``.
    """
    words: list[str] = []
    word: list[str] = []
    state = _State.BETWEEN
    i, end = 0, len(text)
    while i < end:
        char = text[i]
        if char == "\\" and state is not _State.SINGLE:
            following = text[i + 1] if i + 1 < end else "\n"
            if following == "\n":
                i += 2  # continuation (or a trailing backslash): both vanish
                continue
            if state is not _State.DOUBLE or following in _DQUOTE_ESCAPABLE:
                if state is _State.BETWEEN:
                    state = _State.WORD
                word.append(following)
                i += 2
                continue
            # A backslash inside "..." before an ordinary character is itself ordinary.

        if state is _State.BETWEEN:
            if char in _QUOTES:
                state = _OPENS[char]
            elif char not in _SEPARATORS:
                state = _State.WORD
                word.append(char)
        elif state is _State.WORD:
            if char in _QUOTES:
                state = _OPENS[char]
            elif char in _SEPARATORS:
                words.append("".join(word))
                word = []
                state = _State.BETWEEN
            else:
                word.append(char)
        elif (state is _State.SINGLE and char == "'") or (state is _State.DOUBLE and char == '"'):
            state = _State.WORD
        else:
            word.append(char)
        i += 1

    if state is not _State.BETWEEN:
        words.append("".join(word))
    return words
