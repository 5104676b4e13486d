# What scripts/backup.sh and scripts/backup-verify.sh share (sourced, from the deploy path).
# shellcheck disable=SC2034,SC2154  # the constants are the callers'; they set compose
# shellcheck shell=bash

readonly COMPOSE_FILE="compose/docker-compose.data.yml"
readonly ENV_FILE=".env.ec2"
readonly SECRETS_DIR="secrets"
readonly DIR="backups"
# A scratch container (a verify's restore, an RDB check) gets no network at all, no published
# port, and a share of the host that leaves the stores beside it theirs.
readonly SCRATCH=(--network none --cpus 1 --memory 1g --pids-limit 512
                  --security-opt no-new-privileges --label jafar.backup-scratch=1)

env_value() {  # KEY: its value in .env.ec2, read as data (the file is never sourced)
    sed -n "s/^$1=//p" "$ENV_FILE" | tail -n 1 | sed -e 's/^"\(.*\)"$/\1/' -e "s/^'\(.*\)'$/\1/"
}

service_image() {  # SERVICE: the image its running container was made from (exactly that one)
    local id
    id="$("${compose[@]}" ps --status running --quiet "$1" 2>/dev/null | sed -n 1p)"
    [ -n "$id" ] || return 1
    docker inspect -f '{{.Config.Image}}' "$id"
}

rdb_keys() {  # FILE IMAGE: redis-check-rdb of FILE in a scratch container of IMAGE; its keys
    # (the file goes in on stdin: a host under userns-remap could not share it)
    local out
    out="$(docker run --rm -i "${SCRATCH[@]}" --user 0 --cap-drop ALL -v /work --entrypoint sh \
        "$2" -c 'cat >/work/dump.rdb && exec redis-check-rdb /work/dump.rdb' <"$1" 2>&1)" \
        || { echo "$out" | sed -n 's/^\[additional info\] While doing: \(.*\)/an RDB error while doing \1/p' \
                 | grep . || echo "$out" | tail -n 1; return 1; }
    echo "$out" | sed -n 's/^\[info\] \([0-9]*\) keys read$/\1/p'
}

last_said() {  # FILE: its first error line, else its last line; without a tool's timestamp
    { grep -m 1 -E 'Failed:|[Ee]rror|FATAL' "$1" || grep -v '^[[:space:]]*$' "$1" || true; } \
        | tail -n 1 | sed 's/^[0-9][0-9T:.+-]*Z\{0,1\}\t//'
}
