"""The operator's setting for the Prometheus its canary analysis queries: from --prometheus-url or
DEVMLOPS_PROMETHEUS_URL (what the chart sets from operator.rollout.prometheusURL), and refused unless it is an
http(s) URL."""

from __future__ import annotations

import pytest
from click.testing import CliRunner
from pydantic import ValidationError

from devmlops.cli import cli
from devmlops.operator.settings import OperatorSettings


def _run(monkeypatch: pytest.MonkeyPatch, args: list[str], env: dict[str, str]) -> list[OperatorSettings]:
    seen: list[OperatorSettings] = []
    monkeypatch.setattr("devmlops.operator.main.run", seen.append)
    result = CliRunner(env=env).invoke(cli, ["operator", *args])
    assert result.exit_code == 0, result.output
    return seen


def test_the_prometheus_url_comes_from_the_environment_or_the_flag(monkeypatch: pytest.MonkeyPatch) -> None:
    url = "http://prometheus-operated.monitoring.svc:9090"
    assert _run(monkeypatch, [], {"DEVMLOPS_PROMETHEUS_URL": url})[0].prometheus_url == url
    flag = _run(monkeypatch, ["--prometheus-url", "https://thanos/api"], {"DEVMLOPS_PROMETHEUS_URL": url})
    assert flag[0].prometheus_url == "https://thanos/api"
    assert _run(monkeypatch, [], {"DEVMLOPS_PROMETHEUS_URL": ""})[0].prometheus_url is None
    assert OperatorSettings().prometheus_url is None


@pytest.mark.parametrize("url", ["prometheus:9090", "ftp://prometheus", "http://", "http://prom etheus:9090"])
def test_a_prometheus_url_that_is_not_http_is_refused_naming_the_setting(url: str) -> None:
    with pytest.raises(ValidationError, match="prometheus_url"):
        OperatorSettings(prometheus_url=url)
