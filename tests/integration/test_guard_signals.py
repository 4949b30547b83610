"""The guard's drift and attack signals and the rollout's needs, on the real guard process (`devmlops guard`) in
front of real servers on loopback: drift of a real data set's shifted sample crosses the threshold in /metrics and
a held-out unshifted sample does not; one client's nudged copies count as probing, distinct inputs do not; the split
sends exactly its weight to a second upstream; an upstream 500 is counted as error/upstream_status; the digest label
is on every request metric; a real MLServer's answers pass as before."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from devmlops.core.drift import baseline_from_columns
from tests.support.guards import DIGEST, IRIS, JSON, Guard
from tests.support.modelservers import ChatServer

pytestmark = pytest.mark.timeout(300)

PATH = "/v2/models/cancer/infer"


def cancer() -> tuple[Any, Any, list[str]]:
    """scikit-learn's bundled breast cancer data (569 real biopsies, 30 features) and its labels (0 malignant)."""
    from sklearn.datasets import load_breast_cancer

    data = load_breast_cancer()
    return data.data, data.target, [str(n) for n in data.feature_names]


def samples(metrics_url: str, name: str) -> dict[str, float]:
    """The values of one metric family by its feature label (or '' without one)."""
    text = httpx.get(metrics_url + "/metrics", timeout=5).text
    found: dict[str, float] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == name:
                assert sample.labels["digest"] == DIGEST
                found[sample.labels.get("feature", "")] = sample.value
    return found


def send_rows(guard: Guard, rows: Any, *, batch: int = 20, client: str = "") -> None:
    headers = {**JSON, **({"X-Client": client} if client else {})}
    with httpx.Client(timeout=30) as http:
        for start in range(0, len(rows), batch):
            part = [[float(v) for v in row] for row in rows[start : start + batch]]
            body = {"inputs": [{"name": "x", "shape": [len(part), len(part[0])], "datatype": "FP64", "data": part}]}
            answer = http.post(guard.url + PATH, content=json.dumps(body).encode(), headers=headers)
            assert answer.status_code == 200, answer.text


def drift_config(x: Any, names: list[str]) -> dict[str, Any]:
    reference = x[0::2]  # the evaluation half: what devmlops evaluate would have signed
    baseline = baseline_from_columns([reference[:, i].tolist() for i in range(x.shape[1])], names)
    return {"protocol": "v2", "drift": {"threshold": 0.2, "sampleSize": 300}, "baseline": baseline.to_dict()}


def test_a_shifted_sample_of_real_data_crosses_the_drift_threshold_and_a_held_out_one_does_not(
    chat: ChatServer, start_guard: Callable[..., Guard]
) -> None:
    x, y, names = cancer()
    config = drift_config(x, names)
    held_out = start_guard(chat.url, config)
    send_rows(held_out, x[1::2])  # the other half of the same data: no drift
    psi = samples(held_out.metrics_url, "devmlops_guard_drift_psi")
    assert set(psi) == set(names)
    assert max(psi.values()) < 0.2, sorted(psi.items(), key=lambda item: -item[1])[:3]
    assert samples(held_out.metrics_url, "devmlops_guard_drift_threshold") == {"": 0.2}
    assert samples(held_out.metrics_url, "devmlops_guard_drift_sample_size") == {"": 284.0}

    shifted = start_guard(chat.url, config)
    send_rows(shifted, x[1::2][y[1::2] == 0])  # malignant tumours only: larger, as a clinic of referrals sees
    psi = samples(shifted.metrics_url, "devmlops_guard_drift_psi")
    assert psi["mean radius"] > 0.2
    assert psi["worst perimeter"] > 0.2
    assert sum(value > 0.2 for value in psi.values()) >= 10
    ks = samples(shifted.metrics_url, "devmlops_guard_drift_ks")
    assert ks["mean radius"] > 0.3


def test_without_a_baseline_no_drift_is_exported(chat: ChatServer, start_guard: Callable[..., Guard]) -> None:
    x, _y, _names = cancer()
    guard = start_guard(chat.url, {"protocol": "v2", "drift": {"threshold": 0.2}})
    send_rows(guard, x[:40])
    assert samples(guard.metrics_url, "devmlops_guard_drift_psi") == {}


def test_one_clients_nudged_copies_count_as_probing_and_distinct_inputs_do_not(
    chat: ChatServer, start_guard: Callable[..., Guard]
) -> None:
    x, _y, _names = cancer()
    guard = start_guard(chat.url, {"protocol": "v2", "clientHeader": "X-Client"})
    send_rows(guard, x[:30], batch=1, client="alice")  # 30 different biopsies, one at a time
    assert samples(guard.metrics_url, "devmlops_guard_probes_total") == {"": 0.0}
    row = x[100]
    nudged = [row * (1 + 0.001 * ((k % 5) - 2)) for k in range(1, 21)]  # +-0.2%: looking for the flip
    send_rows(guard, [row, *nudged], batch=1, client="mallory")
    probes = samples(guard.metrics_url, "devmlops_guard_probes_total")[""]
    assert 16 <= probes <= 20  # the copies that differ from an earlier one in bytes; the exact repeats do not count
    send_rows(guard, [row], batch=1, client="bob")  # the same input from another client: not bob's probing
    assert samples(guard.metrics_url, "devmlops_guard_probes_total")[""] == probes
    flagged = [line for line in guard.audit() if line.get("probe")]
    assert {line["client"] for line in flagged} == {"mallory"}


def test_the_split_sends_exactly_its_weight_to_the_second_upstream_after_the_checks(
    chat: ChatServer, start_guard: Callable[..., Guard]
) -> None:
    with ChatServer() as canary:
        guard = start_guard(chat.url, {"protocol": "v2", "split": {"upstream": canary.url, "weight": 30}})
        body = json.dumps(IRIS).encode()
        with httpx.Client(timeout=30) as http:
            for index in range(100):
                assert http.post(guard.url + "/v2/models/iris/infer", content=body, headers=JSON).status_code == 200
                if index % 10 == 0:  # health and readiness never split
                    assert http.get(guard.url + "/v2/health/ready").status_code == 200
            refused = http.post(guard.url + "/v2/models/iris/infer", content=b'{"inputs": []}', headers=JSON)
            assert refused.status_code == 400
        assert (len(chat.received), len(canary.received)) == (70, 30)
        audit = [line for line in guard.audit() if line["method"] == "POST" and line["result"] == "allowed"]
        assert sum(line["upstream"] == "split" for line in audit) == 30
        assert sum(line["upstream"] == "local" for line in audit) == 70
        ready = [line for line in guard.audit() if line["method"] == "GET"]
        assert {line["upstream"] for line in ready} == {"local"}


def test_an_upstream_error_status_is_passed_on_and_counted_as_an_upstream_status_error(
    chat: ChatServer, start_guard: Callable[..., Guard]
) -> None:
    guard = start_guard(chat.url, {"protocol": "v2"})
    chat.status = 500
    answer = httpx.post(guard.url + "/v2/models/iris/infer", content=json.dumps(IRIS).encode(), headers=JSON)
    assert answer.status_code == 500  # the model server's answer, as it came
    assert answer.json()["object"] == "chat.completion"
    assert guard.metric("error", "upstream_status") == 1
    assert guard.metric("allowed", "none") == 0
    (line,) = [line for line in guard.audit() if line["method"] == "POST"]
    assert (line["result"], line["reason"], line["status"]) == ("error", "upstream_status", 500)
    requests = [
        s
        for family in text_string_to_metric_families(httpx.get(guard.metrics_url + "/metrics", timeout=5).text)
        for s in family.samples
        if s.name in ("devmlops_guard_requests_total", "devmlops_guard_request_duration_seconds_count")
    ]
    assert requests
    assert {s.labels["digest"] for s in requests} == {DIGEST}


def test_a_real_model_servers_answers_feed_drift_and_pass_unchanged(
    model_server: str, start_guard: Callable[..., Guard]
) -> None:
    """MLServer serving iris: the guard measures the first tensor against iris's own baseline and passes answers."""
    from sklearn.datasets import load_iris

    iris = load_iris()
    baseline = baseline_from_columns([iris.data[:, i].tolist() for i in range(4)], list(iris.feature_names))
    config = {"protocol": "v2", "drift": {"sampleSize": 100}, "baseline": baseline.to_dict()}
    guard = start_guard(model_server, config)
    answer = httpx.post(guard.url + "/v2/models/iris/infer", content=json.dumps(IRIS).encode(), headers=JSON)
    assert answer.status_code == 200, answer.text
    assert answer.json()["outputs"][0]["data"] == [0, 2]
    assert samples(guard.metrics_url, "devmlops_guard_drift_sample_size") == {"": 2.0}
    assert set(samples(guard.metrics_url, "devmlops_guard_drift_psi")) == set(iris.feature_names)
