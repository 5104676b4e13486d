#!/bin/sh
# Entry point of the sandbox S3 stand-in: moto on 0.0.0.0:443 (s3_standin_server.py, not
# `moto_server`: see its docstring), over TLS only, with the certificate and key mounted at
# S3_TLS_CERT / S3_TLS_KEY. Without them it refuses to start rather than serve plain HTTP
# (pgBackRest speaks S3 only over HTTPS).
set -eu

if [ "${1:-}" != s3-standin ]; then
    exec "$@"
fi
shift

cert="${S3_TLS_CERT:-/run/tls/tls.crt}"
key="${S3_TLS_KEY:-/run/tls/tls.key}"
for f in "${cert}" "${key}"; do
    if [ ! -r "${f}" ]; then
        echo "s3 stand-in: ${f} is missing or not readable by $(id -un): mount the TLS" \
             "certificate and key (S3_TLS_CERT, S3_TLS_KEY)" >&2
        exit 1
    fi
done
# moto keeps every object over 5 MB (a WAL segment, a backup's larger files) in a temporary
# file: with a read-only root, /tmp must be a tmpfs or a volume (sized for the repository).
tmp="${TMPDIR:-/tmp}"
if [ ! -w "${tmp}" ]; then
    echo "s3 stand-in: ${tmp} is not writable: moto stores objects over 5 MB there" \
         "(mount a tmpfs or a volume at ${tmp})" >&2
    exit 1
fi
# Port 443 as a non-root user: Docker (20.10+) sets net.ipv4.ip_unprivileged_port_start=0 in a
# container's own network namespace, so no capability is needed (and none is kept).
exec /opt/moto/bin/python /opt/s3-standin/s3_standin_server.py --host 0.0.0.0 \
    --port "${S3_PORT:-443}" --ssl-cert "${cert}" --ssl-key "${key}" "$@"
