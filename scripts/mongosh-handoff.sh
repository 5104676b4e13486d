#!/bin/sh
# Runs INSIDE the mongo-primary container (POSIX sh), as `sh -c "$(cat scripts/mongosh-handoff.sh)"`
# from the deploy path: scripts/init-replica.sh and the suite's password rotation use it.
#
# stdin: lines `NAME BASE64` (files to hand over: passwords, the data CA), a line `--`, then the
# JavaScript for mongosh. The files are written into a private folder (mode 0700) of the
# container's /tmp (a tmpfs), mongosh runs the rest of stdin with JAFAR_SECRETS_DIR naming that
# folder, and the folder is removed whatever happens. `read` takes the header lines byte by byte,
# so nothing of the script is lost. Nothing secret is on a command line or in an environment
# variable; the host's files are the current ones (this container's /run/secrets is a bind mount
# of the files as they were when it started).
set -eu
umask 077
dir=$(mktemp -d "${TMPDIR:-/tmp}/jafar-handoff.XXXXXX")
trap 'rm -rf "$dir"' EXIT
while IFS=" " read -r name value && [ "$name" != "--" ]; do
    case "$name" in
        *[!a-z0-9_]* | "") echo "mongosh-handoff: bad file name in the header" >&2; exit 2 ;;
    esac
    printf "%s" "$value" | base64 -d > "$dir/$name"
done
JAFAR_SECRETS_DIR="$dir" mongosh --quiet --norc --nodb --file /dev/stdin
