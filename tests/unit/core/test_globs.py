"""Globs are matched in one pass over the value: a namespace editor writes both a team policy's globs and the URI
(second attack round, ``tests/integration/attacks/test_round2_review.py``), so no glob may cost more than a pass."""

from __future__ import annotations

import re
import time

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from devmlops.core.globs import glob_matches, matching_glob


def as_regex(glob: str) -> re.Pattern[str]:
    """What a glob means, written as the regular expression it was matched with before (fine for short values)."""
    parts = re.split(r"(\*\*|\*|\?)", glob)
    wildcards = {"**": ".*", "*": "[^/]*", "?": "[^/]"}
    return re.compile("".join(wildcards.get(p, re.escape(p)) for p in parts), re.DOTALL)


@settings(max_examples=3000, deadline=None)
@given(st.text("ab/*?.\n", max_size=8), st.text("ab/.*?\n", max_size=10))
def test_a_glob_means_what_it_meant(glob: str, value: str) -> None:
    assert glob_matches(glob, value) is (as_regex(glob).fullmatch(value) is not None)


@pytest.mark.parametrize(
    ("glob", "value", "matches"),
    [
        ("https://models.example.com/prod/**", "https://models.example.com/prod/a/b/c.tgz", True),
        ("https://models.example.com/prod/*", "https://models.example.com/prod/a/b", False),
        ("https://*.models.example.com/**", "https://eu.models.example.com/m", True),
        ("https://*.models.example.com/**", "https://evil.example/x.models.example.com/m", False),
        ("s3://models-???/**", "s3://models-dev/x", True),
        ("s3://models-???/**", "s3://models-a/b/x", False),
        ("***", "a/b", True),
        ("a*/**", "a/", True),
        ("", "", True),
        ("", "a", False),
    ],
)
def test_stars_keep_to_a_segment_and_double_stars_cross_them(glob: str, value: str, matches: bool) -> None:
    assert glob_matches(glob, value) is matches


@pytest.mark.parametrize(
    ("glob", "length"),
    [
        ("https://models.example.com/prod/" + "**a" * 3 + "**b", 500),  # seconds as a regular expression
        ("https://models.example.com/prod/" + "**a" * 12 + "**b", 2048),  # longer than anyone would wait
        ("https://models.example.com/prod/" + "*a" * 40 + "*b", 2048),
    ],
)
def test_a_glob_costs_one_pass_over_the_value(glob: str, length: int) -> None:
    value = "https://models.example.com/prod/" + "a" * (length - len("https://models.example.com/prod/"))
    started = time.perf_counter()
    assert matching_glob([glob], value) is None
    assert time.perf_counter() - started < 0.5
