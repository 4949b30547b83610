"""PrometheusQuery's reading of the query API's answers, against a small HTTP server on loopback that answers what
each test scripts (the real Prometheus is in tests/integration/test_prometheus.py): every answer that is not one
number or "no data" is a MetricsUnavailableError naming the URL and the query."""

from __future__ import annotations

import contextlib
import json
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlparse

import pytest

from devmlops.adapters.prometheus import PrometheusQuery
from devmlops.errors import ConfigurationError, MetricsUnavailableError
from devmlops.harness.processes import free_port

QUERY = 'sum(rate(devmlops_guard_requests_total{namespace="a"}[1m]))'


class Scripted:
    """Answers every GET with ``status`` and ``body`` after ``delay`` seconds; keeps the paths and parameters."""

    def __init__(self) -> None:
        self.status, self.body, self.delay = 200, b"", 0.0
        self.asked: list[tuple[str, dict[str, list[str]]]] = []
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *_args: Any) -> None:
                pass

            def do_GET(self) -> None:
                parsed = urlparse(self.path)
                outer.asked.append((parsed.path, parse_qs(parsed.query)))
                time.sleep(outer.delay)
                with contextlib.suppress(ConnectionError):  # a client past its deadline has gone
                    self.send_response(outer.status)
                    self.send_header("Content-Type", "application/json")
                    self.send_header("Content-Length", str(len(outer.body)))
                    self.end_headers()
                    self.wfile.write(outer.body)

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"

    def answer(self, body: Any, status: int = 200) -> None:
        self.status, self.body = status, body if isinstance(body, bytes) else json.dumps(body).encode()


@pytest.fixture
def server() -> Iterator[Scripted]:
    scripted = Scripted()
    thread = threading.Thread(target=scripted.server.serve_forever, args=(0.02,), daemon=True)
    thread.start()
    yield scripted
    scripted.server.shutdown()
    scripted.server.server_close()


def success(result_type: str, result: Any) -> dict[str, Any]:
    return {"status": "success", "data": {"resultType": result_type, "result": result}}


def sample(value: str, **labels: str) -> dict[str, Any]:
    return {"metric": labels, "value": [1764500000.123, value]}


def failure(server: Scripted, query: str = QUERY, timeout: float = 2.0) -> str:
    with pytest.raises(MetricsUnavailableError) as raised:
        PrometheusQuery(server.url, timeout).value(query)
    message = raised.value.user_message
    assert server.url in message
    assert repr(query) in message
    assert raised.value.context["prometheus"] == server.url
    return message


def test_an_instant_query_goes_to_the_query_api_with_its_deadline(server: Scripted) -> None:
    server.answer(success("vector", [sample("12.5")]))
    assert PrometheusQuery(server.url + "/", 3.0).value(QUERY) == 12.5
    assert server.asked == [("/api/v1/query", {"query": [QUERY], "timeout": ["3000ms"]})]


def test_a_url_with_a_path_prefix_keeps_it(server: Scripted) -> None:
    server.answer(success("scalar", [1764500000.1, "2"]))
    assert PrometheusQuery(server.url + "/prometheus", 1.0).value("1 + 1") == 2.0
    assert server.asked[0][0] == "/prometheus/api/v1/query"


@pytest.mark.parametrize(
    ("result_type", "result", "expected"),
    [
        ("scalar", [1764500000.1, "0.25"], 0.25),
        ("vector", [sample("3")], 3.0),
        ("vector", [sample("0")], 0.0),
        ("vector", [sample("+Inf")], float("inf")),
        ("vector", [], None),
        ("vector", [sample("NaN")], None),
        ("scalar", [1764500000.1, "NaN"], None),
    ],
    ids=["scalar", "one-sample", "zero", "infinity", "empty-vector", "nan-sample", "nan-scalar"],
)
def test_one_number_or_no_data(server: Scripted, result_type: str, result: Any, expected: float | None) -> None:
    server.answer(success(result_type, result))
    assert PrometheusQuery(server.url, 1.0).value(QUERY) == expected


def test_several_samples_are_an_error_naming_the_count(server: Scripted) -> None:
    server.answer(success("vector", [sample("1", pod="a"), sample("2", pod="b"), sample("3", pod="c")]))
    assert "3 samples, expected one" in failure(server)


def test_prometheus_refusing_the_query_is_an_error_with_its_error_type_and_text(server: Scripted) -> None:
    refusal = {"status": "error", "errorType": "bad_data", "error": 'invalid parameter "query": 1:5: parse error'}
    server.answer(refusal, status=400)
    message = failure(server)
    assert "errorType 'bad_data'" in message
    assert "parse error" in message


def test_a_status_error_with_http_200_is_still_an_error(server: Scripted) -> None:
    server.answer(
        {"status": "error", "errorType": "execution", "error": "query processing would load too many samples"}
    )
    assert "errorType 'execution'" in failure(server)


@pytest.mark.parametrize(
    ("status", "body", "found"),
    [
        (500, b"internal error", "HTTP 500"),
        (502, b"<html>bad gateway</html>", "HTTP 502"),
        (200, b"{not json", "not the query API's JSON"),
        (200, b'["success"]', "not the query API's JSON"),
        (200, json.dumps({"status": "success"}).encode(), "a result of type None"),
        (200, json.dumps(success("matrix", [])).encode(), "a result of type 'matrix'"),
        (200, json.dumps(success("string", [1.0, "x"])).encode(), "a result of type 'string'"),
        (200, json.dumps(success("vector", [{"metric": {}, "histogram": [1.0, {}]}])).encode(), "a sample value"),
        (200, json.dumps(success("vector", [sample("lots")])).encode(), "not a number"),
        (200, json.dumps(success("scalar", [1.0, 2.0])).encode(), "a sample value"),
    ],
    ids=[
        "http-500", "http-502-html", "not-json", "json-not-an-object", "no-data", "range-vector", "string",
        "native-histogram", "value-not-a-number", "value-not-a-string",
    ],
)  # fmt: skip
def test_every_other_answer_is_an_error(server: Scripted, status: int, body: bytes, found: str) -> None:
    server.answer(body, status=status)
    assert found in failure(server)


def test_no_answer_within_the_deadline_is_an_error(server: Scripted) -> None:
    server.answer(success("vector", [sample("1")]))
    server.delay = 1.0
    started = time.monotonic()
    assert "no answer within 0.2s" in failure(server, timeout=0.2)
    assert time.monotonic() - started < 0.9


def test_nothing_listening_is_an_error() -> None:
    url = f"http://127.0.0.1:{free_port()}"
    with pytest.raises(MetricsUnavailableError, match="ConnectError") as raised:
        PrometheusQuery(url, 1.0).value(QUERY)
    assert url in raised.value.user_message


@pytest.mark.parametrize(
    ("url", "timeout"), [("prometheus:9090", 1.0), ("ftp://prometheus:9090", 1.0), ("http://p:9090", 0.0)]
)
def test_a_url_or_deadline_that_cannot_work_is_refused_at_once(url: str, timeout: float) -> None:
    with pytest.raises(ConfigurationError, match="Prometheus"):
        PrometheusQuery(url, timeout)


def test_by_label_reads_one_number_per_value_of_the_label(server: Scripted) -> None:
    server.answer(
        success("vector", [sample("0.31", feature="0"), sample("NaN", feature="1"), sample("0.02", feature="2")])
    )
    assert PrometheusQuery(server.url, 2).by_label(QUERY, "feature") == {"0": 0.31, "2": 0.02}


@pytest.mark.parametrize(
    ("result", "found"),
    [
        ([sample("1", feature="0"), sample("2", feature="0")], "repeating label 'feature'"),
        ([sample("1", model="m")], "without label 'feature'"),
    ],
)
def test_by_label_refuses_samples_it_cannot_key(server: Scripted, result: list[Any], found: str) -> None:
    server.answer(success("vector", result))
    with pytest.raises(MetricsUnavailableError, match=found):
        PrometheusQuery(server.url, 2).by_label(QUERY, "feature")


def test_by_label_refuses_a_scalar(server: Scripted) -> None:
    server.answer(success("scalar", [1764500000.1, "1"]))
    with pytest.raises(MetricsUnavailableError, match="expected an instant vector"):
        PrometheusQuery(server.url, 2).by_label(QUERY, "feature")
