#!/bin/sh
# Wait until every URL given answers 2xx over HTTP (the collector health check,
# Tempo /ready, the Jaeger UI), for at most STACK_READY_TIMEOUT seconds (default 180).
# Run by the stack-ready service of docker-compose.yml, inside busybox.
set -u

timeout="${STACK_READY_TIMEOUT:-180}"
start="$(date +%s)"
for url in "$@"; do
    until wget -q -T 2 -O /dev/null "$url" 2>/dev/null; do
        if [ $(( $(date +%s) - start )) -ge "$timeout" ]; then
            echo "stack-ready: no answer from $url after ${timeout}s" >&2
            exit 1
        fi
        sleep 1
    done
    echo "stack-ready: $url is up"
done
