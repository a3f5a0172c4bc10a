#!/usr/bin/env bash
# Static checks of the delivery files: docker-compose.yml, nginx/, .github/workflows/,
# docker/Dockerfile, k8s/. Nothing is built or started; no Docker engine or cluster is needed.
#
#   scripts/check_delivery.sh            a missing tool is reported and skipped
#   CHECK_DELIVERY_STRICT=1 scripts/...  a missing tool is a failure
#
# Exit status: 0 when every check that ran passed (and, when strict, none was skipped).
set -euo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"
strict="${CHECK_DELIVERY_STRICT:-0}"
tmp="$(mktemp -d)"
trap 'rm -rf "$tmp"' EXIT

failed=0
skipped=0

# run NAME COMMAND...: run a check, print its output only when it fails.
run() {
    local name="$1"
    shift
    if "$@" >"$tmp/out" 2>&1; then
        echo "ok    $name"
    else
        echo "FAIL  $name"
        sed 's/^/      /' "$tmp/out"
        failed=$((failed + 1))
    fi
}

skip() {
    echo "skip  $1: $2"
    skipped=$((skipped + 1))
}

# find_tool NAME: print the path of NAME from .venv/bin or PATH.
find_tool() {
    if [[ -x "$root/.venv/bin/$1" ]]; then
        echo "$root/.venv/bin/$1"
    else
        command -v "$1" || true
    fi
}

# ---- docker compose config -------------------------------------------------------------------
# compose reads `.env` (env_file: and ${...} interpolation). Without one, check against a copy
# of .env.example whose required blanks get throwaway values.
compose_env="$root/.env"
if [[ ! -f "$compose_env" ]]; then
    compose_env="$tmp/compose.env"
    sed -e 's/^POSTGRES_PASSWORD=$/POSTGRES_PASSWORD=check-only-password/' \
        -e 's/^JWT_SECRET=$/JWT_SECRET=check-only-secret-check-only-secret-0123/' \
        .env.example >"$compose_env"
fi
compose_check() {
    STOREFRONT_ENV_FILE="$compose_env" "$@" --env-file "$compose_env" -f docker-compose.yml config -q
}
if docker compose version >/dev/null 2>&1; then
    run "docker compose config" compose_check docker compose
elif command -v docker-compose >/dev/null 2>&1; then
    # Debian's docker-compose (v1) validates against the Compose Specification schema too.
    run "docker-compose config ($(docker-compose version --short 2>/dev/null || echo v1))" \
        compose_check docker-compose
else
    skip "docker compose config" "neither the docker compose plugin nor docker-compose is installed"
fi

# ---- nginx -t ----------------------------------------------------------------------------------
# Exactly the procedure documented at the top of nginx/nginx.conf.
nginx_version() { nginx -v 2>&1 | sed -n 's|.*nginx/\([0-9.]*\).*|\1|p'; }
version_at_least() { [[ "$(printf '%s\n%s\n' "$2" "$1" | sort -V | head -n1)" == "$2" ]]; }

render_local_endpoints() {
    sed -e 's/@HTTP_PORT@/18080/g' \
        -e 's/@HTTPS_PORT@/18443/g' \
        -e 's/@GRPC_PORT@/15051/g' \
        -e 's/@REST_SERVERS@/server 127.0.0.1:18001; server 127.0.0.1:18002;/' \
        -e 's/@GRPC_SERVERS@/server 127.0.0.1:15001; server 127.0.0.1:15002;/' \
        nginx/local/endpoints.conf.in
}

downgrade_endpoints() {
    awk '
        /^[[:space:]]*server[[:space:]]*\{/ { in_server = 1; n = 0; h2 = 0 }
        in_server {
            if ($0 ~ /^[[:space:]]*http2[[:space:]]+on;/) { h2 = 1; next }
            block[n++] = $0
            if ($0 ~ /^[[:space:]]*\}/) {
                for (i = 0; i < n; i++) {
                    line = block[i]
                    if (h2 && line ~ /^[[:space:]]*listen /) sub(/;/, " http2;", line)
                    print line
                }
                in_server = 0
            }
            next
        }
        { print }
    ' | sed -e 's/ resolve / /' -e 's/server gateway:/server 127.0.0.1:/'
}

nginx_check() {
    local conf_dir="$1" prefix="$2"
    mkdir -p "$prefix"
    nginx -t -q -p "$prefix/" -c "$conf_dir/nginx.conf" -e stderr
}

if command -v nginx >/dev/null 2>&1 && command -v openssl >/dev/null 2>&1; then
    cp -r nginx "$tmp/nginx-local"
    rm -f "$tmp/nginx-local/certs/"*.pem
    openssl req -x509 -newkey rsa:2048 -nodes -days 2 -subj /CN=localhost \
        -addext "subjectAltName=DNS:localhost,IP:127.0.0.1" \
        -keyout "$tmp/nginx-local/certs/privkey.pem" \
        -out "$tmp/nginx-local/certs/fullchain.pem" >/dev/null 2>&1
    if grep -q '@' <(render_local_endpoints); then
        echo "FAIL  nginx/local/endpoints.conf.in: unreplaced token"
        failed=$((failed + 1))
    fi
    render_local_endpoints >"$tmp/nginx-local/conf.d/endpoints.conf"
    run "nginx -t (local rendering, nginx $(nginx_version))" \
        nginx_check "$tmp/nginx-local" "$tmp/prefix-local"

    # The file compose ships needs `http2 on` (1.25.1) and upstream `resolve` (1.27.3).
    if version_at_least "$(nginx_version)" 1.27.3; then
        cp -r "$tmp/nginx-local" "$tmp/nginx-shipped"
        cp nginx/conf.d/endpoints.conf "$tmp/nginx-shipped/conf.d/endpoints.conf"
        run "nginx -t (conf.d/endpoints.conf as shipped)" \
            nginx_check "$tmp/nginx-shipped" "$tmp/prefix-shipped"
    else
        # Older nginx: check the shipped file translated to 1.22 spelling (`listen ... http2`
        # instead of `http2 on;`, no `resolve`, gateway -> 127.0.0.1). -t binds no socket.
        cp -r "$tmp/nginx-local" "$tmp/nginx-shipped"
        downgrade_endpoints <nginx/conf.d/endpoints.conf >"$tmp/nginx-shipped/conf.d/endpoints.conf"
        run "nginx -t (conf.d/endpoints.conf in nginx $(nginx_version) spelling)" \
            nginx_check "$tmp/nginx-shipped" "$tmp/prefix-shipped"
    fi
else
    skip "nginx -t" "nginx or openssl is not installed"
fi

# ---- actionlint ----------------------------------------------------------------------------------
actionlint_bin="$(find_tool actionlint)"
if [[ -n "$actionlint_bin" ]]; then
    run "actionlint" "$actionlint_bin" -color=false .github/workflows/*.yml
else
    skip "actionlint" "not installed (a dev dependency: make install)"
fi

# ---- hadolint (a dev dependency; skipped where it is not installed) ------------------------------
hadolint_bin="$(find_tool hadolint)"
if [[ -n "$hadolint_bin" ]]; then
    run "hadolint" "$hadolint_bin" --no-color docker/Dockerfile
else
    skip "hadolint" "not installed (a dev dependency: make install)"
fi

# ---- Kubernetes manifests (k8s/) ------------------------------------------------------------------
# Render every kustomization with kubectl's built-in kustomize (any warning, e.g. a deprecated
# field, fails too); validate the renderings and the two files applied by hand against the
# Kubernetes OpenAPI schemas, strict (an unknown field is an error), for the oldest Kubernetes
# the manifests support and the newest kubernetes-validate knows; it only warns about an
# unknown kind or apiVersion, so any output at all fails. Then scripts/check_k8s.py asserts
# what schemas cannot: probes, drain vs terminationGracePeriodSeconds, requests, one image...
K8S_MIN_VERSION=1.29
k8s_dirs=(k8s/base k8s/base/migrate k8s/overlays/production k8s/overlays/production/migrate)
k8s_files=(k8s/base/secret.example.yaml k8s/overlays/production/namespace.yaml)

# k8s_rendering DIR: where the rendering of DIR goes.
k8s_rendering() { echo "$tmp/${1//\//-}.yaml"; }

kubectl_minor() {
    "$1" version --client -o json 2>/dev/null | sed -n 's/.*"minor": *"\([0-9]*\).*/\1/p' | head -n1
}

k8s_render() {
    local dir="$1" out
    out="$(k8s_rendering "$dir")"
    "$kubectl_bin" kustomize "$dir" >"$out" 2>"$tmp/kustomize.err" || {
        cat "$tmp/kustomize.err"
        return 1
    }
    if [[ -s "$tmp/kustomize.err" ]]; then
        cat "$tmp/kustomize.err"
        return 1
    fi
}

# k8s_validate FILE...: silent and 0 when every document is valid for both versions.
k8s_validate() {
    local out status=0
    out="$("$kvalidate_bin" --strict --quiet -k "$K8S_MIN_VERSION" "$@" 2>&1)" || status=1
    [[ -z "$out" ]] || { echo "$out"; status=1; }
    out="$("$kvalidate_bin" --strict --quiet "$@" 2>&1)" || status=1
    [[ -z "$out" ]] || { echo "$out"; status=1; }
    return "$status"
}

kubectl_bin="$(find_tool kubectl)"
kvalidate_bin="$(find_tool kubernetes-validate)"
k8s_python=""
for candidate in "$root/.venv/bin/python" python3; do
    if command -v "$candidate" >/dev/null 2>&1 && "$candidate" -c 'import yaml' 2>/dev/null; then
        k8s_python="$candidate"
        break
    fi
done
k8s_minor=""
if [[ -n "$kubectl_bin" ]]; then
    k8s_minor="$(kubectl_minor "$kubectl_bin" || true)"
fi

# Without a usable kustomize the base's own resource files (complete objects, unlike the
# overlay's patches) are still validated against the schemas, one by one.
k8s_validate_base_files() {
    local files=()
    while IFS= read -r file; do
        files+=("$file")
    done < <(find k8s/base -name '*.yaml' ! -name kustomization.yaml | sort)
    if [[ -n "$kvalidate_bin" ]]; then
        run "kubernetes-validate --strict k8s/base/*.yaml (not rendered)" k8s_validate "${files[@]}"
    else
        skip "kubernetes-validate" "not installed (pip install kubernetes-validate)"
    fi
}

if [[ -z "$kubectl_bin" ]]; then
    skip "kubectl kustomize" "kubectl is not installed (need kubectl 1.21+ for kustomize v4+)"
    k8s_validate_base_files
elif ((${k8s_minor:-0} < 21)); then
    # kubectl 1.20 (Debian bookworm's kubernetes-client) embeds kustomize v2.0.3, which has
    # neither `patches:` nor `replicas:`.
    skip "kubectl kustomize" "kubectl 1.${k8s_minor:-?} is too old (its kustomize predates v4; need kubectl 1.21+)"
    k8s_validate_base_files
else
    k8s_failed_before=$failed
    for dir in "${k8s_dirs[@]}"; do
        run "kubectl kustomize $dir" k8s_render "$dir"
    done
    if ((failed > k8s_failed_before)); then
        echo "note  k8s: a kustomization did not render; schema and manifest checks not run"
    else
        k8s_renderings=()
        for dir in "${k8s_dirs[@]}"; do
            k8s_renderings+=("$(k8s_rendering "$dir")")
        done
        if [[ -n "$kvalidate_bin" ]]; then
            k8s_latest="$("$kvalidate_bin" --help | sed -n 's/.*Defaults to \([0-9.]*\).*/\1/p' || true)"
            run "kubernetes-validate --strict (Kubernetes $K8S_MIN_VERSION and ${k8s_latest:-latest})" \
                k8s_validate "${k8s_renderings[@]}" "${k8s_files[@]}"
        else
            skip "kubernetes-validate" "not installed (pip install kubernetes-validate)"
        fi
        if [[ -n "$k8s_python" ]]; then
            run "scripts/check_k8s.py (probes, drain grace, resources, images, labels)" \
                "$k8s_python" scripts/check_k8s.py \
                --pair "${k8s_renderings[0]}" "${k8s_renderings[1]}" \
                --pair "${k8s_renderings[2]}" "${k8s_renderings[3]}" \
                --secret k8s/base/secret.example.yaml
        else
            skip "scripts/check_k8s.py" "no Python with PyYAML (make install)"
        fi
    fi
fi

# ---- shell scripts -----------------------------------------------------------------------------------
if command -v shellcheck >/dev/null 2>&1; then
    run "shellcheck" shellcheck scripts/check_delivery.sh
fi

echo
if ((failed > 0)); then
    echo "delivery checks: $failed failed, $skipped skipped"
    exit 1
fi
if ((skipped > 0)) && [[ "$strict" == "1" ]]; then
    echo "delivery checks: $skipped skipped (CHECK_DELIVERY_STRICT=1)"
    exit 1
fi
if ((skipped > 0)); then
    echo "delivery checks: all that ran passed ($skipped skipped)"
else
    echo "delivery checks: all passed"
fi
