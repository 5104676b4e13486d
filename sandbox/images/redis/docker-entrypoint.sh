#!/bin/sh
# Entry point of the sandbox redis image, with the official image's command conventions.
set -eu

# `docker run redis --appendonly yes` / `... /path/redis.conf`: run redis-server with them.
case "${1:-}" in
    -* | *.conf) set -- redis-server "$@" ;;
esac

if [ "${1:-}" = redis-server ]; then
    # The official image builds redis with protected mode off by default (a container is
    # reached from other containers); do the same unless the command sets it.
    want_default=1
    for arg in "$@"; do
        case "${arg}" in
            *protected-mode*) want_default=0 ;;
        esac
    done
    case "${2:-}" in
        *.conf) want_default=0 ;;
    esac
    if [ "${want_default}" = 1 ]; then
        set -- "$@" --protected-mode no
    fi
    umask 0077
fi

exec "$@"
