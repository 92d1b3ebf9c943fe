#!/usr/bin/env bash
# deploy/build-images.sh — build the pnp image and a NATS server image from
# static binaries made on this machine; nothing is pulled from a registry.
#
#   deploy/build-images.sh            # pnpworker/pnp:dev and pnpworker/nats-server:<version>
#   deploy/build-images.sh --python   # and pnpworker/python-worker:dev on a base made
#                                     # from this machine's Python (deploy/python-base.sh)
#
# Environment: PNP_IMAGE (default pnpworker/pnp:dev), LOCAL_NATS_IMAGE
# (default pnpworker/nats-server:<version in go.mod>), PYTHON_WORKER_IMAGE
# (default pnpworker/python-worker:dev), PYTHON_BASE (an image with python3
# and the worker's packages; set, it builds the Python worker image on it
# instead of making a base), DOCKER (default docker).
set -euo pipefail
cd "$(dirname "$0")/.."

DOCKER="${DOCKER:-docker}"
nats_version="$(go list -m -f '{{.Version}}' github.com/nats-io/nats-server/v2)"
PNP_IMAGE="${PNP_IMAGE:-pnpworker/pnp:dev}"
LOCAL_NATS_IMAGE="${LOCAL_NATS_IMAGE:-pnpworker/nats-server:${nats_version#v}}"
version="$(git describe --tags --always --dirty 2>/dev/null || echo dev)"

ctx=bin/image
rm -rf "$ctx"
mkdir -p "$ctx/data"
export CGO_ENABLED=0 GOOS=linux
go build -trimpath -ldflags "-s -w -X main.version=${version}" -o "$ctx/pnp" ./cmd/pnp
go build -trimpath -ldflags "-s -w" -o "$ctx/nats-server" github.com/nats-io/nats-server/v2
cp /etc/ssl/certs/ca-certificates.crt "$ctx/"
cp sdk/python/pnpworker.py examples/python/runner_adapter.py "$ctx/"

# The classic builder: it needs no buildx plugin, and FROM scratch + COPY
# is all these images do.
export DOCKER_BUILDKIT=0
"$DOCKER" build -q -f Dockerfile -t "$PNP_IMAGE" "$ctx"
"$DOCKER" build -q -f deploy/nats-server.Dockerfile -t "$LOCAL_NATS_IMAGE" "$ctx"
echo "built $PNP_IMAGE and $LOCAL_NATS_IMAGE"

PYTHON_WORKER_IMAGE="${PYTHON_WORKER_IMAGE:-pnpworker/python-worker:dev}"
if [ "${1:-}" = --python ] && [ -z "${PYTHON_BASE:-}" ]; then
	PYTHON_BASE=pnpworker/python-base:local
	deploy/python-base.sh "$PYTHON_BASE"
fi
if [ -n "${PYTHON_BASE:-}" ]; then
	"$DOCKER" build -q -f deploy/python-worker.Dockerfile --build-arg "BASE=$PYTHON_BASE" -t "$PYTHON_WORKER_IMAGE" "$ctx"
	echo "built $PYTHON_WORKER_IMAGE on $PYTHON_BASE"
fi
