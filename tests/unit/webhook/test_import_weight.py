"""What a webhook worker imports at start-up: its resident size per worker is a goal (docs/benchmarks.md, at most
150 MiB with 1,000 policies), and every module it imports stays resident in each worker."""

from __future__ import annotations

import subprocess
import sys


def test_a_worker_that_reads_no_registry_does_not_import_httpx() -> None:
    """httpx imports its command line's libraries (rich, pygments, click) on import: about 10 MiB of a worker that
    checks no image signature and resolves no OCI model. The registry client makes its HTTP client on first use."""
    probe = (
        "import sys\n"
        "import devmlops.webhook.main, devmlops.webhook.app, devmlops.webhook.service\n"
        "from devmlops.adapters.ocisig import OciClient\n"
        "OciClient().close()\n"
        "print(sorted(m for m in ('httpx', 'rich', 'pygments') if m in sys.modules))\n"
    )
    done = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=120, check=True)
    assert done.stdout.strip() == "[]"
