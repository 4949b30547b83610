#!/usr/bin/env bash
# Build the local tools from Go modules into a versioned cache outside the repository, then print the folder that holds
# them: the control plane (kube-apiserver, kube-controller-manager, etcd, KServe, helm, opa) and the node's parts
# (kubelet, kube-scheduler, kube-proxy, crictl, kubectl for debugging, and the sandbox image's pause binary, compiled
# with cc from the same Kubernetes module). The node's Debian packages (containerd, runc, CNI plugins, ...) are
# .ci/run's job.
#
# - KUBEBUILDER_ASSETS naming a folder with kube-apiserver and etcd: those are used (every other tool is still looked
#   up there first, then built if missing).
# - DEVMLOPS_TOOLS_CACHE overrides the cache root (default: ~/.cache/devmlops/tools).
# - A second run finds every binary in place and returns within seconds.
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
# shellcheck source=hack/versions.env
source "$here/versions.env"

cache_root="${DEVMLOPS_TOOLS_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/devmlops/tools}"
bin_dir="$cache_root/k8s-${KUBERNETES_VERSION}_etcd-${ETCD_VERSION}_kserve-${KSERVE_VERSION}_helm-${HELM_VERSION}_opa-${OPA_VERSION}_r${TOOLS_RECIPE}"
work_root="$cache_root/build"

say() { printf '[tools] %s\n' "$*" >&2; }
die() { printf '[tools] error: %s\n' "$*" >&2; exit 1; }

require_go() {
    command -v go >/dev/null 2>&1 || die "Go is not installed. Install Go >= 1.24 (https://go.dev/doc/install, or 'apt-get install golang'), or set KUBEBUILDER_ASSETS to a folder holding kube-apiserver and etcd."
}

# Run a long build step with a heartbeat so that the first (multi-minute) build shows progress.
with_progress() {
    local label="$1"; shift
    local started=$SECONDS
    "$@" &
    local pid=$!
    while kill -0 "$pid" 2>/dev/null; do
        sleep 15
        kill -0 "$pid" 2>/dev/null && say "$label: still building ($((SECONDS - started))s)"
    done
    wait "$pid" || die "$label: build failed (see the go output above)"
    say "$label: done in $((SECONDS - started))s"
}

# Write a wrapper module that requires $module@$version and replaces every module the upstream go.mod
# replaces with a local ./staging path by its published version ($staging_version).
write_wrapper() {
    local dir="$1" module="$2" version="$3" staging_version="$4"
    mkdir -p "$dir"
    local upstream_mod
    upstream_mod="$(go mod download -json "$module@$version" | sed -n 's/^\s*"GoMod": "\(.*\)",$/\1/p')"
    [[ -f "$upstream_mod" ]] || die "could not download $module@$version from the Go module proxy"
    local go_line
    go_line="$(grep -m1 '^go ' "$upstream_mod")"
    {
        echo "module devmlops.local/tools/$(basename "$dir")"
        echo
        echo "$go_line"
        echo
        echo "require $module $version"
        # Local-path replaces such as "k8s.io/api => ./staging/src/k8s.io/api" become
        # "k8s.io/api => k8s.io/api v0.X.Y" (etcd's "=> ../api" likewise); placeholders are skipped.
        { grep -E '=> \.\.?/' "$upstream_mod" || true; } | grep -v FORBIDDEN |
            awk -v v="$staging_version" '{m = ($1 == "replace") ? $2 : $1; print "replace " m " => " m " " v}'
    } >"$dir/go.mod"
}

build_main() {
    # build_main LABEL WRAPPER_DIR MODULE VERSION STAGING_VERSION PACKAGE OUTPUT [LDFLAGS]
    local label="$1" dir="$2" module="$3" version="$4" staging_version="$5" package="$6" output="$7"
    local ldflags="-s -w ${8:-}"
    say "$label: preparing wrapper module for $module@$version"
    write_wrapper "$dir" "$module" "$version" "$staging_version"
    (cd "$dir" && GOFLAGS=-mod=mod go get "$package@$version" >/dev/null 2>&1 || (cd "$dir" && GOFLAGS=-mod=mod go get "$package@$version"))
    with_progress "$label" bash -c "cd '$dir' && GOFLAGS=-mod=mod CGO_ENABLED=0 go build -trimpath -ldflags='$ldflags' -o '$output.tmp' '$package' && mv '$output.tmp' '$output'"
}

build_kubernetes_component() {
    # kube-apiserver, kube-controller-manager, kubelet, kube-scheduler, kube-proxy and kubectl: one wrapper module over
    # k8s.io/kubernetes, each binary stamped with the version it reports (/version, --version) as the release build
    # does. Each build after the first reuses most of the Go build cache (the staging modules are shared).
    local name="$1" minor="${KUBERNETES_VERSION#v1.}"
    local pkg=k8s.io/component-base/version
    local stamp="-X $pkg.gitVersion=$KUBERNETES_VERSION -X $pkg.gitMajor=1 -X $pkg.gitMinor=${minor%%.*}"
    stamp+=" -X $pkg.gitTreeState=clean"
    build_main "$name" "$work_root/kube-apiserver-$KUBERNETES_VERSION" k8s.io/kubernetes "$KUBERNETES_VERSION" \
        "v0.$minor" "k8s.io/kubernetes/cmd/$name" "$bin_dir/$name" "$stamp"
}

build_pause() {
    # The sandbox image's entrypoint: build/pause/linux/pause.c from the same k8s.io/kubernetes module download,
    # compiled statically as the release Makefile does (gcc -Os -Wall -Werror -static). The harness wraps it into an
    # OCI image (umoci) that containerd uses as its sandbox image; nothing is pulled.
    command -v cc >/dev/null 2>&1 || die "pause: no C compiler ('apt-get install gcc libc6-dev')"
    local dir source
    dir="$(go mod download -json "k8s.io/kubernetes@$KUBERNETES_VERSION" | sed -n 's/^\s*"Dir": "\(.*\)",$/\1/p')"
    source="$dir/build/pause/linux/pause.c"
    [[ -f "$source" ]] || die "pause: $source not found in k8s.io/kubernetes@$KUBERNETES_VERSION"
    say "pause: compiling $source"
    cc -Os -Wall -Werror -static -DVERSION="$KUBERNETES_VERSION-devmlops" -o "$bin_dir/pause.tmp" "$source" ||
        die "pause: compilation failed (a static build needs libc6-dev)"
    strip "$bin_dir/pause.tmp" 2>/dev/null || true
    mv "$bin_dir/pause.tmp" "$bin_dir/pause"
}

build_kserve() {
    # KServe's controller (cmd/manager). A dependency's replace and exclude directives are ignored, so the wrapper
    # copies KServe's own (controller-runtime pinned to v0.19.x, an excluded grpc pseudo-version). The files the
    # harness installs come from the same module download and are kept beside the binary (copy_kserve_files); with
    # the binary in place, only they are copied again.
    local module=github.com/kserve/kserve dir="$work_root/kserve-$KSERVE_VERSION"
    local info upstream_mod upstream_dir
    info="$(go mod download -json "$module@$KSERVE_VERSION")" || die "could not download $module@$KSERVE_VERSION"
    upstream_mod="$(sed -n 's/^\s*"GoMod": "\(.*\)",$/\1/p' <<<"$info")"
    upstream_dir="$(sed -n 's/^\s*"Dir": "\(.*\)",$/\1/p' <<<"$info")"
    [[ -f "$upstream_mod" && -d "$upstream_dir/config/crd/full" ]] || die "$module@$KSERVE_VERSION: no go.mod or config/crd/full"
    if [[ -x "$bin_dir/kserve-manager" ]]; then
        copy_kserve_files "$upstream_dir"
        return
    fi
    say "kserve-manager: preparing wrapper module for $module@$KSERVE_VERSION"
    mkdir -p "$dir"
    {
        echo "module devmlops.local/tools/kserve"
        echo
        grep -m1 '^go ' "$upstream_mod"
        echo
        echo "require $module $KSERVE_VERSION"
        { grep -E '^(replace|exclude) ' "$upstream_mod" | grep -v '=> \.' || true; }
        # Block forms: "replace (" ... ")" and "exclude (" ... ")".
        awk '/^(replace|exclude) \($/ {kind=$1; next} /^\)/ {kind=""} kind != "" && $0 !~ /=> \./ {print kind, $0}' "$upstream_mod"
    } >"$dir/go.mod"
    (cd "$dir" && GOFLAGS=-mod=mod go get "$module/cmd/manager@$KSERVE_VERSION" >/dev/null 2>&1 ||
        (cd "$dir" && GOFLAGS=-mod=mod go get "$module/cmd/manager@$KSERVE_VERSION"))
    with_progress kserve-manager bash -c "cd '$dir' && GOFLAGS=-mod=mod CGO_ENABLED=0 go build -trimpath -ldflags='-s -w' -o '$bin_dir/kserve-manager.tmp' '$module/cmd/manager' && mv '$bin_dir/kserve-manager.tmp' '$bin_dir/kserve-manager'"
    copy_kserve_files "$upstream_dir"
}

copy_kserve_files() {
    # Data the harness reads at run time (never code): every CRD of config/crd/full (LLMInferenceService's in
    # llmisvc/), the webhook configurations (paths and rules), the inferenceservice-config ConfigMap (the harness
    # overrides a few keys), the sklearn ClusterServingRuntime and KServe's default ClusterStorageContainer (which a
    # KServe install adds; tests install it to check that verification does not depend on which one KServe picks).
    local upstream_dir="$1" crds="$bin_dir/kserve-crds" config="$bin_dir/kserve-config"
    say "kserve-manager: copying CRDs, webhook configurations and config from the KServe module"
    rm -rf "$crds.tmp" "$config.tmp" && mkdir -p "$crds.tmp/llmisvc" "$config.tmp"
    cp "$upstream_dir"/config/crd/full/*.yaml "$crds.tmp/"
    cp "$upstream_dir"/config/crd/full/llmisvc/*.yaml "$crds.tmp/llmisvc/"
    cp "$upstream_dir/config/webhook/manifests.yaml" "$config.tmp/webhooks.yaml"
    cp "$upstream_dir/config/configmap/inferenceservice.yaml" "$config.tmp/inferenceservice-config.yaml"
    cp "$upstream_dir/config/runtimes/kserve-sklearnserver.yaml" "$config.tmp/kserve-sklearnserver.yaml"
    cp "$upstream_dir/config/storagecontainers/default.yaml" "$config.tmp/default-storage-container.yaml"
    chmod -R u+w "$crds.tmp" "$config.tmp"
    find "$crds.tmp" -name kustomization.yaml -delete
    rm -rf "$crds" "$config" && mv "$crds.tmp" "$crds" && mv "$config.tmp" "$config"
}

build_etcd() {
    build_main etcd "$work_root/etcd-$ETCD_VERSION" go.etcd.io/etcd/server/v3 "$ETCD_VERSION" \
        "$ETCD_VERSION" go.etcd.io/etcd/server/v3 "$bin_dir/etcd"
}

go_install() {
    # go_install LABEL PACKAGE@VERSION OUTPUT_NAME [LDFLAGS]
    local label="$1" package="$2" name="$3" ldflags="-s -w ${4:-}"
    local gobin="$work_root/gobin-$label"
    mkdir -p "$gobin"
    with_progress "$label" env GOBIN="$gobin" CGO_ENABLED=0 go install -trimpath -ldflags="$ldflags" "$package"
    mv "$gobin/$name" "$bin_dir/$name"
}

build_helm() {
    # As helm's release build does: its version, and the Kubernetes version `helm template` and `helm lint` assume
    # without a cluster (unstamped, that is v1.20, older than the chart's kubeVersion). Stamp the one we build.
    local minor="${KUBERNETES_VERSION#v1.}" pkg=helm.sh/helm/v3
    local stamp="-X $pkg/internal/version.version=$HELM_VERSION"
    stamp+=" -X $pkg/pkg/chartutil.k8sVersionMajor=1 -X $pkg/pkg/chartutil.k8sVersionMinor=${minor%%.*}"
    stamp+=" -X $pkg/pkg/lint/rules.k8sVersionMajor=1 -X $pkg/pkg/lint/rules.k8sVersionMinor=${minor%%.*}"
    go_install helm "$pkg/cmd/helm@$HELM_VERSION" helm "$stamp"
}

main() {
    mkdir -p "$bin_dir" "$work_root"
    local assets="${KUBEBUILDER_ASSETS:-}"
    local optional_tools=(kube-controller-manager kserve-manager helm opa
        kubelet kube-scheduler kube-proxy crictl pause kubectl)
    if [[ -n "$assets" ]]; then
        [[ -x "$assets/kube-apiserver" && -x "$assets/etcd" ]] ||
            die "KUBEBUILDER_ASSETS=$assets lacks an executable kube-apiserver and etcd"
        say "using kube-apiserver and etcd from KUBEBUILDER_ASSETS=$assets"
        for tool in kube-apiserver etcd; do ln -sf "$assets/$tool" "$bin_dir/$tool"; done
        for tool in "${optional_tools[@]}"; do
            [[ -x "$assets/$tool" ]] && ln -sf "$assets/$tool" "$bin_dir/$tool"
        done
        for data in kserve-crds kserve-config; do
            [[ -d "$assets/$data" ]] && ln -sfn "$assets/$data" "$bin_dir/$data"
        done
    fi
    local missing=()
    for tool in etcd kube-apiserver "${optional_tools[@]}"; do
        [[ -x "$bin_dir/$tool" ]] || missing+=("$tool")
    done
    # KServe's CRDs and config are copied from its module beside the binary (cheap when the binary is there).
    [[ -x "$bin_dir/kserve-manager" && ! (-d "$bin_dir/kserve-crds/llmisvc" &&
        -f "$bin_dir/kserve-config/default-storage-container.yaml") ]] && missing+=(kserve-manager)
    if ((${#missing[@]} == 0)); then
        say "all tools present in $bin_dir"
        echo "$bin_dir"
        return
    fi
    require_go
    say "building ${missing[*]} into $bin_dir (a cold build of every tool takes about 25 minutes on 2 cores)"
    for tool in "${missing[@]}"; do
        case "$tool" in
            etcd) build_etcd ;;
            kube-apiserver | kube-controller-manager | kubelet | kube-scheduler | kube-proxy | kubectl)
                build_kubernetes_component "$tool" ;;
            crictl) go_install crictl "sigs.k8s.io/cri-tools/cmd/crictl@$CRI_TOOLS_VERSION" crictl \
                "-X sigs.k8s.io/cri-tools/pkg/version.Version=$CRI_TOOLS_VERSION" ;;
            pause) build_pause ;;
            kserve-manager) build_kserve ;;
            helm) build_helm ;;
            opa) go_install opa "github.com/open-policy-agent/opa@$OPA_VERSION" opa ;;
        esac
    done
    echo "$bin_dir"
}

main "$@"
