"""Benchmark: admission latency as the API server sees it. ModelDeployments are created at a fixed rate through the
real kube-apiserver; its own /metrics histogram apiserver_admission_webhook_admission_duration_seconds gives the
webhook's share of each request. Run with `make bench-apiserver`."""

from __future__ import annotations

import argparse
import ssl
import sys
import time
import urllib.request
from pathlib import Path

from kubernetes import client as k8s

ROOT = Path(__file__).resolve().parents[2]
METRIC = "apiserver_admission_webhook_admission_duration_seconds"


def histogram(text: str, webhook: str) -> dict[float, float]:
    """Cumulative bucket counts of the validating webhook's admission duration."""
    buckets: dict[float, float] = {}
    for line in text.splitlines():
        if line.startswith(f"{METRIC}_bucket{{") and f'name="{webhook}"' in line and 'type="validating"' in line:
            le = line.split('le="', 1)[1].split('"', 1)[0]
            bound = float("inf") if le == "+Inf" else float(le)
            buckets[bound] = buckets.get(bound, 0.0) + float(line.rsplit(" ", 1)[1])
    return buckets


def quantile(before: dict[float, float], after: dict[float, float], q: float) -> tuple[float, float]:
    """The bucket bound under which a share q of the new observations fell, and the count of observations."""
    delta = {bound: after.get(bound, 0.0) - before.get(bound, 0.0) for bound in after}
    total = delta.get(float("inf"), 0.0)
    for bound in sorted(delta):
        if total and delta[bound] >= q * total:
            return bound, total
    return float("inf"), total


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--count", type=int, default=300)
    parser.add_argument("--rate", type=float, default=20.0, help="creates per second")
    parser.add_argument("--output", type=Path, default=ROOT / "docs" / "benchmarks.md")
    args = parser.parse_args()
    sys.path.insert(0, str(ROOT))
    from tests.bench.cluster import NAMESPACE as namespace
    from tests.bench.cluster import bench_cluster
    from tests.bench.report import write_section
    from tests.integration.support import from_config_map, model_deployment

    webhook = "modeldeployments.validate.devmlops.io"
    with bench_cluster() as cluster:
        cp, model = cluster.cp, cluster.model
        custom = k8s.CustomObjectsApi(cluster.admin)
        context = ssl.create_default_context(cafile=str(cp.ca_file))
        headers = {"Authorization": f"Bearer {cp.token()}"}
        request = urllib.request.Request(f"{cp.url}/metrics", headers=headers)  # noqa: S310 - loopback https

        def scrape() -> dict[float, float]:
            with urllib.request.urlopen(request, context=context, timeout=10) as response:  # noqa: S310 - loopback
                return histogram(response.read().decode(), webhook)

        before = scrape()
        started = time.monotonic()
        for index in range(args.count):
            doc = model_deployment(
                f"fraud-{index:05d}", model.digest, signature=from_config_map("evidence", "model.sig")
            )
            custom.create_namespaced_custom_object("devmlops.io", "v1alpha1", namespace, "modeldeployments", doc)
            pause = started + (index + 1) / args.rate - time.monotonic()
            if pause > 0:
                time.sleep(pause)
        after = scrape()
    p50, count = quantile(before, after, 0.50)
    p99, _ = quantile(before, after, 0.99)
    text = "\n".join(
        [
            "## Admission latency as the API server sees it",
            "",
            f"Command: `make bench-apiserver` (python -m tests.bench.bench_apiserver --count {args.count} "
            f"--rate {args.rate:g})  ",
            "ModelDeployments created at a fixed rate through the real kube-apiserver; figures are the upper bounds "
            f"of the API server's own `{METRIC}` buckets for the validating webhook (signature verified, SBOM-less "
            "policy, the operator's own updates included, operator running beside it).",
            "",
            "| figure | value |",
            "|---|---:|",
            f"| admissions observed | {count:.0f} at {args.rate:g}/s |",
            f"| p50 (bucket upper bound) | <= {p50 * 1000:.0f} ms |",
            f"| p99 (bucket upper bound) | <= {p99 * 1000:.0f} ms |",
            "",
            "Goal: p99 under 25 ms.",
            "",
        ]
    )
    print(text)
    write_section(args.output, text)


if __name__ == "__main__":
    main()
