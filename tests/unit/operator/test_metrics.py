"""The operator's metrics as Prometheus reads them."""

from __future__ import annotations

from prometheus_client import generate_latest

from devmlops.operator.metrics import ROLLOUT_EVENTS, OperatorMetrics


def test_every_rollout_event_is_exported_at_zero_before_the_first_one() -> None:
    """The DevmlopsRolloutRolledBack alert is increase(...{event="RolledBack"}[15m]) > 0: a series that first appears
    at 1 has no increase, so the first rollback of an operator's life would not alert."""
    metrics = OperatorMetrics()
    text = generate_latest(metrics.registry).decode()
    for event in ROLLOUT_EVENTS:
        assert f'devmlops_rollout_steps_total{{event="{event}"}} 0.0' in text
    assert 'devmlops_reconcile_total{kind="ModelDeployment",result="error"} 0.0' in text
    metrics.rollout_steps.labels("RolledBack").inc()
    assert 'devmlops_rollout_steps_total{event="RolledBack"} 1.0' in generate_latest(metrics.registry).decode()


def test_the_webhooks_internal_errors_are_exported_at_zero_before_the_first_one() -> None:
    from devmlops.webhook.metrics import WebhookMetrics

    text = generate_latest(WebhookMetrics.create().registry).decode()
    assert 'devmlops_gate_results_total{gate="internal",result="error"} 0.0' in text
