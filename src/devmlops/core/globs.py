"""Globs for model names, storage URIs and images: ``*`` stays within one path segment, ``**`` crosses them.

A glob is matched in one pass over the value, never by a backtracking regular expression: namespace editors write
globs (a ModelPolicy's allow-lists) and the values (a 2048-character URI), and ``prod/**a**a**a**a**b`` against
``prod/`` and a few hundred ``a`` took a regular expression seconds to hours, each ``**`` multiplying the work by the
value's length, while holding the interpreter lock: every other review of the webhook waited (second attack round).
The glob's tokens are the states of an automaton, one bit each of an integer; a value costs one step per character.
A glob with one star at most is still a regular expression (one star backtracks once over the value, at C speed):
the usual allow-list entry, ``prefix/**``, costs no more than before.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass
from functools import lru_cache

__all__ = ["glob_matches", "matching_glob"]

_STAR, _STARS, _ONE = "*", "**", "?"  # within a segment, across segments, one character of a segment


@dataclass(frozen=True, slots=True)
class _Automaton:
    """Bit ``i`` stands for "the first ``i`` tokens matched"; bit ``len(tokens)`` accepts."""

    literals: dict[str, int]  # character -> bits of the literal tokens that are that character
    one: int  # bits of "?" tokens
    star: int  # bits of "*" tokens
    stars: int  # bits of "**" tokens
    accept: int

    def closure(self, states: int) -> int:
        # A star may match nothing: its state reaches the next token's (a run of stars is one token: one hop).
        return states | ((states & (self.star | self.stars)) << 1)

    def step(self, states: int, char: str) -> int:
        if char == "/":
            advance, stay = self.literals.get(char, 0), self.stars
        else:
            advance, stay = self.literals.get(char, 0) | self.one, self.stars | self.star
        return self.closure(((states & advance) << 1) | (states & stay))


def _tokens(glob: str) -> list[str]:
    """Characters, "?", and each run of stars as one token: ``*`` alone, ``**`` for two or more."""
    tokens: list[str] = []
    i = 0
    while i < len(glob):
        run = len(glob) - i - len(glob[i:].lstrip("*"))
        tokens.append((_STARS if run > 1 else _STAR) if run else glob[i])
        i += run or 1
    return tokens


_REGEX = {_STARS: ".*", _STAR: "[^/]*", _ONE: "[^/]"}


@lru_cache(maxsize=4096)
def _compile(glob: str) -> _Automaton | re.Pattern[str]:
    tokens = _tokens(glob)
    if sum(token in (_STAR, _STARS) for token in tokens) <= 1:
        return re.compile("".join(_REGEX.get(token) or re.escape(token) for token in tokens), re.DOTALL)
    literals: dict[str, int] = {}
    one = star = stars = 0
    for bit, token in enumerate(tokens):
        if token == _STARS:
            stars |= 1 << bit
        elif token == _STAR:
            star |= 1 << bit
        elif token == _ONE:
            one |= 1 << bit
        else:
            literals[token] = literals.get(token, 0) | 1 << bit
    return _Automaton(literals, one, star, stars, accept=1 << len(tokens))


def glob_matches(glob: str, value: str) -> bool:
    automaton = _compile(glob)
    if isinstance(automaton, re.Pattern):
        return automaton.fullmatch(value) is not None
    states = automaton.closure(1)
    for char in value:
        states = automaton.step(states, char)
        if not states:
            return False
    return bool(states & automaton.accept)


def matching_glob(globs: Iterable[str], value: str) -> str | None:
    """The first glob that matches ``value``, or None."""
    return next((glob for glob in globs if glob_matches(glob, value)), None)
