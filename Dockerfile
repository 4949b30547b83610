# One image for every devmlops process: the admission webhook, the kopf operator, the CLI and the model servers'
# storage initializer (`devmlops webhook|operator|check|storage-initializer ...`; the chart passes the subcommand).
#
#   docker build -t devmlops:dev .                                   (or: make image)
#   docker build --build-arg WITH_KSERVE=true -t devmlops:dev .      (adds the kserve extra: kserve-storage, for
#                                                                      s3/gs/azure/hf model URIs in the initializer)
#
# Pin the base by digest for reproducible, tamper-evident builds (both stages must use the same image, because the
# venv's python is a symlink to the base image's interpreter):
#   docker build --build-arg PYTHON_IMAGE=python:3.11.14-slim-bookworm@sha256:<digest> .
#
# Runtime contract (what the chart's securityContext expects): runs as 65532:65532, needs no writable path except
# /tmp (HOME=/tmp, no bytecode written at runtime), so readOnlyRootFilesystem: true works with an emptyDir on /tmp.
ARG PYTHON_IMAGE=python:3.11.14-slim-bookworm

# ---------------------------------------------------------------------------------------------------------------------
FROM ${PYTHON_IMAGE} AS builder

# true: install devmlops[kserve] (kserve-storage and its cloud SDKs; a much larger image). Default: the core only.
ARG WITH_KSERVE=false

ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_ROOT_USER_ACTION=ignore

# Every dependency (the kserve extra's too) installs from wheels on linux/amd64, so no compiler is installed here.
RUN python -m venv /opt/devmlops

WORKDIR /src
# What `pip wheel .` needs: the metadata (pyproject.toml names README.md as the readme) and the package under src/.
COPY pyproject.toml README.md ./
COPY src ./src

RUN python -m pip wheel --no-deps --wheel-dir /wheels . \
    && case "$WITH_KSERVE" in \
         true|1|yes) extras="[kserve]" ;; \
         false|0|no|"") extras="" ;; \
         *) echo "WITH_KSERVE must be true or false, got '$WITH_KSERVE'" >&2; exit 2 ;; \
       esac \
    && wheel="$(ls /wheels/devmlops-*.whl)" \
    && /opt/devmlops/bin/pip install "devmlops${extras} @ file://${wheel}" \
    && /opt/devmlops/bin/pip check \
    && /opt/devmlops/bin/devmlops --help >/dev/null

# pip and setuptools are not needed at runtime: fewer files, fewer CVEs to triage.
RUN /opt/devmlops/bin/python -m pip uninstall --yes pip setuptools

# ---------------------------------------------------------------------------------------------------------------------
FROM ${PYTHON_IMAGE} AS runtime

ARG VERSION=0.1.0
ARG REVISION=unknown
ARG CREATED=unknown
ARG PYTHON_IMAGE

LABEL org.opencontainers.image.title="devmlops" \
      org.opencontainers.image.description="Admission webhook, operator, CLI and storage initializer that let only signed, SBOM-described, policy-compliant ML models reach production on Kubernetes." \
      org.opencontainers.image.source="https://github.com/devmlops/devmlops" \
      org.opencontainers.image.url="https://github.com/devmlops/devmlops" \
      org.opencontainers.image.documentation="https://github.com/devmlops/devmlops#readme" \
      org.opencontainers.image.licenses="Apache-2.0" \
      org.opencontainers.image.vendor="devmlops" \
      org.opencontainers.image.version="${VERSION}" \
      org.opencontainers.image.revision="${REVISION}" \
      org.opencontainers.image.created="${CREATED}" \
      org.opencontainers.image.base.name="${PYTHON_IMAGE}"

ENV VIRTUAL_ENV=/opt/devmlops \
    PATH=/opt/devmlops/bin:$PATH \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    HOME=/tmp

# Owned by root and read-only for the runtime user; the bytecode pip compiled in the builder comes along.
COPY --from=builder /opt/devmlops /opt/devmlops

WORKDIR /tmp
USER 65532:65532

ENTRYPOINT ["devmlops"]
CMD ["--help"]
