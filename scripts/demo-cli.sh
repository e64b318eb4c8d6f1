#!/usr/bin/env bash
# knit CLI demo: networks and sandboxes with knit alone (no daemon), names through knit's DNS,
# isolation between networks, a published port; all inside a demo "host" network namespace,
# with knit's state in a temp dir. Cleans up and checks that nothing is left.
#
#   KNIT   the knit binary (default: <workspace>/target/release/knit, made by `make build`)
set -euo pipefail

WS=$(cd "$(dirname "$0")/.." && pwd)
KNIT=$(realpath "${KNIT:-$WS/target/release/knit}")
ID=knit-cli-demo-$$
HOST_NS=$ID
START=$(date +%s%N)

if [ -t 1 ]; then B=$'\033[1m' N=$'\033[0m'; else B="" N=""; fi
say() { printf '\n%s==> %s%s\n' "$B" "$*" "$N"; }
run() { printf '    $ %s\n' "$*"; "$@" 2>&1 | sed 's/^/      /'; }
die() { echo "demo: FAIL: $*" >&2; exit 1; }

[ "$(id -u)" = 0 ] || die "run as root (network namespaces)"
[ -x "$KNIT" ] || die "$KNIT missing (run 'make build')"
for tool in nsenter ip curl dig; do
  command -v "$tool" >/dev/null || die "$tool is not installed (run 'make deps')"
done

DIR=$(mktemp -d "/tmp/$ID.XXXX")
mkdir -p "$DIR/www" "$DIR/www2"
echo "hello from a knit sandbox" >"$DIR/www/index.html"
echo "hello from web2" >"$DIR/www2/index.html"
# knit runs in the demo host through nsenter (not `ip netns exec`, whose private mount
# namespace would hide the sandboxes' namespace mounts from the rest of the machine).
in_host() { nsenter --net="/run/netns/$HOST_NS" "$@"; }
knit() {
  printf '    $ knit %s\n' "$*"
  in_host "$KNIT" --state-dir "$DIR/state" --run-dir "$DIR/run" --cni-data-dir "$DIR/cni" "$@" 2>&1 |
    sed 's/^/      /'
  return "${PIPESTATUS[0]}"
}
quiet_knit() { in_host "$KNIT" --state-dir "$DIR/state" --run-dir "$DIR/run" --cni-data-dir "$DIR/cni" "$@"; }

PIDS=()
CLEANED=0
cleanup() {
  local rc=$?
  [ "$CLEANED" = 0 ] || exit "$rc"
  CLEANED=1
  set +e
  say "Teardown"
  for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null; wait "$p" 2>/dev/null; done
  if [ -e "/run/netns/$HOST_NS" ]; then
    quiet_knit service rm webs >/dev/null 2>&1
    for sb in web web2 db; do quiet_knit sandbox rm "$sb" >/dev/null 2>&1; done
    quiet_knit network rm front back >/dev/null 2>&1
  fi
  local left
  left=$( { [ -d "$DIR/state" ] && quiet_knit sandbox ls --format json | grep -v '^\[\]$';
            [ -d "$DIR/state" ] && quiet_knit network ls --format json | grep -v '^\[\]$';
            ls "$DIR/cni" "$DIR/run/nft" 2>/dev/null | grep -v '^$' | grep -v ':$'; } || true)
  ip netns del "$HOST_NS" 2>/dev/null
  rm -rf "$DIR"
  if [ -n "$left" ]; then
    echo "demo: left behind:"; echo "$left"; rc=1
  else
    echo "    nothing left behind (sandboxes, networks, reservations, nft elements, namespaces)"
  fi
  local ms=$((($(date +%s%N) - START) / 1000000))
  printf '\ndemo (CLI): %s in %d.%03d s\n' "$([ "$rc" = 0 ] && echo OK || echo FAILED)" $((ms / 1000)) $((ms % 1000))
  exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

say "knit CLI demo: a demo host ($HOST_NS), knit's state under $DIR"
ip netns add "$HOST_NS"
ip -n "$HOST_NS" link set lo up

say "Two bridge networks (Docker's model, no daemon)"
knit network create --subnet 10.244.78.0/24 front
knit network create --subnet 10.244.79.0/24 back
knit network ls

say "Sandboxes: 'web' (busybox httpd, -p 8080:80, alias www) on front, 'db' on back"
# Background jobs are started with nsenter itself (it execs knit), so $! is knit's pid.
nsenter --net="/run/netns/$HOST_NS" "$KNIT" --state-dir "$DIR/state" --run-dir "$DIR/run" \
  --cni-data-dir "$DIR/cni" run --name web --alias www --label app=web --net front -p 8080:80 -- \
  busybox httpd -f -p 80 -h "$DIR/www" &
PIDS+=($!)
knit run --name db --net back -- true
for _ in $(seq 50); do quiet_knit sandbox ls | grep -q '^web' && break; sleep 0.1; done
knit sandbox ls

say "knit's DNS on each network's gateway"
nsenter --net="/run/netns/$HOST_NS" "$KNIT" --state-dir "$DIR/state" dns --no-forward --listen 10.244.78.1 --listen 10.244.79.1 \
  2>/dev/null &
PIDS+=($!)
sleep 0.3
knit run --net front -- dig +short @10.244.78.1 web
knit run --net front -- dig +short @10.244.78.1 www.front.knit.internal
knit run --net front -- dig +short @10.244.78.1 -x 10.244.78.2
echo "    front cannot resolve back's db (refused):"
knit run --net front -- dig +short @10.244.78.1 db || true

say "Traffic: a sandbox on front reaches web; one on back does not (Docker's isolation)"
WEB=$(quiet_knit run --net front -- dig +short @10.244.78.1 web)
knit run --net front -- ping -c1 -W2 "$WEB"
if quiet_knit run --net back -- ping -c1 -W1 "$WEB" >/dev/null 2>&1; then
  die "back reached front"
else
  echo "    back -> web ($WEB): no answer, as it should be"
fi

say "The published port, from the host and on 127.0.0.1"
for _ in $(seq 50); do in_host curl -s -m1 -o /dev/null http://127.0.0.1:8080/ && break; sleep 0.1; done
run in_host curl -sS -m3 http://127.0.0.1:8080/
run in_host curl -sS -m3 http://10.244.78.1:8080/

say "A service: one virtual IP and name in front of every sandbox labelled app=web"
nsenter --net="/run/netns/$HOST_NS" "$KNIT" --state-dir "$DIR/state" --run-dir "$DIR/run" \
  --cni-data-dir "$DIR/cni" run --name web2 --label app=web --net front -- \
  busybox httpd -f -p 80 -h "$DIR/www2" &
PIDS+=($!)
for _ in $(seq 50); do quiet_knit sandbox ls | grep -q '^web2' && break; sleep 0.1; done
knit service create webs --network front --selector app=web --port 80/tcp
knit service ls
sleep 0.3
knit run --net front -- dig +short @10.244.78.1 webs
knit run --net front -- dig +short @10.244.78.1 SRV _http._tcp.webs.front.knit.internal
VIP=$(quiet_knit run --net front -- dig +short @10.244.78.1 webs)
[ -n "$VIP" ] || die "the service name did not resolve"
echo "    10 requests to http://webs/ ($VIP) from a sandbox on front:"
quiet_knit run --net front -- sh -c "for i in 1 2 3 4 5 6 7 8 9 10; do curl -s -m2 http://$VIP/; done" |
  sort | uniq -c | sed 's/^/      /'
BACKENDS=$(quiet_knit run --net front -- sh -c "for i in \$(seq 30); do curl -s -m2 http://$VIP/; done" | sort -u | wc -l)
[ "$BACKENDS" = 2 ] || die "the service reached $BACKENDS backend(s), not 2"
knit service rm webs

say "docker network inspect's shape"
knit network inspect front
