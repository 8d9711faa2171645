#!/usr/bin/env bash
# End-to-end check of the bundled stack, for a machine with Docker. It is the
# manual step of docs/stack.md: CI machines have no Docker engine.
#
#   scripts/stack-smoke.sh [--keep]
#
# Builds and starts the stack with the demo profile as its own compose project
# (asyncflow-smoke, with its own volumes), then checks: the collector config
# with the pinned collector itself, the component allowlist against that
# binary, the Prometheus config with the pinned promtool, Grafana's
# datasources and dashboards, every dashboard query with data, every series
# name of asyncflow.telemetry.names in Prometheus, a demo trace in Tempo and
# in Jaeger, the dashboards' TraceQL on Tempo, and the Dash app. The stack is
# taken down afterwards unless --keep is given. The host ports in .env must
# be free (stop a running `docker compose up` first).
#
# Needs: docker with the compose plugin (v2.19 or later), curl.
set -euo pipefail

cd "$(dirname "$0")/.."

keep=0
for arg in "$@"; do
    case "$arg" in
        --keep) keep=1 ;;
        -h | --help)
            sed -n '2,17p' "$0"
            exit 0
            ;;
        *)
            echo "unknown argument: $arg (try --help)" >&2
            exit 2
            ;;
    esac
done

project=asyncflow-smoke
compose() { docker compose --project-name "$project" --profile demo "$@"; }
step() { printf '\n==> %s\n' "$*"; }

cleanup() {
    local status=$?
    if [ "$status" -ne 0 ]; then
        echo "stack-smoke: FAILED; the last log lines of each service follow" >&2
        compose logs --no-color --tail=40 >&2 || true
    fi
    if [ "$keep" -eq 0 ]; then
        compose down --volumes --remove-orphans >/dev/null 2>&1 || true
    fi
    exit "$status"
}
trap cleanup EXIT

wait_http() { # wait_http URL [SECONDS]
    local url=$1 deadline=$((SECONDS + ${2:-180}))
    until curl -fsS -o /dev/null --max-time 3 "$url"; do
        if [ "$SECONDS" -ge "$deadline" ]; then
            echo "no answer from $url" >&2
            return 1
        fi
        sleep 2
    done
    echo "up: $url"
}

# The pins, ports and Grafana account, as compose reads them (and exported,
# so `compose run -e NAME` below passes them on).
set -a
# shellcheck source=.env
. ./.env
set +a

step "compose file"
compose config --quiet

step "collector config, validated by otelcol-contrib $OTELCOL_VERSION"
compose run --rm --no-deps -T otel-collector validate --config=/etc/otelcol-contrib/config.yaml

step "collector/components.txt against the components of that binary"
components=$(compose run --rm --no-deps -T otel-collector components)
missing=0
while read -r kind type; do
    case "$kind" in '' | '#'*) continue ;; esac
    if ! awk -v section="${kind}s:" -v name="$type" '
        /^[a-z]+:/ { current = $1 }
        current == section && $1 == "-" && $2 == "name:" && $3 == name { found = 1 }
        END { exit !found }' <<<"$components"; then
        echo "not in otelcol-contrib $OTELCOL_VERSION: $kind $type" >&2
        missing=1
    fi
done <collector/components.txt
[ "$missing" -eq 0 ]
echo "every allowlisted component exists"

step "Prometheus config, checked by promtool $PROMETHEUS_VERSION"
compose run --rm --no-deps -T --entrypoint promtool prometheus \
    check config /etc/prometheus/prometheus.yml

step "start the stack and the demo campaign"
compose up -d --build
wait_http "http://127.0.0.1:$GRAFANA_PORT/api/health"
wait_http "http://127.0.0.1:$PROMETHEUS_PORT/-/ready"
wait_http "http://127.0.0.1:$TEMPO_PORT/ready"
wait_http "http://127.0.0.1:$JAEGER_UI_PORT/"

step "wait for the demo campaign to end"
demo_status=$(docker wait "$(compose ps --all --quiet demo)")
if [ "$demo_status" != 0 ]; then
    compose logs --no-color demo >&2
    echo "the demo exited with $demo_status" >&2
    exit 1
fi
echo "the demo finished"
wait_http "http://127.0.0.1:$DASH_PORT/"

step "end-to-end checks from inside the stack's network"
compose run --rm --no-deps -T \
    -e GRAFANA_ADMIN_USER -e GRAFANA_ADMIN_PASSWORD \
    -v "$PWD/scripts/stack_smoke.py:/smoke/stack_smoke.py:ro" \
    -v "$PWD/dashboards:/smoke/dashboards:ro" \
    --entrypoint python dash /smoke/stack_smoke.py

step "stack-smoke: all checks passed"
if [ "$keep" -eq 1 ]; then
    echo "Grafana    http://127.0.0.1:$GRAFANA_PORT"
    echo "Jaeger     http://127.0.0.1:$JAEGER_UI_PORT"
    echo "Prometheus http://127.0.0.1:$PROMETHEUS_PORT"
    echo "Dash app   http://127.0.0.1:$DASH_PORT"
    echo "take it down with: docker compose --project-name $project --profile demo down --volumes"
fi
