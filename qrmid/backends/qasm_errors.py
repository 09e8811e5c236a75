"""What is wrong with an OpenQASM 3 circuit that cannot be read, said with its line, column and offending token.

Qiskit's importer raises a bare ``QASM3ParsingError`` for a syntax error, with an empty message; the parser's own
exception, kept as its cause, says where it stopped and what it expected there.
"""

from __future__ import annotations

import re
from typing import Any

MAX_EXPECTED = 6  # past this many possible tokens, listing them helps no one
_LEXER = re.compile(r"L(\d+):C(\d+): (.*)", re.DOTALL)  # openqasm3's message for a character it cannot read
_IMPORTER = re.compile(r"(\d+),(\d+): (.*)", re.DOTALL)  # qiskit_qasm3_import's, e.g. an undefined gate


def describe(exc: BaseException) -> str:
    """The reason ``exc``, raised by ``qiskit.qasm3.loads``, gives for refusing a circuit, as a person reads it:
    ``line L, column C: ...`` (both counted from 1) whenever the parser said where."""
    recognition = _recognition(exc)
    if recognition is not None:
        return _syntax(recognition)
    text = str(getattr(exc, "message", None) or exc).strip()  # a QiskitError's str() quotes its message
    for pattern in (_LEXER, _IMPORTER):
        if found := pattern.fullmatch(text):
            line, column, message = found.groups()
            message = message.replace("token recognition error at:", "cannot read")
            return f"line {line}, column {int(column) + 1}: {message}"
    return text or f"{type(exc).__name__} (the reader gave no reason)"


def _recognition(exc: BaseException) -> Any:
    """The parser's RecognitionException behind ``exc``, if any (the bail-out strategy wraps it in the first
    argument of a ParseCancellationException)."""
    from antlr4.error.Errors import RecognitionException

    seen: set[int] = set()
    current: Any = exc
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        if isinstance(current, RecognitionException) and current.offendingToken is not None:
            return current
        wrapped = current.args[0] if current.args and isinstance(current.args[0], BaseException) else None
        current = current.__cause__ or wrapped or current.__context__
    return None


def _syntax(error: Any) -> str:
    token = error.offendingToken
    where = f"line {token.line}, column {token.column + 1}"
    found = "end of the circuit" if token.type == -1 else repr(token.text)
    message = f"{where}: unexpected {found}"
    try:
        expected = error.getExpectedTokens()
        names = [] if expected is None else _names(expected, error.recognizer)
    except Exception:  # the parser could not say what it expected (no state): the token alone says enough
        names = []
    if names and len(names) <= MAX_EXPECTED:
        message += f", expected {' or '.join(names)}"
    previous = error.recognizer.getInputStream().LT(-1)
    if "';'" in names and previous is not None and previous.line < token.line:
        message += f" (is a ';' missing at the end of line {previous.line}?)"
    return message


def _names(expected: Any, recognizer: Any) -> list[str]:
    text = expected.toString(recognizer.literalNames, recognizer.symbolicNames)
    names = (name.strip() for name in text.strip("{}").split(", "))
    return ["the end of the circuit" if name == "<EOF>" else name for name in names if name]
