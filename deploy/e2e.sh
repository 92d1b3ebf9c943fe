#!/usr/bin/env bash
# deploy/e2e.sh — the compose deployment, end to end, on this machine.
#
#   bash deploy/e2e.sh          (as root on Debian 12, or with docker ready)
#
# 1. docker: installs docker.io (and curl, python3-sklearn) from Debian
#    when missing, and starts dockerd when none is running (and stops that
#    one on exit).
# 2. Compose v2: not packaged for Debian 12, so it is built from the Go
#    module proxy (github.com/docker/compose/v2, as its own main module:
#    `go install pkg@version` refuses it because of its exclude directives)
#    and cached in ~/.cache/pnpworker; later runs reuse the binary.
# 3. Builds the images from static binaries (deploy/build-images.sh): no
#    registry is contacted, NATS included (NATS_IMAGE=the local build); the
#    Python worker image on a base made from this machine's Python
#    (deploy/python-base.sh: Debian's python3 with scikit-learn).
# 4. docker compose up; with the stock nats CLI on the published port
#    (127.0.0.1 only) and the producer's credentials: submits a job for
#    every algorithm and reads its result; shows that the producer (and a
#    runner) may not call run.meme_classifier, and that a runner answering
#    its own request into a results key writes nothing; the Python worker (profile
#    python: two processes) answers jobs for iris_species and text_stats;
#    scales meme-runner to 3 and shows 3 keys in
#    discovery and replies from all 3 instances (as the controller role,
#    which may request runners); through the gateway's HTTP API (curl, on
#    127.0.0.1 only): refused without the token, lists the algorithms,
#    runs one, runs one on an uploaded file, submits a job and waits for
#    its result.
# 5. docker compose down -v — also when a step fails.
#
# Environment: COMPOSE_VERSION (v2.40.3), E2E_NATS_PORT (14222),
# E2E_GATEWAY_PORT (18080),
# COMPOSE_PROJECT_NAME (pnpworker-e2e), NATS_CLI
# (nats on PATH, else ~/go/bin/nats, else installed at v0.5.0), KEEP=1 to
# leave the deployment running for a look (it is then not torn down).
set -euo pipefail
cd "$(dirname "$0")/.."

COMPOSE_VERSION="${COMPOSE_VERSION:-v2.40.3}"
NATSCLI_VERSION=0.5.0
NATS_PORT="${E2E_NATS_PORT:-14222}"
GATEWAY_PORT="${E2E_GATEWAY_PORT:-18080}"
export COMPOSE_PROJECT_NAME="${COMPOSE_PROJECT_NAME:-pnpworker-e2e}"
export PATH="/usr/local/go/bin:$PATH"

started=$SECONDS
step() { printf '\n--> %s  (%ds)\n' "$*" "$((SECONDS - started))"; }
fail() {
	echo "e2e: FAIL: $*" >&2
	exit 1
}

# ---------------------------------------------------------------- cleanup
dockerd_pid=""
compose_up=false
cleanup() {
	local rc=$?
	set +e
	if $compose_up && [ "${KEEP:-}" != 1 ]; then
		if [ "$rc" -ne 0 ]; then
			echo "--- logs of the failed run (last 60 lines per service)" >&2
			docker compose logs --no-color --tail 60 >&2
		fi
		docker compose down -v --remove-orphans >/dev/null 2>&1
		echo "compose project $COMPOSE_PROJECT_NAME removed"
	fi
	if [ -n "$dockerd_pid" ]; then
		kill "$dockerd_pid" 2>/dev/null
		for _ in $(seq 1 30); do
			kill -0 "$dockerd_pid" 2>/dev/null || break
			sleep 1
		done
		echo "stopped the dockerd this script started (pid $dockerd_pid)"
	fi
	if [ "$rc" -eq 0 ]; then
		echo "e2e: PASS in $((SECONDS - started))s"
	else
		echo "e2e: FAIL (exit $rc) after $((SECONDS - started))s" >&2
	fi
	exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# ----------------------------------------------------------------- docker
step "docker, curl, python3 with scikit-learn"
# What this script needs from Debian: docker, curl for the HTTP API, and
# the Python the worker image's base is made of.
missing=()
command -v dockerd >/dev/null && command -v docker >/dev/null || missing+=(docker.io)
command -v curl >/dev/null || missing+=(curl)
/usr/bin/python3 -c 'import sklearn' 2>/dev/null || missing+=(python3 python3-sklearn)
if [ "${#missing[@]}" -gt 0 ]; then
	[ "$(id -u)" -eq 0 ] || fail "missing ${missing[*]}; as root: apt-get install ${missing[*]}"
	export DEBIAN_FRONTEND=noninteractive
	apt-get update -qq
	apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi
if ! docker info >/dev/null 2>&1; then
	[ "$(id -u)" -eq 0 ] || fail "no docker daemon is running and this user cannot start one"
	log="${TMPDIR:-/tmp}/pnpworker-e2e-dockerd.log"
	echo "starting dockerd (log: $log)"
	dockerd >"$log" 2>&1 &
	dockerd_pid=$!
	for _ in $(seq 1 60); do
		docker info >/dev/null 2>&1 && break
		kill -0 "$dockerd_pid" 2>/dev/null || { tail -20 "$log" >&2; fail "dockerd exited"; }
		sleep 1
	done
	docker info >/dev/null 2>&1 || fail "dockerd did not come up in 60 s (see $log)"
fi
echo "docker daemon $(docker version --format '{{.Server.Version}}')"

# ---------------------------------------------------------------- compose
step "docker compose $COMPOSE_VERSION"
plugin_dir="$HOME/.docker/cli-plugins"
cached="$HOME/.cache/pnpworker/docker-compose-$COMPOSE_VERSION"
if ! docker compose version 2>/dev/null | grep -q "${COMPOSE_VERSION#v}"; then
	if [ ! -x "$cached" ]; then
		echo "building Compose $COMPOSE_VERSION from the Go module proxy (once; cached in $cached)"
		tmp="$(mktemp -d)"
		# Build it as its own main module, from its own go.mod and go.sum.
		dir="$(cd "$tmp" && go mod download -json "github.com/docker/compose/v2@$COMPOSE_VERSION" | sed -n 's/^[[:space:]]*"Dir": "\(.*\)",$/\1/p')"
		[ -d "$dir" ] || fail "cannot download github.com/docker/compose/v2@$COMPOSE_VERSION"
		cp -r "$dir" "$tmp/src"
		chmod -R u+w "$tmp/src"
		(cd "$tmp/src" && CGO_ENABLED=0 GOFLAGS=-mod=mod go build -trimpath \
			-ldflags "-s -w -X github.com/docker/compose/v2/internal.Version=$COMPOSE_VERSION" \
			-o "$tmp/docker-compose" ./cmd)
		mkdir -p "$(dirname "$cached")"
		mv "$tmp/docker-compose" "$cached"
		rm -rf "$tmp"
	fi
	mkdir -p "$plugin_dir"
	ln -sf "$cached" "$plugin_dir/docker-compose"
fi
docker compose version

# -------------------------------------------------------------- nats CLI
NATS_CLI="${NATS_CLI:-$(command -v nats || true)}"
[ -n "$NATS_CLI" ] || NATS_CLI="$(go env GOPATH)/bin/nats"
if [ ! -x "$NATS_CLI" ]; then
	step "nats CLI v$NATSCLI_VERSION"
	go install "github.com/nats-io/natscli/nats@v$NATSCLI_VERSION"
fi
echo "nats CLI $NATS_CLI $("$NATS_CLI" --version 2>&1)"

# ----------------------------------------------------------------- images
step "images"
deploy/build-images.sh --python
nats_version="$(go list -m -f '{{.Version}}' github.com/nats-io/nats-server/v2)"
export NATS_IMAGE="pnpworker/nats-server:${nats_version#v}"
export PNP_IMAGE=pnpworker/pnp:dev
# Every compose command below includes the Python worker.
export COMPOSE_PROFILES=python

# ------------------------------------------------------------------- up
secret() { head -c 18 /dev/urandom | od -An -tx1 | tr -d ' \n'; }
MEME_RUNNER_PASSWORD="$(secret)" TEXT_RUNNER_PASSWORD="$(secret)"
CONTROLLER_PASSWORD="$(secret)" PRODUCER_PASSWORD="$(secret)" ADMIN_PASSWORD="$(secret)" GATEWAY_PASSWORD="$(secret)"
PY_RUNNER_PASSWORD="$(secret)" PNP_HTTP_TOKEN="$(secret)"
export MEME_RUNNER_PASSWORD TEXT_RUNNER_PASSWORD PY_RUNNER_PASSWORD CONTROLLER_PASSWORD PRODUCER_PASSWORD ADMIN_PASSWORD GATEWAY_PASSWORD NATS_PORT
export PNP_HTTP_TOKEN GATEWAY_PORT

step "docker compose up -d"
docker compose down -v --remove-orphans >/dev/null 2>&1 || true
compose_up=true
docker compose up -d --quiet-pull 2>&1 | grep -v -e Waiting -e Healthy || true
docker compose ps -a --format 'table {{.Service}}\t{{.State}}\t{{.Status}}'

server="nats://127.0.0.1:$NATS_PORT"
as() { # as <role> nats args...: the stock CLI with a role's credentials and inbox
	local role="$1"
	shift
	local var
	var="$(echo "$role" | tr a-z A-Z)_PASSWORD"
	"$NATS_CLI" --server "$server" --user "$role" --password "${!var}" --inbox-prefix "_INBOX_$role" "$@"
}

# keys <algorithm>: the live discovery keys of one algorithm.
keys() { as admin kv ls discovery 2>/dev/null | grep "^$1\." || true; }

wait_keys() { # wait_keys <algorithm> <n>
	for _ in $(seq 1 60); do
		[ "$(keys "$1" | wc -l)" -ge "$2" ] && return 0
		sleep 1
	done
	fail "discovery does not list $2 instance(s) of $1: $(keys "$1" | tr '\n' ' ')"
}

step "runners registered"
for alg in language_detection meme_classifier image_info; do
	wait_keys "$alg" 1
done
# The Python worker: two processes, each its own instance.
for alg in iris_species text_stats; do
	wait_keys "$alg" 2
done
as admin kv ls discovery

data_url() { printf 'data:%s;base64,%s' "$1" "$(base64 -w0 "$2")"; }
drake="$(data_url image/jpeg algo/meme_classifier/demo/samples/drake_pref_captioned.jpg)"
stonks="$(data_url image/png algo/meme_classifier/demo/gallery/stonks.png)"

step "jobs for every algorithm, as producer"
run_id="$(date +%s)"
declare -A jobs=(
	[language_detection]='{"text":"Guten Morgen, wie geht es dir heute?"}'
	[meme_classifier]="{\"image_url\":\"$drake\"}"
	[image_info]="{\"image_url\":\"$stonks\"}"
	[iris_species]='{"sepal_length":6.7,"sepal_width":3.0,"petal_length":5.2,"petal_width":2.3}'
	[text_stats]='{"text":"to be or not to be"}'
)
for alg in "${!jobs[@]}"; do
	as producer pub "jobs.$alg" "${jobs[$alg]}" -H "Nats-Msg-Id:e2e-$run_id-$alg" 2>&1 | sed 's/base64,[^"]*/base64,…/'
done
for alg in "${!jobs[@]}"; do
	id="e2e-$run_id-$alg"
	result=""
	for _ in $(seq 1 60); do
		result="$(as producer kv get results "$id" --raw 2>/dev/null || true)"
		case "$result" in *'"status":"succeeded"'* | *'"status":"failed"'*) break ;; esac
		sleep 1
	done
	echo "$id: $result"
	case "$result" in *'"status":"succeeded"'*) ;; *) fail "job $id did not succeed" ;; esac
	if [ "$alg" = iris_species ] && ! echo "$result" | grep -q '"species":"virginica"'; then
		fail "the Python worker classified a virginica as something else"
	fi
done

step "the producer (and a runner) may not call a runner"
# The CLI exits 0 after a denied publish: the violation arrives
# asynchronously, so the check is on what it printed.
for role in producer text_runner; do
	out="$(as "$role" req run.meme_classifier "{\"image_url\":\"$drake\"}" --timeout 3s 2>&1 || true)"
	echo "$role: $(echo "$out" | grep -v 'Sending request' | sed 's/base64,[^"]*/base64,…/')"
	echo "$out" | grep -q 'Permissions Violation for Publish to "run.meme_classifier"' ||
		fail "the $role's request to run.meme_classifier was not refused"
done

step "a runner cannot write a job's result through a reply subject"
# meme_runner answers a request it sends itself on a subject it may serve,
# with a results key as the reply subject: in its own account that key
# reaches nobody, so the results bucket must not have it.
forged="e2e-$run_id-forged"
as meme_runner reply run.meme_classifier.v6_6_6 "{\"job_id\":\"$forged\",\"status\":\"succeeded\"}" \
	--queue runners --count 1 >/dev/null 2>&1 &
bouncer=$!
for _ in $(seq 1 30); do
	as meme_runner pub run.meme_classifier.v6_6_6 '{}' --reply "\$KV.results.$forged" >/dev/null 2>&1 || true
	sleep 1
	kill -0 "$bouncer" 2>/dev/null || break
done
if kill -0 "$bouncer" 2>/dev/null; then
	kill "$bouncer"
	fail "meme_runner's request to itself never arrived"
fi
if out="$(as admin kv get results "$forged" --raw 2>&1)"; then
	fail "meme_runner wrote job $forged's result: $out"
fi
echo "results $forged: none ($(echo "$out" | head -1))"

step "the HTTP API through the gateway (127.0.0.1:$GATEWAY_PORT)"
api="http://127.0.0.1:$GATEWAY_PORT"
# http <method> <path> [body] [curl args...]: prints the body, then the status on a line of its own.
http() {
	local method="$1" path="$2" body="${3:-}"
	shift 3 || shift $#
	curl -sS -X "$method" -H "Authorization: Bearer $PNP_HTTP_TOKEN" -H 'Content-Type: application/json' \
		${body:+--data-binary "$body"} -w '\n%{http_code}\n' "$@" "$api$path"
}
status() { tail -1; }
ready=""
for _ in $(seq 1 60); do
	ready="$(curl -sS -o /dev/null -w '%{http_code}' "$api/readyz" 2>/dev/null || true)"
	[ "$ready" = 200 ] && break
	sleep 1
done
[ "$ready" = 200 ] || fail "gateway /readyz: $ready"
code="$(curl -sS -o /dev/null -w '%{http_code}' "$api/v1/algorithms")"
echo "GET /v1/algorithms without the token: $code"
[ "$code" = 401 ] || fail "the gateway answered $code without the token, want 401"
out="$(http GET /v1/algorithms)"
echo "$out" | grep -q '"meme_classifier"' && echo "$out" | grep -q '"language_detection"' ||
	fail "GET /v1/algorithms does not list the runners' algorithms: $(echo "$out" | head -c 300)"
out="$(http POST /v1/algorithms/language_detection/run '{"text":"Guten Morgen, wie geht es dir heute?"}')"
echo "POST /v1/algorithms/language_detection/run: $(echo "$out" | tr '\n' ' ')"
[ "$(echo "$out" | status)" = 200 ] && echo "$out" | grep -q '"iso639_1":"de"' || fail "run through the gateway"
out="$(curl -sS -H "Authorization: Bearer $PNP_HTTP_TOKEN" -F file=@algo/meme_classifier/demo/samples/drake_pref_captioned.jpg \
	-w '\n%{http_code}\n' "$api/v1/algorithms/meme_classifier/run")"
echo "POST /v1/algorithms/meme_classifier/run with a file: $(echo "$out" | head -c 200 | tr '\n' ' ')"
[ "$(echo "$out" | status)" = 200 ] && echo "$out" | grep -q '"label":"drake_pref"' || fail "multipart run through the gateway"
out="$(http POST /v1/algorithms/meme_classifier/jobs "{\"image_url\":\"$drake\"}" -H "Idempotency-Key: e2e-$run_id-http")"
echo "POST /v1/algorithms/meme_classifier/jobs: $(echo "$out" | tr '\n' ' ')"
[ "$(echo "$out" | status)" = 202 ] || fail "job through the gateway not accepted"
out="$(http GET "/v1/jobs/e2e-$run_id-http?wait=60s")"
echo "GET /v1/jobs/e2e-$run_id-http?wait=60s: $(echo "$out" | head -c 300 | tr '\n' ' ')"
[ "$(echo "$out" | status)" = 200 ] && echo "$out" | grep -q '"status":"succeeded"' || fail "job through the gateway did not succeed"

step "docker compose up -d --scale meme-runner=3"
docker compose up -d --scale meme-runner=3 --no-recreate 2>&1 | grep -v -e Waiting -e Running || true
wait_keys meme_classifier 3
keys meme_classifier

step "requests spread over the 3 meme runners (as controller)"
declare -A seen=()
for i in $(seq 1 60); do
	inst="$(as controller req run.meme_classifier "{\"image_url\":\"$drake\"}" --timeout 10s 2>&1 |
		sed -n 's/.*Pnp-Instance: \([A-Za-z0-9_-]*\).*/\1/p' | head -1)"
	[ -n "$inst" ] || fail "request $i to run.meme_classifier got no reply"
	seen[$inst]=$((${seen[$inst]:-0} + 1))
	[ "${#seen[@]}" -ge 3 ] && [ "$i" -ge 12 ] && break
done
for inst in "${!seen[@]}"; do
	echo "instance $inst answered ${seen[$inst]} request(s)"
	keys meme_classifier | grep -q "\.$inst$" || fail "instance $inst is not in discovery"
done
[ "${#seen[@]}" -eq 3 ] || fail "want replies from 3 instances, got ${#seen[@]}"

step "docker compose down -v"
if [ "${KEEP:-}" = 1 ]; then
	echo "KEEP=1: leaving $COMPOSE_PROJECT_NAME running on $server"
	compose_up=false
else
	docker compose down -v --remove-orphans 2>&1 | tail -1
	compose_up=false
fi
