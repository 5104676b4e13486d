#!/usr/bin/env bash
# Fetch the real MongoDB Shell (mongosh) from npm on the machine, into the image's build
# context (vendor/), because npm over HTTPS fails inside `docker build` here (the proxy CA
# is trusted by the machine only). The image build COPYs vendor/ and needs no network for it.
#
# mongosh 1.10.6 is the newest line that starts on Debian 12's Node 18 (2.x needs Node >= 20.19).
# Usage: fetch-vendor.sh            (idempotent: does nothing when the pinned version is there)
set -euo pipefail

MONGOSH_VERSION="${MONGOSH_VERSION:-1.10.6}"
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
vendor="${here}/vendor"
installed="${vendor}/node_modules/mongosh/package.json"

if [ -f "${installed}" ] && grep -q "\"version\": \"${MONGOSH_VERSION}\"" "${installed}"; then
    echo "mongosh ${MONGOSH_VERSION} already in ${vendor}"
    exit 0
fi

rm -rf "${vendor}"
mkdir -p "${vendor}"
npm install --prefix "${vendor}" --omit=dev --no-audit --no-fund --no-save \
    "mongosh@${MONGOSH_VERSION}"
test -f "${vendor}/node_modules/mongosh/bin/mongosh.js"
echo "mongosh ${MONGOSH_VERSION} fetched into ${vendor}"
