"""The ``devmlops`` command: run the webhook or the operator, or bring up the local demo."""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any, NoReturn

import click

from devmlops import __version__
from devmlops.core.evidence import DEFAULT_SERVER_IMAGES, Identities
from devmlops.errors import DevmlopsError, InvalidInputError

if TYPE_CHECKING:
    from devmlops.core.policy import Authority

__all__ = ["main"]


@click.group(context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 110})
@click.version_option(__version__, prog_name="devmlops")
def cli() -> None:
    """devmlops: only signed, SBOM-described, policy-compliant models reach production."""


def _registry_options(func: Callable[..., None]) -> Callable[..., None]:
    """The model registry options the webhook and the operator share (both resolve spec.model.registry)."""
    options = [
        click.option(
            "--mlflow-tracking-uri",
            default=None,
            help="MLflow tracking server whose registry spec.model.registry names (none: such models are denied).",
        ),
        click.option("--registry-timeout", default=2.0, show_default=True, help="Seconds allowed for one lookup."),
        click.option(
            "--registry-cache-seconds", default=30.0, show_default=True, help="Seconds a resolved entry is reused."
        ),
        click.option(
            "--oci-plain-http",
            "oci_plain_http",
            multiple=True,
            metavar="HOST[:PORT]",
            help="An OCI registry read over plain HTTP for image signatures (repeatable; others: HTTPS).",
        ),
        click.option(
            "--registry-auth-file",
            default=None,
            envvar="DEVMLOPS_REGISTRY_AUTH_FILE",
            type=click.Path(exists=True, dir_okay=False, path_type=Path),
            help="Docker config JSON (.dockerconfigjson) of OCI registry credentials by host (none: anonymous reads).",
        ),
    ]
    for option in reversed(options):
        func = option(func)
    return func


# devmlops's own image as the cluster installs it: the operator renders it (storage initializer, guard), the webhook
# holds model Pods to it, and a policy may demand it signed (imageSignatures.devmlopsImage). Both must agree.
_verifier_image_option = click.option(
    "--verifier-image",
    envvar="DEVMLOPS_VERIFIER_IMAGE",
    default="devmlops:0.1.0",
    show_default=True,
    help="devmlops's own image as installed (the storage initializer and the guard; pin it by digest), as in the "
    "ClusterStorageContainer; the webhook and the operator must be given the same.",
)


@cli.command()
@click.option("--host", default="0.0.0.0", show_default=True, help="Address to listen on (TLS only).")  # noqa: S104
@click.option("--port", default=8443, show_default=True, type=click.IntRange(1, 65535))
@click.option("--tls-cert", required=True, type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("--tls-key", required=True, type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("--max-body-bytes", default=3 * 1024 * 1024, show_default=True, type=click.IntRange(1024))
@click.option(
    "--decision-timeout", default=8.0, show_default=True, help="Seconds before a request is denied unanswered."
)
@click.option("--verification-timeout", default=3.0, show_default=True, help="Seconds allowed for one verification.")
@click.option(
    "--max-pending-decisions",
    default=64,
    show_default=True,
    type=click.IntRange(1),
    help="Reviews in or waiting for a decision at once; more are denied at once (overloaded, fail closed).",
)
@click.option(
    "--workers",
    default=1,
    show_default=True,
    type=click.IntRange(1, 32),
    help="Worker processes on the one port (SO_REUSEPORT); each keeps its own watch caches (about 140 MiB with "
    "1,000 policies). docs/benchmarks.md has the scaling per worker.",
)
@click.option(
    "--no-match",
    type=click.Choice(["deny", "warn", "allow"]),
    default="deny",
    show_default=True,
    help="What to do with a ModelDeployment that no ClusterModelPolicy selects.",
)
@click.option("--cert-reload-interval", default=10.0, show_default=True, help="Seconds between TLS file checks.")
@click.option("--opa-url", default=None, help="OPA server for the rego gate, e.g. http://127.0.0.1:8181.")
@click.option("--opa-timeout", default=2.0, show_default=True, help="Seconds allowed for one OPA query.")
@click.option(
    "--model-server-image",
    "model_server_images",
    multiple=True,
    help="Image substring that makes a Deployment/StatefulSet a model server (repeatable; keep it in step with the "
    f"webhook configuration's matchConditions). Default: {', '.join(DEFAULT_SERVER_IMAGES)}.",
)
@click.option(
    "--evidence-secret-namespaces",
    default="*",
    show_default=True,
    help="Comma-separated namespaces whose Secrets labelled devmlops.io/evidence=true are read; '*' every "
    "namespace (needs cluster-wide Secret access), '' none (secretKeyRef evidence is then denied).",
)
@click.option(
    "--evidence-configmap-namespaces",
    default="*",
    show_default=True,
    help="Comma-separated namespaces whose ConfigMaps labelled devmlops.io/evidence=true are read; '*' every "
    "namespace (needs cluster-wide ConfigMap access), '' none (configMapKeyRef evidence is then denied).",
)
@click.option(
    "--operator-user",
    default=Identities().operator,
    show_default=True,
    help="The operator's identity: the only one that may write a ModelDeployment's InferenceService or Deployment.",
)
@click.option(
    "--kserve-user",
    default=Identities().kserve,
    show_default=True,
    help="The KServe controller's identity: the only one that may write an InferenceService's Deployment.",
)
@click.option(
    "--controller-user",
    "controller_users",
    multiple=True,
    help="An identity of the cluster's workload controllers, which write ReplicaSets and Pods of a model server "
    f"(repeatable). Default: {', '.join(Identities().controllers)}.",
)
@click.option(
    "--endpoint-slice-user",
    "endpoint_slice_users",
    multiple=True,
    help="An identity of the EndpointSlice controller, the only writer of a model's Service's EndpointSlices "
    f"(repeatable; keep it equal to the webhook configuration's). Default: {', '.join(Identities().endpoint_slices)}.",
)
@_verifier_image_option
@_registry_options
def webhook(
    host: str,
    port: int,
    tls_cert: Path,
    tls_key: Path,
    max_body_bytes: int,
    decision_timeout: float,
    verification_timeout: float,
    max_pending_decisions: int,
    workers: int,
    no_match: str,
    cert_reload_interval: float,
    opa_url: str | None,
    opa_timeout: float,
    model_server_images: tuple[str, ...],
    evidence_secret_namespaces: str,
    evidence_configmap_namespaces: str,
    operator_user: str,
    kserve_user: str,
    controller_users: tuple[str, ...],
    endpoint_slice_users: tuple[str, ...],
    verifier_image: str,
    mlflow_tracking_uri: str | None,
    registry_timeout: float,
    registry_cache_seconds: float,
    oci_plain_http: tuple[str, ...],
    registry_auth_file: Path | None,
) -> None:
    """Serve the admission webhook over TLS (/validate, /healthz, /readyz, /metrics).

    Reads ClusterModelPolicies, namespaces, and ConfigMaps/Secrets labelled devmlops.io/evidence=true through
    watches (KUBECONFIG or the in-cluster account).
    """
    from devmlops.webhook.main import run
    from devmlops.webhook.settings import WebhookSettings

    run(
        WebhookSettings.model_validate(
            {
                "host": host,
                "port": port,
                "tls_cert": tls_cert,
                "tls_key": tls_key,
                "max_body_bytes": max_body_bytes,
                "decision_timeout_seconds": decision_timeout,
                "verification_timeout_seconds": verification_timeout,
                "max_pending_decisions": max_pending_decisions,
                "workers": workers,
                "no_match": no_match,
                "cert_reload_seconds": cert_reload_interval,
                "opa_url": opa_url,
                "opa_timeout_seconds": opa_timeout,
                "model_server_images": model_server_images or DEFAULT_SERVER_IMAGES,
                "evidence_secret_namespaces": _namespace_list(evidence_secret_namespaces),
                "evidence_configmap_namespaces": _namespace_list(evidence_configmap_namespaces),
                "operator_user": operator_user,
                "kserve_user": kserve_user,
                "controller_users": controller_users or Identities().controllers,
                "endpoint_slice_users": endpoint_slice_users or Identities().endpoint_slices,
                "verifier_image": verifier_image,
                "mlflow_tracking_uri": mlflow_tracking_uri,
                "registry_timeout_seconds": registry_timeout,
                "registry_cache_seconds": registry_cache_seconds,
                "oci_plain_http": oci_plain_http,
                "registry_auth_file": registry_auth_file,
            }
        )
    )


def _namespace_list(text: str) -> tuple[str, ...] | None:
    """'*' means every namespace (None); otherwise the comma-separated names, possibly none."""
    if text.strip() == "*":
        return None
    return tuple(name.strip() for name in text.split(",") if name.strip())


def _secret_ref(text: str | None, option: str) -> tuple[str, str] | None:
    if text is None:
        return None
    namespace, _, name = text.partition("/")
    if not namespace or not name:
        raise click.BadParameter(f"expected NAMESPACE/NAME, got {text!r}", param_hint=option)
    return namespace, name


def _configuration_ref(text: str) -> tuple[str, str]:
    kind, _, name = text.partition("/")
    if kind not in ("validating", "mutating") or not name:
        raise click.BadParameter(
            f"expected validating/NAME or mutating/NAME, got {text!r}", param_hint="--webhook-configuration"
        )
    return kind, name


@cli.command()
@click.option("-n", "--namespace", "namespaces", multiple=True, help="Watch only these namespaces (repeatable).")
@click.option("--standalone/--peering", default=True, show_default=True, help="Run without or with kopf peering.")
@click.option("--priority", default=0, show_default=True, help="kopf peering priority (higher acts).")
@click.option(
    "--random-priority",
    is_flag=True,
    help="Pick a random peering priority (replicas of one Deployment must not share one).",
)
@click.option("--peering-name", default="devmlops", show_default=True, help="The (Cluster)KopfPeering object's name.")
@click.option(
    "--liveness",
    "liveness_endpoint",
    default=None,
    help="Liveness endpoint, e.g. http://0.0.0.0:8080/healthz.",
)
@click.option("--opa-url", default=None, help="OPA holding the Rego packages, to re-check them.")
@click.option("--recheck-interval", default=300.0, show_default=True, help="Seconds between re-checks of each model.")
@click.option("--verification-timeout", default=3.0, show_default=True, help="Seconds allowed for one verification.")
@click.option("--metrics-port", default=0, show_default=True, help="Serve Prometheus /metrics on this port (0: off).")
@click.option(
    "--prometheus-url",
    envvar="DEVMLOPS_PROMETHEUS_URL",
    default=None,
    help="Prometheus the canary rollout's analysis queries for the guards' metrics (DEVMLOPS_PROMETHEUS_URL).",
)
@click.option(
    "--retrain-webhook-url",
    envvar="DEVMLOPS_RETRAIN_WEBHOOK_URL",
    default=None,
    help="Where a retrain request is POSTed when a served model's inputs drift (DEVMLOPS_RETRAIN_WEBHOOK_URL); "
    "without it the request is an Event only.",
)
@click.option(
    "--webhook-tls-secret",
    metavar="NAMESPACE/NAME",
    help="Keep the webhook's serving certificate in this kubernetes.io/tls Secret (turns certificate keeping on).",
)
@click.option("--webhook-ca-secret", metavar="NAMESPACE/NAME", help="The Secret holding the webhook CA and its key.")
@click.option("--webhook-host", "webhook_hosts", multiple=True, help="DNS name or IP of the webhook (repeatable).")
@click.option(
    "--webhook-configuration",
    "webhook_configurations",
    multiple=True,
    metavar="KIND/NAME",
    help="validating/NAME or mutating/NAME whose caBundle the operator keeps (repeatable).",
)
@click.option("--cert-validity-days", default=90.0, show_default=True, help="Serving certificate lifetime (<= 365).")
@click.option("--cert-renew-before-days", default=30.0, show_default=True, help="Renew it this long before expiry.")
@click.option("--ca-validity-days", default=365.0, show_default=True, help="CA lifetime (<= 365).")
@click.option("--ca-renew-before-days", default=60.0, show_default=True, help="Rotate the CA this long before expiry.")
@click.option("--ca-overlap-seconds", default=600.0, show_default=True, help="Keep trusting the old CA this long.")
@click.option(
    "--ca-propagation-seconds",
    default=30.0,
    show_default=True,
    help="Wait this long after a new CA entered the caBundle before serving a certificate it signed.",
)
@click.option("--cert-check-interval", default=60.0, show_default=True, help="Seconds between certificate checks.")
@_verifier_image_option
@_registry_options
def operator(
    namespaces: tuple[str, ...],
    standalone: bool,
    priority: int,
    random_priority: bool,
    peering_name: str,
    liveness_endpoint: str | None,
    opa_url: str | None,
    recheck_interval: float,
    verification_timeout: float,
    metrics_port: int,
    prometheus_url: str | None,
    retrain_webhook_url: str | None,
    webhook_tls_secret: str | None,
    webhook_ca_secret: str | None,
    webhook_hosts: tuple[str, ...],
    webhook_configurations: tuple[str, ...],
    cert_validity_days: float,
    cert_renew_before_days: float,
    ca_validity_days: float,
    ca_renew_before_days: float,
    ca_overlap_seconds: float,
    ca_propagation_seconds: float,
    cert_check_interval: float,
    verifier_image: str,
    mlflow_tracking_uri: str | None,
    registry_timeout: float,
    registry_cache_seconds: float,
    oci_plain_http: tuple[str, ...],
    registry_auth_file: Path | None,
) -> None:
    """Reconcile ModelDeployments into model servers (uses KUBECONFIG or the in-cluster account).

    With --webhook-tls-secret it also keeps the webhook's certificates: a CA and a serving certificate in Secrets,
    renewed before they expire, and the CA patched into the webhook configurations' caBundle.
    """
    import secrets

    from devmlops.operator.certificates import CertificateSettings
    from devmlops.operator.main import run
    from devmlops.operator.settings import OperatorSettings

    certificates = None
    tls_secret = _secret_ref(webhook_tls_secret, "--webhook-tls-secret")
    if tls_secret is not None:
        ca_secret = _secret_ref(webhook_ca_secret, "--webhook-ca-secret")
        if ca_secret is None or not webhook_hosts:
            raise click.UsageError("--webhook-tls-secret needs --webhook-ca-secret and at least one --webhook-host")
        certificates = CertificateSettings(
            tls_secret=tls_secret,
            ca_secret=ca_secret,
            hosts=webhook_hosts,
            configurations=tuple(_configuration_ref(c) for c in webhook_configurations),
            validity_days=cert_validity_days,
            renew_before_days=cert_renew_before_days,
            ca_validity_days=ca_validity_days,
            ca_renew_before_days=ca_renew_before_days,
            ca_overlap_seconds=ca_overlap_seconds,
            ca_propagation_seconds=ca_propagation_seconds,
            check_seconds=cert_check_interval,
        )
    run(
        OperatorSettings(
            namespaces=namespaces,
            standalone=standalone,
            priority=1 + secrets.randbelow(1_000_000) if random_priority else priority,
            peering_name=peering_name,
            liveness_endpoint=liveness_endpoint,
            opa_url=opa_url,
            recheck_seconds=recheck_interval,
            verification_timeout_seconds=verification_timeout,
            metrics_port=metrics_port,
            prometheus_url=prometheus_url or None,
            retrain_webhook_url=retrain_webhook_url or None,
            certificates=certificates,
            verifier_image=verifier_image,
            mlflow_tracking_uri=mlflow_tracking_uri,
            registry_timeout_seconds=registry_timeout,
            registry_cache_seconds=registry_cache_seconds,
            oci_plain_http=oci_plain_http,
            registry_auth_file=registry_auth_file,
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
@click.option(
    "--node/--no-node",
    default=False,
    envvar="DEVMLOPS_NODE",
    help="Also run a node (containerd, kubelet, scheduler, kube-proxy; root and Debian's containerd) so Pods run.",
)
def local(tools_dir: Path | None, project_dir: Path, once: bool, node: bool) -> None:
    """Start a local control plane with the webhook and operator, apply the samples, show the outcome."""
    from devmlops.harness.demo import run_demo

    run_demo(tools_dir=tools_dir or _kubebuilder_assets(), project_dir=project_dir, once=once, node=node)


# -- verification commands (a stable contract: scripts and CI depend on the flags and exit codes) --------------

EXIT_OK, EXIT_FAILED, EXIT_USAGE = 0, 1, 2


def _authority(
    public_key: Path | None,
    certificate_chain: tuple[Path, ...],
    identity: str | None,
    issuer: str | None,
    trust_config: Path | None,
) -> Authority:
    from devmlops.core.policy import Authority

    modes = [bool(public_key), bool(certificate_chain), bool(identity or issuer)]
    if sum(modes) != 1:
        raise click.UsageError("give exactly one of --public-key, --certificate-chain, or --identity with --issuer")
    if public_key:
        return Authority(name="public-key", kind="key", public_key=_read(public_key))
    if certificate_chain:
        return Authority(
            name="certificate-chain", kind="certificateChain", certificates="".join(_read(p) for p in certificate_chain)
        )
    if not (identity and issuer):
        raise click.UsageError("--identity and --issuer go together")
    return Authority(
        name="sigstore",
        kind="keyless",
        identity=identity,
        issuer=issuer,
        trust_config=_read(trust_config) if trust_config else "",
    )


def _read(path: Path) -> str:
    try:
        return path.read_text()
    except (OSError, UnicodeDecodeError) as exc:
        raise InvalidInputError(f"{path}: cannot be read ({exc})") from exc


def _finish(ok: bool, payload: dict[str, Any], text: str, as_json: bool) -> NoReturn:
    if as_json:
        click.echo(json.dumps(payload, indent=2, sort_keys=True))
    else:
        click.echo(text, err=not ok)
    sys.exit(EXIT_OK if ok else EXIT_FAILED)


_PATH = click.Path(exists=True, dir_okay=False, path_type=Path)
_key_options = [
    click.option("--public-key", type=_PATH, help="EC public key (PEM) that signed."),
    click.option("--identity", help="Sigstore keyless: the signer identity (e-mail, URI)."),
    click.option("--issuer", help="Sigstore keyless: the OIDC issuer URL."),
    click.option(
        "--trust-config",
        type=_PATH,
        help="Sigstore ClientTrustConfig for a private instance "
        "(default: the public-good root shipped with sigstore, used offline).",
    ),
    click.option("--json", "as_json", is_flag=True, help="Print a JSON result on stdout."),
]


def _with_key_options(func: Callable[..., None]) -> Callable[..., None]:
    for option in reversed(_key_options):
        func = option(func)
    return func


@cli.command()
@click.argument("model_path", type=click.Path(exists=True, path_type=Path))
@click.option("--signature", required=True, type=_PATH, help="The OMS signature (model.sig).")
@click.option("--certificate-chain", multiple=True, type=_PATH, help="CA certificates (PEM), repeatable.")
@click.option("--ignore-path", multiple=True, help="Path relative to MODEL_PATH to leave out (repeatable).")
@_with_key_options
def verify(
    model_path: Path,
    signature: Path,
    certificate_chain: tuple[Path, ...],
    ignore_path: tuple[str, ...],
    public_key: Path | None,
    identity: str | None,
    issuer: str | None,
    trust_config: Path | None,
    as_json: bool,
) -> None:
    """Verify MODEL_PATH's bytes against an OMS signature.

    Exit 0 verified, 1 not verified (reason on stderr or in the JSON), 2 usage or input error. Hashing runs on
    every core; a terminal shows progress.
    """
    from devmlops.adapters.modelverify import check_model_bytes
    from devmlops.adapters.oms import OmsVerifier
    from devmlops.core.ports import VerificationFailed, VerificationUnavailable

    authority = _authority(public_key, certificate_chain, identity, issuer, trust_config)
    result: dict[str, Any] = {"verified": False, "model_path": str(model_path)}
    try:
        signed = OmsVerifier().verify_model(_read(signature), authority)
        result.update(model=signed.model_name, digest=signed.digest, signer=signed.signer)
        ignore = [*ignore_path, *_inside(signature, model_path)]
        check = check_model_bytes(model_path, signed, ignore_paths=ignore, progress=sys.stderr)
    except (VerificationFailed, VerificationUnavailable) as exc:
        result["reason"] = exc.user_message
        _finish(False, result, f"devmlops verify: NOT verified: {exc.user_message}", as_json)
    result.update(files=check.files, bytes=check.bytes, seconds=round(check.seconds, 3), problems=list(check.problems))
    if not check.ok:
        result["reason"] = f"{len(check.problems)} file(s) differ from the signature"
        text = "devmlops verify: NOT verified: " + "; ".join(check.problems[:10])
        _finish(False, result, text, as_json)
    result["verified"] = True
    text = (
        f"verified: {signed.model_name} {signed.digest} signed by {signed.signer}; "
        f"{check.files} files, {check.bytes / 2**20:.1f} MiB in {check.seconds:.2f}s"
    )
    _finish(True, result, text, as_json)


def _inside(signature: Path, model_path: Path) -> list[str]:
    """The signature file itself is never part of the model."""
    try:
        return [str(signature.resolve().relative_to(model_path.resolve()))]
    except ValueError:
        return []


@cli.command("verify-bundle")
@click.argument("artifact", type=_PATH)
@click.option("--bundle", required=True, type=_PATH, help="Sigstore bundle over ARTIFACT.")
@_with_key_options
def verify_bundle(
    artifact: Path,
    bundle: Path,
    public_key: Path | None,
    identity: str | None,
    issuer: str | None,
    trust_config: Path | None,
    as_json: bool,
) -> None:
    """Verify a plain Sigstore bundle over one file (an SBOM, say). Exit codes as for verify."""
    from devmlops.adapters.oms import OmsVerifier
    from devmlops.core.ports import VerificationFailed, VerificationUnavailable

    authority = _authority(public_key, (), identity, issuer, trust_config)
    try:
        signer = OmsVerifier().verify_blob(artifact.read_bytes(), _read(bundle), authority)
    except (VerificationFailed, VerificationUnavailable) as exc:
        _finish(False, {"verified": False, "reason": exc.user_message}, f"NOT verified: {exc.user_message}", as_json)
    _finish(True, {"verified": True, "signer": signer}, f"verified: {artifact} signed by {signer}", as_json)


@cli.group()
def sbom() -> None:
    """ML-BOM (CycloneDX, SPDX) tools."""


@sbom.command("check")
@click.argument("file", type=click.Path(path_type=Path))
@click.option("--json", "as_json", is_flag=True, help="Print a JSON summary on stdout.")
def sbom_check(file: Path, as_json: bool) -> None:
    """Detect the format, validate, and summarize. Exit 0 valid, 1 invalid, 2 unreadable."""
    from devmlops.adapters.sbom import SbomError, parse_sbom

    try:
        data = file.read_bytes()
    except OSError as exc:
        click.echo(f"devmlops: {file}: cannot be read ({exc.strerror})", err=True)
        sys.exit(EXIT_USAGE)
    try:
        summary = parse_sbom(data)
    except SbomError as exc:
        _finish(False, {"valid": False, "reason": exc.user_message}, f"{file}: invalid: {exc.user_message}", as_json)
    components = [
        {
            "name": c.name,
            "kind": c.kind,
            "version": c.version,
            "hashes": [f"{a}:{h}" for a, h in c.hashes],
            "licenses": list(c.licenses),
            "modelCardFields": sorted(c.model_card_fields),
            "risk": c.risk,
        }
        for c in summary.components
    ]
    payload = {"valid": True, "format": summary.format, "specVersion": summary.spec_version, "components": components}
    lines = [f"{file}: valid {summary.format} {summary.spec_version}, {len(components)} component(s)"]
    for c in summary.models or summary.components[:10]:
        lines.append(
            f"  {c.kind} {c.name} {c.version} hashes={[a + ':' + h[:12] for a, h in c.hashes]} "
            f"licenses={list(c.licenses)} model-card={sorted(c.model_card_fields)}"
        )
    _finish(True, payload, "\n".join(lines), as_json)


@cli.command()
@click.option(
    "-f",
    "--filename",
    "files",
    multiple=True,
    required=True,
    type=_PATH,
    help="Manifests: ModelDeployments and the ConfigMaps, Secrets, Namespaces and policies they use.",
)
@click.option("--policy", "policy_files", multiple=True, type=_PATH, help="Files with ClusterModelPolicies.")
@click.option("--no-match", type=click.Choice(["deny", "warn", "allow"]), default="deny", show_default=True)
@click.option("--opa-url", default=None, help="OPA that holds the Rego packages the policies name.")
@click.option(
    "--mlflow-tracking-uri",
    envvar="MLFLOW_TRACKING_URI",
    help="MLflow server whose registry spec.model.registry names (or MLFLOW_TRACKING_URI).",
)
@click.option("--json", "as_json", is_flag=True, help="Print JSON results on stdout.")
def check(
    files: tuple[Path, ...],
    policy_files: tuple[Path, ...],
    no_match: str,
    opa_url: str | None,
    mlflow_tracking_uri: str | None,
    as_json: bool,
) -> None:
    """Run the admission decision offline over ModelDeployment manifests (like `kyverno apply`).

    Exit 0 all admitted, 1 any denied, 2 error.
    """
    from devmlops.adapters.opa import OpaEngine
    from devmlops.offline import check_manifests, load_manifests

    documents = load_manifests([*files, *policy_files])
    engine = OpaEngine(opa_url) if opa_url else None
    from devmlops.adapters.registrycache import mlflow_resolver

    registry = mlflow_resolver(mlflow_tracking_uri, timeout_seconds=10.0, ttl_seconds=0.0)
    results = check_manifests(
        documents,
        no_match=no_match,  # type: ignore[arg-type]
        engine=engine,
        registry=registry,
    )
    if not results:
        raise InvalidInputError("no ModelDeployment in the given files")
    payload = [
        {
            "namespace": r.namespace,
            "name": r.name,
            "allowed": r.decision.allowed,
            "error": r.error,
            "message": r.decision.message,
            "warnings": list(r.decision.warnings),
            "gates": [
                {"gate": g.gate, "policy": g.policy, "result": g.outcome, "reason": g.reason, "hint": g.hint}
                for g in r.decision.results
            ],
        }
        for r in results
    ]
    text = "\n".join(
        (f"ERROR    {r.namespace}/{r.name}: {r.error}" if r.error else "")
        or f"{'ADMITTED' if r.decision.allowed else 'DENIED  '} {r.namespace}/{r.name}: {r.decision.message}"
        + "".join(f"\n  warning: {w}" for w in r.decision.warnings)
        for r in results
    )
    if as_json:
        click.echo(json.dumps(payload, indent=2))
    else:
        click.echo(text)
    if any(r.error for r in results):
        sys.exit(EXIT_USAGE)
    sys.exit(EXIT_OK if all(r.decision.allowed for r in results) else EXIT_FAILED)


@cli.command()
@click.argument("model_path", required=False, type=click.Path(exists=True, path_type=Path))
@click.option(
    "--output",
    type=click.Path(dir_okay=False, path_type=Path),
    help="Where to write the signature (required unless --mlflow stores it with the version).",
)
@click.option("--private-key", type=_PATH, help="EC private key (PEM).")
@click.option(
    "--certificate-chain",
    multiple=True,
    type=_PATH,
    help="Signing certificate first, then intermediates (PEM); with --private-key.",
)
@click.option("--sigstore", "use_sigstore", is_flag=True, help="Sign keyless with Sigstore (needs network and OIDC).")
@click.option("--ignore-path", multiple=True, help="Path relative to MODEL_PATH to leave out (repeatable).")
@click.option(
    "--mlflow",
    "mlflow_version",
    metavar="NAME/VERSION",
    help="Sign a registered MLflow model version and store the bundle and digest as its tags (MODEL_PATH: its "
    "files; without it they are downloaded from the version's storage location).",
)
@click.option(
    "--tracking-uri", envvar="MLFLOW_TRACKING_URI", help="MLflow tracking server for --mlflow (MLFLOW_TRACKING_URI)."
)
@click.option("--sbom", type=_PATH, help="With --mlflow: an ML-BOM to store with the version too.")
@click.option(
    "--oci",
    "oci_model",
    metavar="oci://HOST/REPO@sha256:DIGEST",
    help="Sign a model stored as an OCI artifact (pulled by digest) and attach the bundle to it as an OCI referrer.",
)
@click.option("--oci-plain-http", "oci_plain_http", multiple=True, help="With --oci: a registry read over HTTP.")
def sign(
    model_path: Path | None,
    output: Path | None,
    private_key: Path | None,
    certificate_chain: tuple[Path, ...],
    use_sigstore: bool,
    ignore_path: tuple[str, ...],
    mlflow_version: str | None,
    tracking_uri: str | None,
    sbom: Path | None,
    oci_model: str | None,
    oci_plain_http: tuple[str, ...],
) -> None:
    """Sign MODEL_PATH with model_signing (OMS format); a thin wrapper for ML engineers.

    With --mlflow NAME/VERSION the signature, its digest (and --sbom) are stored as the version's tags
    devmlops.io/oms-bundle, devmlops.io/digest (and devmlops.io/ml-bom), where the webhook reads them.
    """
    import tempfile

    from devmlops.adapters.modelsign import sign_model

    if use_sigstore == bool(private_key):
        raise click.UsageError("give either --private-key (optionally with --certificate-chain) or --sigstore")
    if oci_model is not None:
        _sign_oci(oci_model, oci_plain_http, private_key, certificate_chain, ignore_path)
        return
    if mlflow_version is None:
        if model_path is None or output is None or sbom is not None:
            raise click.UsageError("give MODEL_PATH and --output (--sbom goes with --mlflow)")
        signed = sign_model(
            model_path,
            output,
            private_key=private_key,
            certificate_chain=certificate_chain,
            ignore_paths=[*ignore_path, *_inside(output, model_path)],
        )
        click.echo(f"signed {signed.model_name}: {signed.digest} -> {output}")
        click.echo(f"set spec.model.digest: {signed.digest}")
        return
    from devmlops.adapters.mlflowsign import download_version, lookup_version, parse_version_ref, store_signature

    if not tracking_uri:
        raise click.UsageError("--mlflow needs --tracking-uri (or MLFLOW_TRACKING_URI)")
    name, version = parse_version_ref(mlflow_version)
    registered = lookup_version(tracking_uri, name, version)
    with tempfile.TemporaryDirectory(prefix="devmlops-sign-") as tmp:
        files = model_path or download_version(tracking_uri, registered, Path(tmp) / "model")
        bundle_path = output or Path(tmp) / "model.sig"
        signed = sign_model(
            files,
            bundle_path,
            private_key=private_key,
            certificate_chain=certificate_chain,
            ignore_paths=[*ignore_path, *_inside(bundle_path, files)],
        )
        stored = store_signature(
            tracking_uri,
            registered,
            bundle=bundle_path.read_text(),
            digest=signed.digest,
            sbom=_read(sbom) if sbom is not None else None,
        )
    click.echo(f"signed MLflow model '{name}' version {version}: {signed.digest}; stored as tags {', '.join(stored)}")
    click.echo(f"set spec.model.uri: {registered.source}")
    click.echo(f"set spec.model.digest: {signed.digest}")


def _sign_oci(
    uri: str,
    plain_http: tuple[str, ...],
    private_key: Path | None,
    certificate_chain: tuple[Path, ...],
    ignore_path: tuple[str, ...],
) -> None:
    """Pull the artifact by digest, sign its files, attach the bundle as a referrer of the same digest."""
    import tempfile

    from devmlops.adapters.modelsign import sign_model
    from devmlops.adapters.ociartifact import OciModel
    from devmlops.adapters.registryauth import RegistryAuth

    anonymous = RegistryAuth(missing="devmlops sign --oci reads and pushes anonymously: sign where it needs none")
    client = OciModel(plain_http=plain_http, auth=anonymous)
    try:
        with tempfile.TemporaryDirectory(prefix="devmlops-sign-") as tmp:
            files, bundle_path = Path(tmp) / "model", Path(tmp) / "model.sig"
            client.pull(uri, files)
            signed = sign_model(
                files,
                bundle_path,
                private_key=private_key,
                certificate_chain=certificate_chain,
                ignore_paths=ignore_path,
            )
            referrer = client.attach_signature(uri, bundle_path.read_text())
    finally:
        client.close()
    click.echo(f"signed {uri}: {signed.digest}; bundle attached as OCI referrer {referrer}")
    click.echo(f"set spec.model.uri: {uri}")
    click.echo(f"set spec.model.digest: {signed.digest}")


@cli.command()
@click.argument("model_path", type=click.Path(exists=True, path_type=Path))
@click.option("--output", type=click.Path(dir_okay=False, path_type=Path), help="Write the scan predicate (JSON) here.")
@click.option("--json", "as_json", is_flag=True, help="Print the scan predicate on stdout.")
def scan(model_path: Path, output: Path | None, as_json: bool) -> None:
    """Find model files that run code when loaded (pickle, joblib, PyTorch, numpy, Keras Lambda layers).

    Exit 0 nothing unsafe, 1 unsafe content or a file the scanner could not read to its end, 2 usage or input
    error. The predicate (--output) is what `devmlops attest --predicate-type scan` signs.
    """
    from devmlops.adapters.scan import scan_model

    result = scan_model(model_path)
    predicate = result.predicate()
    if output is not None:
        output.write_text(json.dumps(predicate, indent=2) + "\n")
    summary = predicate["summary"]
    counts = ", ".join(f"{summary[k]} {k}" for k in ("unsafe", "errors", "suspicious", "skipped"))
    text = f"devmlops scan: {summary['filesScanned']} file(s) scanned in {result.seconds:.2f}s: {counts}"
    if not result.ok:
        text = "devmlops scan: UNSAFE: " + "; ".join(result.problems()[:10]) + f"\n{text}"
    _finish(result.ok, predicate, text, as_json)


@cli.command()
@click.argument("model_path", type=click.Path(exists=True, path_type=Path))
@click.option("--data", "data_path", required=True, type=_PATH, help="Held-out data (CSV with a header row).")
@click.option("--target", required=True, help="The column to predict.")
@click.option("--sensitive-feature", "sensitive", multiple=True, help="A column to measure fairness over (repeatable).")
@click.option("--exclude", multiple=True, help="A column the model does not take as a feature (repeatable).")
@click.option(
    "--epsilon",
    default=0.1,
    show_default=True,
    type=click.FloatRange(0, 10),
    help="Perturbation bound, in feature standard deviations (L-inf).",
)
@click.option("--no-robustness", is_flag=True, help="Skip the robustness figure.")
@click.option(
    "--baseline-bins",
    default=10,
    show_default=True,
    type=click.IntRange(0, 50),
    help="Quantile bins per feature of the drift baseline in evaluation.json (0: no baseline).",
)
@click.option(
    "--output-dir",
    required=True,
    type=click.Path(file_okay=False, path_type=Path),
    help="Writes evaluation.json, fairness.json (with --sensitive-feature) and robustness.json: predicates for attest.",
)
def evaluate(
    model_path: Path,
    data_path: Path,
    target: str,
    sensitive: tuple[str, ...],
    exclude: tuple[str, ...],
    epsilon: float,
    no_robustness: bool,
    baseline_bins: int,
    output_dir: Path,
) -> None:
    """Performance (scikit-learn), fairness by group (fairlearn) and robustness (ART) of a classifier.

    Needs the extra devmlops[evaluate]. The model file is scanned before it is loaded. Exit 0 written, 2 usage or
    input error (thresholds are the policy's job: Rego over the signed predicates).
    """
    from devmlops.adapters.evaluate import evaluate_model

    result = evaluate_model(
        model_path,
        data_path,
        target=target,
        sensitive_features=sensitive,
        exclude=exclude,
        epsilon=epsilon,
        robustness=not no_robustness,
        baseline_bins=baseline_bins,
    )
    output_dir.mkdir(parents=True, exist_ok=True)
    for name, predicate in (
        ("evaluation", result.evaluation),
        ("fairness", result.fairness),
        ("robustness", result.robustness),
    ):
        if predicate is not None:
            (output_dir / f"{name}.json").write_text(json.dumps(predicate, indent=2) + "\n")
    metrics = result.evaluation["metrics"]
    click.echo(f"accuracy {metrics['accuracy']:.4f}, f1 {metrics['f1']:.4f} in {result.seconds:.2f}s")
    for feature in (result.fairness or {}).get("sensitiveFeatures", []):
        click.echo(
            f"{feature['name']}: demographic parity difference {feature['demographicParityDifference']:.4f}, "
            f"equalized odds difference {feature['equalizedOddsDifference']:.4f}"
        )
    if result.robustness is not None:
        click.echo(
            f"robustness ({result.robustness['attack']['name']}, epsilon {epsilon:g}): accuracy "
            f"{result.robustness['cleanAccuracy']:.4f} -> {result.robustness['perturbedAccuracy']:.4f}"
        )
    click.echo(f"predicates written to {output_dir}")


@cli.command()
@click.option(
    "--predicate-type",
    required=True,
    help="A predicate type URI, or a devmlops short name: evaluation, fairness, robustness, scan, dataset-audit.",
)
@click.option("--predicate", "predicate_file", required=True, type=_PATH, help="The predicate (JSON object).")
@click.option("--model-digest", required=True, help="The model's digest, sha256:... (what devmlops sign printed).")
@click.option("--model-name", default="model", show_default=True, help="The subject's name.")
@click.option("--output", required=True, type=click.Path(dir_okay=False, path_type=Path), help="The bundle to write.")
@click.option("--private-key", type=_PATH, help="EC private key (PEM).")
@click.option(
    "--certificate-chain",
    multiple=True,
    type=_PATH,
    help="Signing certificate first, then intermediates (PEM); with --private-key.",
)
@click.option("--sigstore", "use_sigstore", is_flag=True, help="Sign keyless with Sigstore (needs network and OIDC).")
def attest(
    predicate_type: str,
    predicate_file: Path,
    model_digest: str,
    model_name: str,
    output: Path,
    private_key: Path | None,
    certificate_chain: tuple[Path, ...],
    use_sigstore: bool,
) -> None:
    """Sign evidence about a model: an in-toto Statement v1 (subject: the model digest) in a DSSE envelope inside a
    Sigstore bundle, for spec.attestations of a ModelDeployment. Exit 0 written, 2 usage or input error."""
    from devmlops.adapters.attest import build_statement, predicate_type_uri, sign_attestation

    if use_sigstore == bool(private_key):
        raise click.UsageError("give either --private-key (optionally with --certificate-chain) or --sigstore")
    try:
        predicate = json.loads(predicate_file.read_text())
    except (OSError, ValueError) as exc:
        raise InvalidInputError(f"--predicate {predicate_file}: not a JSON file ({exc})") from exc
    uri = predicate_type_uri(predicate_type)
    statement = build_statement(uri, predicate, model_digest, model_name)
    bundle = sign_attestation(
        statement, private_key=private_key, certificate_chain=certificate_chain, use_sigstore=use_sigstore
    )
    output.write_text(bundle)
    click.echo(f"attested {uri} for {model_name} {model_digest} -> {output}")


@cli.command("storage-initializer")
@click.argument("source_uri")
@click.argument("destination", type=click.Path(file_okay=False, path_type=Path))
def storage_initializer(source_uri: str, destination: Path) -> None:
    """Fetch a model, then verify its signature and bytes against the plan in $DEVMLOPS_VERIFICATION.

    Runs as the serving pod's storage initializer (KServe ClusterStorageContainer for devmlops+ URIs, or the
    Triton init container): a non-zero exit keeps the model server from starting.
    """
    from devmlops.adapters.servingverify import ENV_PLAN, VerificationPlan, run_plan
    from devmlops.core.ports import VerificationFailed, VerificationUnavailable

    plan = VerificationPlan.from_json(os.environ.get(ENV_PLAN, ""))
    try:
        run_plan(source_uri, destination, plan)
    except (VerificationFailed, VerificationUnavailable) as exc:
        click.echo(f"devmlops: NOT serving {source_uri}: {exc.user_message}", err=True)
        sys.exit(EXIT_FAILED)


def _address(text: str, option: str) -> tuple[str, int]:
    host, _sep, port = text.rpartition(":")
    if not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise click.BadParameter(f"expected HOST:PORT, got {text!r}", param_hint=option)
    return host, int(port)


@cli.command()
@click.option("--upstream", required=True, help="The model server, on the Pod's loopback (http://127.0.0.1:8080).")
@click.option("--listen", default="0.0.0.0:8000", show_default=True, help="HOST:PORT the guard serves on.")
@click.option("--metrics-listen", default="0.0.0.0:9090", show_default=True, help="HOST:PORT of /metrics, /healthz.")
@click.option("--model", default="", help="The ModelDeployment's name, for metrics and audit lines.")
@click.option("--digest", default="", help="The served model's digest, for metrics and audit lines.")
@click.option(
    "--config",
    "config_json",
    required=True,
    help="The guard as JSON: a ModelDeployment's spec.guard, with the traffic split and the signed drift baseline "
    "(the operator renders it).",
)
def guard(upstream: str, listen: str, metrics_listen: str, model: str, digest: str, config_json: str) -> None:
    """Serve the guard in front of a model server: rate limits, size and schema checks, prompt and output checks,
    one audit line per request (stdout), Prometheus metrics. Nothing reaches the model server past a failed check."""
    from devmlops.core.guard import parse_guard_config
    from devmlops.guard.app import GuardSettings
    from devmlops.guard.clusterdns import absolute_split
    from devmlops.guard.main import run

    try:
        config = parse_guard_config(config_json)
    except ValueError as exc:  # pydantic's ValidationError is one; its text names the field
        raise click.BadParameter(str(exc), param_hint="--config") from None
    checks = [c for c in (config.guard.input, config.guard.output) if c is not None]
    secrets = None
    if any(c.secrets for c in checks):
        from devmlops.adapters.secretscan import secret_scanner

        secrets = secret_scanner()
    settings = GuardSettings(
        upstream=upstream,
        guard=config.guard,
        model=model,
        digest=digest,
        secrets=secrets,
        split=absolute_split(config.split, _resolv_conf()),
        baseline=config.baseline,
    )
    run(settings, _address(listen, "--listen"), _address(metrics_listen, "--metrics-listen"))


def _resolv_conf() -> str:
    """The Pod's resolver configuration (where the kubelet writes the cluster's DNS domain); none read is empty."""
    try:
        return Path("/etc/resolv.conf").read_text(encoding="utf-8", errors="replace")
    except OSError:
        return ""


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
