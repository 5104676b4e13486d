#!/usr/bin/env bash
# The image's pre-build hook (sandbox/build.py runs it on the machine before `docker build`,
# then hashes the context, vendor/ included): pip cannot reach PyPI over HTTPS inside a build
# here, so this downloads the wheels requirements.txt pins (moto[server] 5.2.5 and its
# dependencies, each with its SHA-256) into vendor/wheels (git-ignored), for Debian 12's
# CPython 3.11 on x86_64 whatever this machine's Python is. The Dockerfile installs them with
# --no-index --require-hashes.
#
# Usage: fetch-vendor.sh   (idempotent: does nothing when vendor/wheels matches requirements.txt)
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
repo="$(cd "${here}/../../.." && pwd)"
vendor="${here}/vendor"
wheels="${vendor}/wheels"
stamp="${vendor}/.requirements-sha256"

want="$(sha256sum < "${here}/requirements.txt" | cut -d' ' -f1)"
if [ -f "${stamp}" ] && [ "$(cat "${stamp}")" = "${want}" ] && [ -d "${wheels}" ]; then
    echo "moto wheels (requirements.txt) already in ${wheels}"
    exit 0
fi

python="${repo}/.venv/bin/python"
[ -x "${python}" ] || python=python3
tmp="$(mktemp -d "${TMPDIR:-/var/tmp}/jafar-s3-wheels.XXXXXX")"
trap 'rm -rf "${tmp}"' EXIT
# --no-deps: requirements.txt already lists the whole tree; the hashes pin one file each.
"${python}" -m pip download --quiet --disable-pip-version-check --no-deps --require-hashes \
    --only-binary=:all: --implementation cp --python-version 3.11 --abi cp311 \
    --platform manylinux2014_x86_64 --platform manylinux_2_28_x86_64 \
    --platform manylinux_2_5_x86_64 --platform any \
    --dest "${tmp}" --requirement "${here}/requirements.txt"
listed="$(grep -c -- '--hash=sha256:' "${here}/requirements.txt")"
got="$(find "${tmp}" -maxdepth 1 -name '*.whl' | wc -l)"
if [ "${got}" -ne "${listed}" ]; then
    echo "s3: downloaded ${got} wheels, requirements.txt lists ${listed}" >&2
    exit 1
fi
rm -rf "${wheels}" "${stamp}"
mkdir -p "${vendor}"
mv "${tmp}" "${wheels}"
chmod 0755 "${wheels}"
trap - EXIT
echo "${want}" > "${stamp}"
echo "moto wheels (requirements.txt, ${got} wheels) fetched into ${wheels}"
