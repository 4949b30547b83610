"""Attack tests of docs/threat-model.md: a namespace editor tries to get an unverified model served (issue 13)."""
