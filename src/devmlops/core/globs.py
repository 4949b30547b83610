"""Globs for model names, storage URIs and images: ``*`` stays within one path segment, ``**`` crosses them."""

from __future__ import annotations

import re
from collections.abc import Iterable
from functools import lru_cache

__all__ = ["glob_matches", "matching_glob"]


@lru_cache(maxsize=4096)
def _compile(glob: str) -> re.Pattern[str]:
    out = []
    i = 0
    while i < len(glob):
        if glob.startswith("**", i):
            out.append(".*")
            i += 2
        elif glob[i] == "*":
            out.append("[^/]*")
            i += 1
        elif glob[i] == "?":
            out.append("[^/]")
            i += 1
        else:
            out.append(re.escape(glob[i]))
            i += 1
    return re.compile("".join(out), re.DOTALL)


def glob_matches(glob: str, value: str) -> bool:
    return _compile(glob).fullmatch(value) is not None


def matching_glob(globs: Iterable[str], value: str) -> str | None:
    """The first glob that matches ``value``, or None."""
    return next((glob for glob in globs if glob_matches(glob, value)), None)
