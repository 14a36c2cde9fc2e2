"""``cmd`` comment stripping and argv splitting (reference sections 2.5 and 13.8)."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from swapd.config.cmdline import split_command, split_posix, strip_comment_lines

# llama-swap's config_posix_test.go TestConfig_SanitizeCommand input (tab-indented Go raw
# string), and the variant from the brief (a blank line right after the first
# continuation, space-indented).
LLAMA_SWAP_EXAMPLE = """python model1.py \\
\t\t-a "double quotes" \\
\t\t--arg2 'single quotes'
\t\t-s
\t\t# comment 1
\t\t--arg3 123 \\

\t\t  # comment 2
\t\t--arg4 '"string in string"'


\t\t# this will get stripped out as well as the white space above
\t\t-c "'single quoted'"
\t\t"""

BRIEF_EXAMPLE = """python model1.py \\

    # comment
    -a "double quotes" \\
    --arg2 'single quotes'
    -s
    # comment 2
    --arg3 123 \\

    # comment 3
    --arg4 '"string in string"'

    # this will get stripped out as well as the white space above
    -c "'single quoted'"
"""

EXAMPLE_ARGV = [
    "python",
    "model1.py",
    "-a",
    "double quotes",
    "--arg2",
    "single quotes",
    "-s",
    "--arg3",
    "123",
    "--arg4",
    '"string in string"',
    "-c",
    "'single quoted'",
]


@pytest.mark.parametrize("text", [LLAMA_SWAP_EXAMPLE, BRIEF_EXAMPLE])
def test_reference_example(text: str) -> None:
    assert split_command(text) == EXAMPLE_ARGV


def test_docstring_example() -> None:
    text = (
        "python model1.py \\\n"
        "  # a comment, even with ${PORT} in it\n"
        "  -a \"double quotes\" --b 'it''s' \\\n"
        "  --c '\"x y\"' \"'z'\" --x 1 # not a comment\n"
    )
    assert split_command(text) == [
        "python",
        "model1.py",
        "-a",
        "double quotes",
        "--b",
        "its",
        "--c",
        '"x y"',
        "'z'",
        "--x",
        "1",
        "#",
        "not",
        "a",
        "comment",
    ]


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("llama-server --port 8080", ["llama-server", "--port", "8080"]),
        # separators: space, tab, newline; runs collapse; leading/trailing ignored
        ("  a \t\tb\n\nc  ", ["a", "b", "c"]),
        ("a\tb", ["a", "b"]),
        # CR is not a separator: it stays inside the token
        ("a\r\nb", ["a\r", "b"]),
        ("a\rb", ["a\rb"]),
        ("a \r b", ["a", "\r", "b"]),
        # other Unicode spaces are ordinary characters for the splitter
        ("a\xa0b", ["a\xa0b"]),
        # escaped spaces outside quotes
        ("a\\ b c", ["a b", "c"]),
        ("/models/My\\ Model.gguf", ["/models/My Model.gguf"]),
        # empty quotes yield an empty argument
        ('a "" b', ["a", "", "b"]),
        ("a '' b", ["a", "", "b"]),
        ("''", [""]),
        ("\"\"''", [""]),
        # quoted and unquoted parts join
        ("a\"b c\"'d'e", ["ab cde"]),
        ("--x='a b'", ["--x=a b"]),
        # unterminated quotes: no error, the token runs to the end
        ('a "b c', ["a", "b c"]),
        ("a 'b c\nd", ["a", "b c\nd"]),
        ('a "', ["a", ""]),
        # a backslash at the very end is turned into a space by the line rule
        ("a b\\", ["a", "b"]),
        ("a\\", ["a"]),
        ("\\", None),
        # ... which leaves an escaped backslash escaping that space (llama-swap quirk)
        ("a \\\\", ["a", " "]),
        # ... and inside an open double quote the space becomes part of the token
        ('a "b\\', ["a", "b "]),
        # inside double quotes a backslash escapes only $ ` " \ (and newline)
        ('"\\$HOME"', ["$HOME"]),
        ('"\\`x\\`"', ["`x`"]),
        ('"a\\"b"', ['a"b']),
        ('"a\\\\b"', ["a\\b"]),
        ('"a\\nb"', ["a\\nb"]),
        ('"\\x"', ["\\x"]),
        ('"\\\'"', ["\\'"]),
        # outside quotes a backslash escapes anything
        ("\\$HOME \\n \\' \\\" \\#", ["$HOME", "n", "'", '"', "#"]),
        # single quotes are fully literal
        ("'\\n'", ["\\n"]),
        ("'a\\'", ["a\\"]),
        ("'$HOME \"x\" `y`'", ['$HOME "x" `y`']),
        # no variable expansion, no globbing, no shell operators
        ("echo $HOME *.gguf ~ a;b |", ["echo", "$HOME", "*.gguf", "~", "a;b", "|"]),
        # no mid-line comments
        ("--x 1 # note", ["--x", "1", "#", "note"]),
        ("a#b #c", ["a#b", "#c"]),
        # whole comment lines go, indented or not, even with macros in them
        ("server\n  # --port ${PORT}\n  -m x", ["server", "-m", "x"]),
        ("# first\nserver", ["server"]),
        ("server\n\t#tab-indented\n", ["server"]),
        # a line ending in a backslash: trimmed, backslash replaced by one space
        ("a \\\n   b", ["a", "b"]),
        ("a\\\nb", ["a", "b"]),
        ("a \\   \n b", ["a", "b"]),
        ("a \\\r\nb", ["a", "b"]),
        # continuation inside a double-quoted argument keeps the space and the newline
        ('x "a \\\n   b"', ["x", "a  \n   b"]),
        # the line rules do not know about quotes: a '#' line inside quotes is dropped
        ("x 'a\n# b\nc'", ["x", "a\nc"]),
    ],
)
def test_split_command(text: str, expected: list[str] | None) -> None:
    if expected is None:
        with pytest.raises(ValueError, match=r"^empty command$"):
            split_command(text)
    else:
        assert split_command(text) == expected


@pytest.mark.parametrize(
    "text",
    ["", " ", "\n\n", " \t \n", "# only a comment", "  # one\n\t# two\n", "\\", " \\\n\\"],
)
def test_empty_command(text: str) -> None:
    with pytest.raises(ValueError, match=r"^empty command$"):
        split_command(text)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        # the tokenizer on its own, where the line rules of split_command do not interfere
        ("a\\\nb", ["ab"]),
        ("a \\\nb", ["a", "b"]),
        ("\\\n", []),
        ("a\\", ["a"]),
        ("\\", []),
        ('"a\\\nb"', ["ab"]),
        ('"a\\', ["a"]),
        ("'a\\\nb'", ["a\\\nb"]),
        ("a\n# b", ["a", "#", "b"]),
        ("", []),
    ],
)
def test_split_posix(text: str, expected: list[str]) -> None:
    assert split_posix(text) == expected


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        # llama-swap's StripComments table (config_test.go)
        ("echo hello\necho world", "echo hello\necho world"),
        ("# this is a comment\necho hello", "echo hello"),
        ("# comment 1\necho hello\n# comment 2\necho world", "echo hello\necho world"),
        ("   # indented comment\necho hello", "echo hello"),
        ("echo hello\n\necho world", "echo hello\n\necho world"),
        ("# comment 1\n# comment 2", ""),
        ("", ""),
        # trailing newlines: split on \n, rejoin with \n
        ("a\n", "a\n"),
        ("a\n\n", "a\n\n"),
        ("a\n# c", "a"),
        ("a\n# c\n", "a\n"),
        ("# c\n", ""),
        ("\n", "\n"),
        # kept lines are kept byte for byte
        ("  a  \n\t# x\n  b \\", "  a  \n  b \\"),
        ("a\r\n# c\r\nb", "a\r\nb"),
        ("\t#tab\n  x", "  x"),
        # macros inside comment lines go too
        ("server\n  # --port ${PORT}\n  -m x", "server\n  -m x"),
        # only whole lines: mid-line '#' stays, and so does a quoted '#'
        ("--x 1 # note", "--x 1 # note"),
        ("a '#b'", "a '#b'"),
        # Go's TrimSpace does not trim U+001C..U+001F (Python's str.strip would)
        ("\x1c# x", "\x1c# x"),
        ("\xa0# x\ny", "y"),
    ],
)
def test_strip_comment_lines(text: str, expected: str) -> None:
    assert strip_comment_lines(text) == expected


def test_strip_comments_then_split_agree() -> None:
    # Stripping at load time does not change what split_command produces later.
    assert split_command(strip_comment_lines(LLAMA_SWAP_EXAMPLE)) == EXAMPLE_ARGV


def _single_quote(arg: str) -> str:
    return "'" + arg.replace("'", "'\"'\"'") + "'"


def _double_quote(arg: str) -> str:
    escaped = "".join("\\" + char if char in '$`"\\' else char for char in arg)
    return '"' + escaped + '"'


_no_newline = st.text(st.characters(exclude_characters="\x00\n"))
_any_text = st.text(st.characters(exclude_characters="\x00"))


@given(st.lists(_no_newline.filter(bool), min_size=1))
def test_single_quoted_args_round_trip(args: list[str]) -> None:
    assert split_command(" ".join(_single_quote(arg) for arg in args)) == args


@given(st.lists(_any_text, min_size=0))
def test_single_quoted_round_trip_through_tokenizer(args: list[str]) -> None:
    # Any text, newlines included, once the line rules of split_command are out of the way.
    assert split_posix(" ".join(_single_quote(arg) for arg in args)) == args


@given(st.lists(_any_text, min_size=0))
def test_double_quoted_round_trip_through_tokenizer(args: list[str]) -> None:
    assert split_posix("\n".join(_double_quote(arg) for arg in args)) == args


@given(st.lists(st.text(st.characters(exclude_characters="\x00 \t\n'\"\\#"), min_size=1)))
def test_plain_words_split_on_whitespace(words: list[str]) -> None:
    assert split_posix(" \t".join(words)) == words


@given(_any_text)
def test_split_command_returns_argv_or_empty_error(text: str) -> None:
    try:
        argv = split_command(text)
    except ValueError as exc:
        assert str(exc) == "empty command"  # noqa: PT017 (arbitrary text: either outcome)
    else:
        assert argv
