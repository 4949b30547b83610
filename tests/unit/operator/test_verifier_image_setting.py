"""devmlops's own image as installed: the webhook and the operator take the same ``--verifier-image`` (or
DEVMLOPS_VERIFIER_IMAGE, what the chart sets for the operator), so the image the operator renders is the one the
webhook holds Pods to and, with imageSignatures.devmlopsImage, checks signatures of."""

from __future__ import annotations

from typing import Any

import pytest
from click.testing import CliRunner

from devmlops.cli import cli

PINNED = "registry.example/devmlops@sha256:" + "a" * 64


def _settings(monkeypatch: pytest.MonkeyPatch, command: list[str], env: dict[str, str]) -> Any:
    seen: list[Any] = []
    monkeypatch.setattr(f"devmlops.{command[0]}.main.run", seen.append)
    result = CliRunner(env=env).invoke(cli, command)
    assert result.exit_code == 0, result.output
    return seen[0]


@pytest.mark.parametrize(
    "command", [["operator"], ["webhook", "--tls-cert", __file__, "--tls-key", __file__]], ids=["operator", "webhook"]
)
def test_both_take_the_verifier_image_from_the_flag_or_the_environment(
    monkeypatch: pytest.MonkeyPatch, command: list[str]
) -> None:
    assert _settings(monkeypatch, command, {}).verifier_image == "devmlops:0.1.0"
    assert _settings(monkeypatch, command, {"DEVMLOPS_VERIFIER_IMAGE": PINNED}).verifier_image == PINNED
    flagged = _settings(monkeypatch, [*command, "--verifier-image", PINNED], {"DEVMLOPS_VERIFIER_IMAGE": "x:1"})
    assert flagged.verifier_image == PINNED
