"""The ``devmlops`` command: run the webhook or the operator, or bring up the local demo."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import click

from devmlops import __version__
from devmlops.errors import DevmlopsError

__all__ = ["main"]


@click.group(context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 110})
@click.version_option(__version__, prog_name="devmlops")
def cli() -> None:
    """devmlops: only signed, SBOM-described, policy-compliant models reach production."""


@cli.command()
@click.option("--host", default="0.0.0.0", show_default=True, help="Address to listen on (TLS only).")  # noqa: S104
@click.option("--port", default=8443, show_default=True, type=click.IntRange(1, 65535))
@click.option("--tls-cert", required=True, type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("--tls-key", required=True, type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("--max-body-bytes", default=3 * 1024 * 1024, show_default=True, type=click.IntRange(1024))
def webhook(host: str, port: int, tls_cert: Path, tls_key: Path, max_body_bytes: int) -> None:
    """Serve the admission webhook over TLS (/validate, /healthz, /readyz, /metrics)."""
    from devmlops.webhook.server import serve
    from devmlops.webhook.settings import WebhookSettings

    serve(WebhookSettings(host=host, port=port, tls_cert=tls_cert, tls_key=tls_key, max_body_bytes=max_body_bytes))


@cli.command()
@click.option("-n", "--namespace", "namespaces", multiple=True, help="Watch only these namespaces (repeatable).")
@click.option("--standalone/--peering", default=True, show_default=True, help="Run without or with kopf peering.")
@click.option("--priority", default=0, show_default=True, help="kopf peering priority (higher acts).")
@click.option(
    "--liveness",
    "liveness_endpoint",
    default=None,
    help="Liveness endpoint, e.g. http://0.0.0.0:8080/healthz.",
)
def operator(namespaces: tuple[str, ...], standalone: bool, priority: int, liveness_endpoint: str | None) -> None:
    """Reconcile ModelDeployments into model servers (uses KUBECONFIG or the in-cluster account)."""
    from devmlops.operator.main import run
    from devmlops.operator.settings import OperatorSettings

    run(
        OperatorSettings(
            namespaces=namespaces,
            standalone=standalone,
            priority=priority,
            liveness_endpoint=liveness_endpoint,
        )
    )


@cli.command()
@click.option(
    "--tools-dir",
    type=click.Path(file_okay=False, path_type=Path),
    envvar="DEVMLOPS_TOOLS_DIR",
    help="Folder with etcd and kube-apiserver (printed by `make tools`).",
)
@click.option(
    "--project-dir",
    type=click.Path(file_okay=False, path_type=Path),
    default=Path.cwd,
    help="Checkout holding crds/ and config/samples/.",
)
@click.option("--once", is_flag=True, envvar="RUN_ONCE", help="Exit after printing the table.")
def local(tools_dir: Path | None, project_dir: Path, once: bool) -> None:
    """Start a local control plane with the webhook and operator, apply the samples, show the outcome."""
    from devmlops.harness.demo import run_demo

    run_demo(tools_dir=tools_dir or _kubebuilder_assets(), project_dir=project_dir, once=once)


def _kubebuilder_assets() -> Path | None:
    assets = os.environ.get("KUBEBUILDER_ASSETS")
    return Path(assets) if assets else None


def main() -> None:
    try:
        cli(standalone_mode=True)
    except DevmlopsError as exc:
        click.echo(f"devmlops: {exc.user_message}", err=True)
        sys.exit(2)


if __name__ == "__main__":
    main()
