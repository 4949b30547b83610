#!/usr/bin/env bash
# End-to-end run on a real cluster: a kind cluster, the devmlops image built and loaded into it, the chart installed,
# config/samples/*.yaml applied one by one and each outcome checked against its devmlops.io/expect annotation,
# the operator's InferenceService child of the admitted fraud-detector checked, then `helm test`. Prints a table
# and exits 1 on any mismatch (2 when a tool is missing). Needs Docker, kind, kubectl and helm (`make kind-e2e`;
# CI: .github/workflows/kind-e2e.yaml).
#
# Environment:
#   KIND_CLUSTER     cluster name (default devmlops-e2e); an existing cluster of that name is reused
#   KEEP_CLUSTER=1   keep the cluster at the end (default: it is deleted, reused or not)
#   KIND_NODE_IMAGE  node image for `kind create cluster --image` (default: kind's own; the chart needs >= 1.30)
#
# Every wait is bounded: each loop has a deadline, every kubectl call a request timeout.
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."

CLUSTER="${KIND_CLUSTER:-devmlops-e2e}"
CONTEXT="kind-${CLUSTER}"
IMAGE_REPOSITORY=devmlops
IMAGE_TAG=e2e
IMAGE="${IMAGE_REPOSITORY}:${IMAGE_TAG}"
RELEASE=devmlops
NAMESPACE=devmlops-system
VALIDATING="${RELEASE}-validating"
MUTATING="${RELEASE}-mutating"
SAMPLES_DIR=config/samples
# The admitted sample whose operator-made child is checked, and where it lives.
CHILD_OWNER=fraud-detector
CHILD_NAMESPACE=default

say() { printf '[kind-e2e] %s\n' "$*" >&2; }
die() { printf '[kind-e2e] error: %s\n' "$*" >&2; exit 1; }

# --- tools ----------------------------------------------------------------------------------------------------------
missing=()
for tool in docker kind kubectl helm; do
    command -v "$tool" >/dev/null 2>&1 || missing+=("$tool")
done
if ((${#missing[@]})); then
    printf '[kind-e2e] missing on PATH: %s. This run needs Docker, kind, kubectl and helm (see .github/workflows/kind-e2e.yaml).\n' \
        "${missing[*]}" >&2
    exit 2
fi
if ! docker info >/dev/null 2>&1; then
    say "the Docker engine is not reachable ('docker info' failed); start it and retry"
    exit 2
fi

k() { kubectl --context "$CONTEXT" --request-timeout=30s "$@"; }

# --- results table ----------------------------------------------------------------------------------------------------
rows=()
mismatches=0
record() {  # record CHECK EXPECTED RESULT DETAIL
    local check="$1" expected="$2" result="$3" detail="$4" verdict=ok
    if [[ "$expected" != "$result" ]]; then
        verdict=MISMATCH
        mismatches=$((mismatches + 1))
    fi
    detail="${detail//$'\n'/ }"
    detail="${detail//$'\t'/ }"
    if ((${#detail} > 110)); then
        detail="${detail:0:107}..."
    fi
    rows+=("$check"$'\t'"$expected"$'\t'"$result"$'\t'"$verdict"$'\t'"$detail")
    say "$check: expected $expected, got $result ($verdict)"
}
print_table() {
    local width=10 row check
    for row in "${rows[@]}"; do
        check="${row%%$'\t'*}"
        if ((${#check} > width)); then
            width=${#check}
        fi
    done
    printf '\n%-*s  %-9s  %-9s  %-8s  %s\n' "$width" CHECK EXPECTED RESULT VERDICT DETAIL
    local expected result verdict detail
    for row in "${rows[@]}"; do
        IFS=$'\t' read -r check expected result verdict detail <<<"$row"
        printf '%-*s  %-9s  %-9s  %-8s  %s\n' "$width" "$check" "$expected" "$result" "$verdict" "$detail"
    done
    printf '\n'
}

# --- cluster lifecycle --------------------------------------------------------------------------------------------
diagnostics() {
    say "diagnostics (cluster $CLUSTER)"
    k get pods -A -o wide || true
    k -n "$NAMESPACE" get events --sort-by=.lastTimestamp 2>/dev/null | tail -n 40 || true
    local deploy
    for deploy in "${RELEASE}-webhook" "${RELEASE}-operator"; do
        say "logs of deploy/$deploy"
        k -n "$NAMESPACE" logs "deploy/$deploy" --all-containers --tail=80 || true
    done
}
cleanup() {
    local rc=$?
    trap - EXIT
    if ((rc != 0)); then
        diagnostics
    fi
    if [[ "${KEEP_CLUSTER:-0}" == 1 ]]; then
        say "keeping cluster $CLUSTER (KEEP_CLUSTER=1); kubectl --context $CONTEXT ...; delete it with: kind delete cluster --name $CLUSTER"
    else
        say "deleting cluster $CLUSTER (KEEP_CLUSTER=1 keeps it)"
        kind delete cluster --name "$CLUSTER" >&2 || true
    fi
    exit "$rc"
}

reused=0
if kind get clusters 2>/dev/null | grep -qx "$CLUSTER"; then
    reused=1
    say "reusing kind cluster $CLUSTER"
fi
trap cleanup EXIT
if ((!reused)); then
    say "creating kind cluster $CLUSTER"
    kind create cluster --name "$CLUSTER" ${KIND_NODE_IMAGE:+--image "$KIND_NODE_IMAGE"} --wait 180s
fi
k cluster-info >/dev/null || die "cannot reach the cluster through context $CONTEXT"

# --- image ------------------------------------------------------------------------------------------------------------
say "building $IMAGE"
docker build -t "$IMAGE" .
say "loading $IMAGE into $CLUSTER"
kind load docker-image "$IMAGE" --name "$CLUSTER"

# --- KServe CRDs (the operator makes InferenceServices) and the chart -------------------------------------------------
# KServe's own CRDs at the version the local stack runs (its kserve-crd chart; the InferenceService CRD is too big for
# client-side `kubectl apply`).
# shellcheck source=hack/versions.env
source hack/versions.env
say "installing KServe's CRDs ($KSERVE_VERSION)"
helm upgrade --install kserve-crd oci://ghcr.io/kserve/charts/kserve-crd --version "$KSERVE_VERSION" \
    --kube-context "$CONTEXT" -n kserve --create-namespace --wait --timeout 120s
k wait --for=condition=Established crd/inferenceservices.serving.kserve.io --timeout=60s

say "installing the chart"
helm upgrade --install "$RELEASE" charts/devmlops \
    --kube-context "$CONTEXT" \
    -n "$NAMESPACE" --create-namespace \
    --set image.repository="$IMAGE_REPOSITORY" \
    --set image.tag="$IMAGE_TAG" \
    --set image.pullPolicy=Never \
    --set webhook.topologySpread.whenUnsatisfiable=ScheduleAnyway \
    --wait --timeout 5m
if ((reused)); then
    # Same tag, new image: restart so the pods run what was just loaded.
    say "restarting the devmlops Deployments (reused cluster)"
    mapfile -t deployments < <(k -n "$NAMESPACE" get deploy -l "app.kubernetes.io/instance=$RELEASE" -o name)
    for deploy in "${deployments[@]}"; do
        k -n "$NAMESPACE" rollout restart "$deploy"
    done
    for deploy in "${deployments[@]}"; do
        k -n "$NAMESPACE" rollout status "$deploy" --timeout=300s
    done
fi

# --- the operator patches the CA into the webhook configurations --------------------------------------------------------
ca_bundles_ready() {  # ca_bundles_ready KIND NAME: every webhook of the configuration has a non-empty caBundle
    local lines
    lines="$(k get "$1" "$2" -o jsonpath='{range .webhooks[*]}{.name}={.clientConfig.caBundle}{"\n"}{end}' 2>/dev/null)" ||
        return 1
    [[ -n "$lines" ]] || return 1
    ! grep -q '=$' <<<"$lines"
}
say "waiting for the caBundle in every webhook of $VALIDATING and $MUTATING"
deadline=$((SECONDS + 180))
until ca_bundles_ready validatingwebhookconfiguration "$VALIDATING" &&
    ca_bundles_ready mutatingwebhookconfiguration "$MUTATING"; do
    ((SECONDS < deadline)) || die "no caBundle in every webhook of $VALIDATING / $MUTATING after 180s (is the operator running?)"
    sleep 2
done

# --- samples ------------------------------------------------------------------------------------------------------------
expectation() {  # the devmlops.io/expect annotation of a sample file (admitted when it has none)
    local value
    value="$(sed -n 's/^[[:space:]]*devmlops\.io\/expect:[[:space:]]*//p' "$1" | head -n 1 | tr -d "\"' \r")"
    printf '%s' "${value:-admitted}"
}
kind_of() { sed -n 's/^kind:[[:space:]]*//p' "$1" | head -n 1 | tr -d "\"' \r"; }
api_of() { sed -n 's/^apiVersion:[[:space:]]*//p' "$1" | head -n 1 | tr -d "\"' \r"; }

# classify EXIT_CODE OUTPUT: admitted | denied | rejected | error
classify() {
    local rc="$1" out="$2"
    if ((rc == 0)); then
        echo admitted
    elif grep -q 'denied by devmlops' <<<"$out" || grep -qE 'admission webhook "[^"]*" denied the request' <<<"$out"; then
        echo denied  # a webhook answered no
    elif grep -qiE 'failed calling webhook|failed to call webhook|no endpoints available|connection refused|context deadline exceeded|i/o timeout' <<<"$out"; then
        echo error  # the webhook was not reached: neither an admission nor a denial
    elif grep -qE ' is invalid: |Invalid value|Unsupported value|Required value' <<<"$out"; then
        echo rejected  # the API server's schema (OpenAPI / CEL), before any webhook
    else
        echo error
    fi
}
# what the API server said, without kubectl's prefix
reason() {
    local out="$1"
    if [[ "$out" == *" denied the request: "* ]]; then
        out="${out#* denied the request: }"
    fi
    printf '%s' "$out" | grep -v '^Warning: ' | head -n 3 | tr '\n' ' '
}

shopt -s nullglob
samples=("$SAMPLES_DIR"/*.yaml)
shopt -u nullglob
((${#samples[@]})) || die "no samples in $SAMPLES_DIR"

# A devmlops.io object goes through the webhook: any answer (admitted or denied) shows it is reachable over TLS.
probe="${samples[0]}"
for f in "${samples[@]}"; do
    if [[ "$(api_of "$f")" == devmlops.io/* ]]; then
        probe="$f"
        break
    fi
done
say "waiting until the webhook answers (server-side dry run of $probe)"
deadline=$((SECONDS + 120))
while :; do
    if out="$(k apply --dry-run=server -f "$probe" 2>&1)"; then rc=0; else rc=$?; fi
    [[ "$(classify "$rc" "$out")" != error ]] && break
    ((SECONDS < deadline)) || die "the webhook did not answer within 120s: $out"
    sleep 2
done

# The webhook learns policies and evidence through watches, asynchronously. Before the first ModelDeployment, wait
# (bounded) until the samples that should be admitted are admitted in a server-side dry run several times in a row
# (the webhook has replicas behind a Service; each must have caught up). A sample that never is admitted is left to
# the real apply below to report.
settle_models() {
    local probes=() f
    for f in "${samples[@]}"; do
        if [[ "$(kind_of "$f")" == ModelDeployment && "$(expectation "$f")" == admitted ]]; then
            probes+=("$f")
        fi
    done
    if ((${#probes[@]} == 0)); then
        return 0
    fi
    say "waiting until the webhook has the policies and evidence (dry runs of ${probes[*]})"
    local streak=0 deadline=$((SECONDS + 90)) all out=""
    while ((streak < 5)); do
        all=1
        for f in "${probes[@]}"; do
            if ! out="$(k apply --dry-run=server -f "$f" 2>&1)"; then
                all=0
                break
            fi
        done
        if ((all)); then streak=$((streak + 1)); else streak=0; fi
        if ((SECONDS >= deadline)); then
            say "the webhook did not admit ${probes[*]} in a dry run within 90s (last answer: $(reason "$out")); applying anyway"
            return 0
        fi
        sleep 1
    done
    return 0
}

settled=0
for f in "${samples[@]}"; do
    expected="$(expectation "$f")"
    kind="$(kind_of "$f")"
    if [[ "$kind" == ModelDeployment ]] && ((!settled)); then
        settle_models
        settled=1
    fi
    if out="$(k apply -f "$f" 2>&1)"; then rc=0; else rc=$?; fi
    result="$(classify "$rc" "$out")"
    record "$(basename "$f") ($kind)" "$expected" "$result" "$(reason "$out")"
done

# --- the operator's child ------------------------------------------------------------------------------------------------
say "waiting (60s at most) for the InferenceService child of ModelDeployment/$CHILD_OWNER"
child_result=absent
child_detail="no status.child on ModelDeployment/$CHILD_OWNER within 60s"
deadline=$((SECONDS + 60))
while ((SECONDS < deadline)); do
    ref="$(k -n "$CHILD_NAMESPACE" get modeldeployment "$CHILD_OWNER" \
        -o jsonpath='{.status.child.kind}/{.status.child.name}' 2>/dev/null || true)"
    if [[ "$ref" == InferenceService/?* ]]; then
        if k -n "$CHILD_NAMESPACE" get inferenceservice "${ref#InferenceService/}" >/dev/null 2>&1; then
            child_result=present
            child_detail="$ref"
            break
        fi
        child_detail="status names $ref but it does not exist"
    elif [[ -n "$ref" && "$ref" != / ]]; then
        child_detail="status.child is $ref, not an InferenceService"
    fi
    sleep 2
done
record "child of ModelDeployment/$CHILD_OWNER" present "$child_result" "$child_detail"

# --- helm test -------------------------------------------------------------------------------------------------------------
# No --logs: the test pod is deleted on success (hook-succeeded) and helm then fails to fetch its logs.
say "helm test"
if out="$(helm test "$RELEASE" --kube-context "$CONTEXT" -n "$NAMESPACE" --timeout 3m 2>&1)"; then
    test_result=passed
else
    test_result=failed
    k -n "$NAMESPACE" logs -l app.kubernetes.io/component=test --all-containers --tail=50 >&2 || true
fi
printf '%s\n' "$out" >&2
record "helm test $RELEASE" passed "$test_result" "$(printf '%s' "$out" | grep -E 'Phase:|https://' | tr '\n' ' ')"

print_table
if ((mismatches)); then
    say "$mismatches check(s) did not go as expected"
    exit 1
fi
say "every check went as expected"
