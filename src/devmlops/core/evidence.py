"""Evidence: the documents a ModelDeployment refers to, resolved by the shell before ``decide()`` runs."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from devmlops.core.exemptions import BreakGlass, Exemption
from devmlops.core.model import Decision
from devmlops.core.sbom import SbomSummary

__all__ = [
    "DEFAULT_SERVER_IMAGES",
    "ApprovalState",
    "Chain",
    "Document",
    "Evidence",
    "Identities",
    "ImageSignatures",
    "RegistryVersion",
    "SignedImages",
]

# Image substrings that make a workload a model server outside enforced namespaces (a courtesy there: inside an
# enforced namespace every Pod and workload is reviewed, whatever its image is called).
DEFAULT_SERVER_IMAGES = ("tritonserver", "vllm-openai", "kserve/sklearnserver", "kserve/huggingfaceserver")


@dataclass(frozen=True, slots=True)
class Document:
    """A resolved document, or why it could not be resolved. ``source`` says where it came from."""

    source: str
    text: str | None = None
    error: str = ""


@dataclass(frozen=True, slots=True, kw_only=True)
class RegistryVersion:
    """A registered model version as the shell resolved it, or why it could not (``error``, fail closed).

    ``requested`` is what the ModelDeployment named ("version 3" or "alias champion"); ``version`` the number it
    resolved to, ``source`` the storage location of the version's files, ``aliases`` and ``tags`` the version's own
    (tags are what devmlops reads its signature, ML-BOM and digest from, and what policies may forbid)."""

    registry: str  # "MLflow <tracking URI>": names the registry in every reason
    name: str
    requested: str
    version: str = ""
    source: str = ""
    aliases: tuple[str, ...] = ()
    tags: Mapping[str, str] = field(default_factory=dict)
    error: str = ""

    def describe(self) -> str:
        """``MLflow http://...: model 'iris' alias champion (version 3)`` for reasons and audit lines."""
        resolved = f" (version {self.version})" if self.version and self.requested != f"version {self.version}" else ""
        return f"{self.registry}: model '{self.name}' {self.requested}{resolved}"


@dataclass(frozen=True, slots=True, kw_only=True)
class ImageSignatures:
    """What the shell found checking ``image``'s signatures (OCI referrers) against the image authorities of the
    policies: ``signers`` maps an authority's fingerprint to the signer it verified; ``problems`` says why each
    bundle failed; ``error`` why none could be checked at all (unreachable registry, timeout: fail closed)."""

    image: str
    signers: Mapping[str, str] = field(default_factory=dict)
    bundles: int = 0
    problems: tuple[str, ...] = ()
    error: str = ""


@dataclass(frozen=True, slots=True)
class SignedImages:
    """The signatures the applying policies demand of the images a serving runtime or KServe's predictor runs:
    ``demands`` (policy name, its image authorities as (fingerprint, name)) for each policy that names some, and
    ``found``, each pinned image's signatures as the shell checked them against all those authorities."""

    demands: tuple[tuple[str, tuple[tuple[str, str], ...]], ...] = ()
    found: Mapping[str, ImageSignatures] = field(default_factory=dict)


@dataclass(frozen=True, slots=True, kw_only=True)
class ApprovalState:
    """The valid ModelApproval for this ModelDeployment's digest, as the shell found it (it owns the clock)."""

    approved: bool
    approver: str = ""
    name: str = ""
    expires: str = ""
    groups: tuple[str, ...] = ()  # the approver's groups when approving, as the mutating webhook stamped them
    problem: str = ""  # when not approved: why the nearest candidate does not count ('' when there is none)


@dataclass(frozen=True, slots=True, kw_only=True)
class Identities:
    """Who may write what in a model server's chain (AdmissionRequest userInfo.username)."""

    operator: str = "system:serviceaccount:devmlops-system:devmlops-operator"
    kserve: str = "system:serviceaccount:kserve:kserve-controller-manager"
    controllers: tuple[str, ...] = (
        "system:kube-controller-manager",
        "system:serviceaccount:kube-system:replicaset-controller",
        "system:serviceaccount:kube-system:deployment-controller",
    )
    # The EndpointSlice controller: the only writer of a model's Service's EndpointSlices (core/addresses.py). The
    # controller manager's own name is its identity without --use-service-account-credentials.
    endpoint_slices: tuple[str, ...] = (
        "system:serviceaccount:kube-system:endpointslice-controller",
        "system:kube-controller-manager",
    )
    # Who deletes a model's Service besides the operator and KServe (core/addresses.py): the garbage collector (the
    # model's own deletion), the namespace controller (its namespace's), the controller manager's own name without
    # --use-service-account-credentials.
    service_deleters: tuple[str, ...] = (
        "system:serviceaccount:kube-system:generic-garbage-collector",
        "system:serviceaccount:kube-system:namespace-controller",
        "system:kube-controller-manager",
    )


@dataclass(frozen=True, slots=True, kw_only=True)
class Chain:
    """What the shell found following an object's controller ownerReferences upwards, uid by uid, in its caches:
    the stored owners nearest first (ReplicaSet, Deployment, InferenceService), the ModelDeployment they lead to
    (None, with ``broken`` saying why, when they do not), that ModelDeployment decided at the serving stage, the
    verification plan derived again from it and the cluster policies, and the image allow-lists of the policies
    that select it (policy name, globs)."""

    hops: tuple[Mapping[str, Any], ...] = ()
    model: Mapping[str, Any] | None = None
    broken: str = ""
    decision: Decision | None = None  # for the version the chain's child serves (a rollout's stable one, or the spec's)
    plan_json: str = ""
    stable_plan_json: str = ""  # a gated rollout's stable version (core/rollout.py), '' when none serves
    baseline_json: str = ""  # the signed drift baseline derived again (core/baseline.py): the guard's must be it
    stable_baseline_json: str = ""  # the same for a gated rollout's stable version
    image_allow_lists: tuple[tuple[str, tuple[str, ...]], ...] = ()
    # The S3 endpoints each ClusterModelPolicy selecting the model allows its storage initializer (core/storageinit.py).
    s3_endpoint_allow_lists: tuple[tuple[str, tuple[str, ...]], ...] = ()
    signed_images: SignedImages = field(default_factory=SignedImages)  # of KServe's predictor Deployment under review


@dataclass(frozen=True, slots=True, kw_only=True)
class Evidence:
    signatures: tuple[Document, ...] = ()
    sbom: Document | None = None
    sbom_summary: SbomSummary | None = None
    sbom_error: str = ""
    sbom_signature: Document | None = None
    attestations: tuple[Document, ...] = ()  # spec.attestations: evidence bundles (in-toto statements about the model)
    namespace_labels: Mapping[str, str] = field(default_factory=dict)
    approval: ApprovalState | None = None
    target: Mapping[str, Any] | None = None  # the ModelDeployment a ModelApproval names
    # For a new ModelApproval whose target a ServiceAccount requested: how the approver may act as that account ('' when
    # they may not; core/approvalreview.py requester_account).
    approver_acts_as: str = ""
    # For a new ModelApproval by a ServiceAccount: how the requester may act as that account ('' when they may not).
    requester_acts_as: str = ""
    now: str = ""  # RFC 3339, from the shell's clock (the core has none)
    requester_stamped: bool = False  # the mutating webhook stamps devmlops.io/requested-by
    model_server_images: tuple[str, ...] = DEFAULT_SERVER_IMAGES
    chain: Chain | None = None  # for a Pod, workload, scale or InferenceService: its controller chain
    scaled: Mapping[str, Any] | None = None  # for a scale subresource: the stored workload being scaled
    # For an exec, attach or port-forward from a namespace not under enforcement: the labels of the Pod it opens, as
    # stored (None: not read, or no such Pod); one that wears a model's routing labels is opened only under break-glass.
    connected_pod_labels: Mapping[str, str] | None = None
    reserved_for: str = ""  # for a Service: the ModelDeployment whose Service its name is (core/workloads.py)
    # For an EndpointSlice: each Service name it carries (or carried) that is a model's -> that model ("ModelDeployment
    # ns/name"); for a Service: each externalIP it adds that is a model Service's ClusterIP -> "Service ns/name of
    # ModelDeployment ns/name" (core/addresses.py).
    model_addresses: Mapping[str, str] = field(default_factory=dict)
    squatted_services: tuple[
        str, ...
    ] = ()  # for a new ModelDeployment: Services under its children's names it does not own
    # For a new ModelDeployment: (EndpointSlice, Service name) for each slice already labelled with one of its Services'
    # names that the EndpointSlice controller does not keep for a model's Service (core/addresses.py: waiting_slices).
    squatted_slices: tuple[tuple[str, str], ...] = ()
    # For a new ModelDeployment whose name ends with a suffix of another model's children (core/workloads.py
    # SERVICE_SUFFIXES: '-canary', '-predictor', ...): that suffix.
    reserved_suffix: str = ""
    exemptions: tuple[Exemption, ...] = ()
    break_glass: tuple[BreakGlass, ...] = ()
    identities: Identities = field(default_factory=Identities)
    verifier_image: str = "devmlops:0.1.0"  # the devmlops storage initializer's image, as the cluster installs it
    image_allow_lists: tuple[tuple[str, tuple[str, ...]], ...] = ()  # cluster policies selecting the namespace
    signed_images: SignedImages = field(default_factory=SignedImages)  # of a serving runtime under review
    registry: RegistryVersion | None = None  # spec.model.registry, resolved (None: not named, or no resolver)
    image_signature: ImageSignatures | None = None  # spec.runtime.image's signatures, checked (None: not asked)
    # devmlops's own image (the guard's and the storage initializer's, as the cluster installs it), checked where a
    # policy demands it signed (imageSignatures.devmlopsImage); None: not asked
    devmlops_image_signature: ImageSignatures | None = None
    # A running KServe model's server images (its predictor Deployment's, the guard aside), each image's signatures
    # as checked; None where nobody looked (admission: the runtime is checked when written and on KServe's writes).
    runtime_image_signatures: Mapping[str, ImageSignatures] | None = None
