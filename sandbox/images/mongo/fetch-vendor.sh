#!/usr/bin/env bash
# Fetch the real MongoDB Shell (mongosh) from npm on the machine, into the image's build
# context (vendor/), because npm over HTTPS fails inside `docker build` here (the proxy CA
# is trusted by the machine only). The image build COPYs vendor/ and needs no network for it.
#
# mongosh 1.10.6 is the newest line that starts on Debian 12's Node 18 (2.x needs Node >= 20.19).
# npm/package-lock.json pins every package of its tree: without it, npm resolved a newer
# whatwg-url (through mongodb-build-info's `^3.0.1 || ^7.0.0`) whose webidl-conversions 8
# needs Node 20, and mongosh stopped starting. `npm ci` installs exactly the lockfile; without
# install scripts, which would build optional native add-ons for this machine's Node (not the
# image's) with this checkout's paths in them: the tree is the same in every clone.
# Usage: fetch-vendor.sh            (idempotent: does nothing when that tree is there)
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
vendor="${here}/vendor"
stamp="${vendor}/.lock-sha256"
want="$(cat "${here}/npm/package-lock.json" "${BASH_SOURCE[0]}" | sha256sum | cut -d' ' -f1)"

if [ -f "${stamp}" ] && [ "$(cat "${stamp}")" = "${want}" ] \
        && [ -f "${vendor}/node_modules/mongosh/bin/mongosh.js" ]; then
    echo "mongosh (npm/package-lock.json) already in ${vendor}"
    exit 0
fi

rm -rf "${vendor}"
mkdir -p "${vendor}"
cp "${here}/npm/package.json" "${here}/npm/package-lock.json" "${vendor}/"
npm ci --prefix "${vendor}" --omit=dev --no-audit --no-fund --ignore-scripts
test -f "${vendor}/node_modules/mongosh/bin/mongosh.js"
rm -f "${vendor}/package.json" "${vendor}/package-lock.json"
echo "${want}" > "${stamp}"
echo "mongosh (npm/package-lock.json) fetched into ${vendor}"
