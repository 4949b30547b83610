"""docs/benchmarks.md is shared by the benchmarks: each one rewrites only its own section."""

from __future__ import annotations

from pathlib import Path

HEADER = "# Benchmarks\n\nMeasured side by side in one run on the same machine; compare ratios, not absolute times.\n"


def write_section(path: Path, text: str) -> None:
    """Replace the section whose '## ' title starts ``text`` (or append it), keeping the others."""
    title = text.strip().splitlines()[0]
    existing = path.read_text() if path.exists() else HEADER
    parts = existing.split("\n## ")
    head, sections = parts[0], ["## " + p for p in parts[1:]]
    sections = [s for s in sections if s.splitlines()[0] != title] + [text.strip() + "\n"]
    path.write_text(head.rstrip("\n") + "\n\n" + "\n\n".join(s.rstrip("\n") for s in sections) + "\n")
