#!/usr/bin/env bash
# knit's main job (DESIGN.md): a cluster on one machine. A local etcd, two controllers (one
# leads), three hosts as network namespaces on an underlay bridge, each with a knit agent;
# two overlay networks and a bridge network; containers (namespaces) attached through the CNI
# plugins; cross-host ping, DNS names across hosts, a port mapping reached from outside,
# isolation between networks, the topology; then a teardown that leaves nothing behind.
#
#   KNIT     the knit binary (default: <workspace>/target/release/knit, `make build`)
#   CNI_BIN  the plugin dir (default: <workspace>/target/cni/bin)
set -euo pipefail

WS=$(cd "$(dirname "$0")/.." && pwd)
KNIT=$(realpath "${KNIT:-$WS/target/release/knit}")
CNI_BIN=$(realpath "${CNI_BIN:-$WS/target/cni/bin}")
ID=kc$$
UL=$ID-ul
UL_IP=192.168.77.1
ETCD=http://$UL_IP:2379
START=$(date +%s%N)

if [ -t 1 ]; then B=$'\033[1m' N=$'\033[0m'; else B="" N=""; fi
say() { printf '\n%s==> %s%s\n' "$B" "$*" "$N"; }
die() { echo "demo: FAIL: $*" >&2; exit 1; }

[ "$(id -u)" = 0 ] || die "run as root (network namespaces)"
[ -x "$KNIT" ] || die "$KNIT missing (run 'make build')"
for p in knit bridge host-local portmap; do
  [ -x "$CNI_BIN/$p" ] || die "CNI plugin $CNI_BIN/$p missing (run 'make build')"
done
for tool in etcd nsenter ip curl dig jq busybox; do
  command -v "$tool" >/dev/null || die "$tool is not installed (run 'make deps')"
done

DIR=$(mktemp -d "/tmp/$ID.XXXX")
PIDS=()
NSS=()
CLEANED=0

in_ns() { local ns=$1; shift; nsenter --net="/run/netns/$ns" "$@"; }
# knit on host N (its own dirs), talking to the cluster's etcd.
kn() {
  local h=$1; shift
  in_ns "$ID-h$h" "$KNIT" --etcd "$ETCD" --state-dir "$DIR/h$h/state" --run-dir "$DIR/h$h/run" \
    --cni-data-dir "$DIR/h$h/cni" "$@"
}
# The same in the background: nsenter execs knit, so the pid recorded is knit's own.
kn_bg() {
  local h=$1 log=$2; shift 2
  nsenter --net="/run/netns/$ID-h$h" "$KNIT" --etcd "$ETCD" --state-dir "$DIR/h$h/state" \
    --run-dir "$DIR/h$h/run" --cni-data-dir "$DIR/h$h/cni" "$@" >"$log" 2>&1 &
  PIDS+=($!)
}
show() { printf '    $ %s\n' "$*"; }
mkns() { ip netns add "$1"; NSS+=("$1"); ip -n "$1" link set lo up; }

# One CNI call, as a runtime makes it: the plugin run in the host's namespace.
cni() {
  local verb=$1 host=$2 plugin=$3 ctr=$4 conf=$5
  printf '%s' "$conf" | in_ns "$host" env CNI_COMMAND="$verb" CNI_CONTAINERID="$ctr" \
    CNI_NETNS="/run/netns/$ctr" CNI_IFNAME=eth0 CNI_PATH="$CNI_BIN" KNIT_STATE_DIR="$DIR/cni-state" \
    "$CNI_BIN/$plugin"
}
overlay_conf() { # host network name
  jq -nc --arg s "$DIR/h$1/run/agent.sock" --arg net "$2" --arg name "$3" \
    '{cniVersion:"1.0.0", name:$net, type:"knit", network:$net, socket:$s,
      args:{cni:{name:$name}}}'
}
addr_of() { jq -r '.ips[0].address | split("/")[0]' <<<"$1"; }

cleanup() {
  local rc=$?
  [ "$CLEANED" = 0 ] || exit "$rc"
  CLEANED=1
  set +e
  if [ -n "${KEEP:-}" ]; then echo "demo: KEEP set, left as is in $DIR"; exit "$rc"; fi
  say "Teardown"
  for c in c1 c2 c3 r2; do
    [ -e "$DIR/$c.host" ] && cni DEL "$(cat "$DIR/$c.host")" knit "$ID-$c" \
      "$(overlay_conf "$(cat "$DIR/$c.hostn")" "$(cat "$DIR/$c.net")" "$c")" >/dev/null 2>&1
  done
  if [ -e "$DIR/web.conf" ]; then
    cni DEL "$ID-h1" portmap "$ID-web" "$(cat "$DIR/web.pmconf")" >/dev/null 2>&1
    cni DEL "$ID-h1" bridge "$ID-web" "$(cat "$DIR/web.conf")" >/dev/null 2>&1
  fi
  for n in blue red; do kn 1 network rm "$n" >/dev/null 2>&1; done
  local left=""
  [ -d "$DIR/h1" ] && left=$(kn 1 network ls 2>/dev/null | tail -n +2)
  for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null; done
  for p in "${PIDS[@]}"; do wait "$p" 2>/dev/null; done
  for ns in "${NSS[@]}"; do ip netns del "$ns" 2>/dev/null; done
  local still
  still=$(ip netns list | grep -c "^$ID-" || true)
  [ "$still" = 0 ] || left="$left namespaces:$still"
  pgrep -f "$DIR" >/dev/null && left="$left processes"
  rm -rf "$DIR"
  if [ -n "$left" ]; then
    echo "demo: left behind: $left"; rc=1
  else
    echo "    nothing left behind (containers, networks, agents, controllers, etcd, namespaces)"
  fi
  local ms=$((($(date +%s%N) - START) / 1000000))
  printf '\ndemo (cluster): %s in %d.%03d s\n' "$([ "$rc" = 0 ] && echo OK || echo FAILED)" \
    $((ms / 1000)) $((ms % 1000))
  exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

say "An underlay ($UL, bridge ulbr $UL_IP/24) with etcd on it, and three hosts"
mkns "$UL"
ip -n "$UL" link add ulbr type bridge
ip -n "$UL" addr add "$UL_IP/24" dev ulbr
ip -n "$UL" link set ulbr up
mkdir -p "$DIR/etcd"
nsenter --net="/run/netns/$UL" etcd --data-dir "$DIR/etcd/data" --listen-client-urls "$ETCD" \
  --advertise-client-urls "$ETCD" --listen-peer-urls "http://$UL_IP:2380" \
  --initial-advertise-peer-urls "http://$UL_IP:2380" \
  --initial-cluster "default=http://$UL_IP:2380" >"$DIR/etcd/log" 2>&1 &
PIDS+=($!)
for n in 1 2 3; do
  h=$ID-h$n
  mkns "$h"
  ip -n "$h" link add eth0 type veth peer name ul-h$n netns "$UL"
  ip -n "$h" addr add "192.168.77.1$n/24" dev eth0
  ip -n "$h" link set eth0 up
  ip -n "$UL" link set ul-h$n master ulbr up
  mkdir -p "$DIR/h$n"
  echo "    host h$n: underlay 192.168.77.1$n"
done
for _ in $(seq 100); do
  in_ns "$UL" curl -s -m1 "$ETCD/health" | grep -q true && break
  sleep 0.1
done
echo "    etcd: $ETCD"

say "Two controllers (h1, h2): one leads by etcd election"
for n in 1 2; do
  kn_bg "$n" "$DIR/h$n/controller.log" controller --listen "192.168.77.1$n:7470" \
    --metrics "127.0.0.1:9471"
done
LEADER=""
for _ in $(seq 100); do
  LEADER=$(in_ns "$UL" env ETCDCTL_API=3 etcdctl --endpoints "$ETCD" get --print-value-only \
    /knit/controller/leader 2>/dev/null || true)
  [ -n "$LEADER" ] && break
  sleep 0.1
done
[ -n "$LEADER" ] || die "no controller leads: $(tail -3 "$DIR/h1/controller.log")"
echo "    leader: $LEADER"

say "An agent on every host (registers the host, follows the leader, programs the overlay)"
for n in 1 2 3; do
  kn_bg "$n" "$DIR/h$n/agent.log" agent --host "h$n" --underlay-ip "192.168.77.1$n"
done
for n in 1 2 3; do
  for _ in $(seq 100); do [ -S "$DIR/h$n/run/agent.sock" ] && break; sleep 0.1; done
  [ -S "$DIR/h$n/run/agent.sock" ] || die "agent h$n did not start: $(tail -3 "$DIR/h$n/agent.log")"
done

say "Networks: overlays blue and red (VXLAN, cluster-wide), a bridge network on h1"
show "knit --etcd $ETCD network create --driver overlay --subnet 10.252.0.0/16 blue"
kn 1 network create --driver overlay --subnet 10.252.0.0/16 blue >/dev/null
kn 1 network create --driver overlay --subnet 10.253.0.0/16 red >/dev/null
kn 1 network ls | sed 's/^/      /'

say "Containers through the knit CNI plugin: c1 on h1, c2 on h2, c3 on h3 (blue); r2 on h2 (red)"
attach() { # container host-number network
  local c=$1 n=$2 net=$3 res
  mkns "$ID-$c"
  res=$(cni ADD "$ID-h$n" knit "$ID-$c" "$(overlay_conf "$n" "$net" "$c")") ||
    die "ADD $c: $res"
  echo "$ID-h$n" >"$DIR/$c.host"; echo "$n" >"$DIR/$c.hostn"; echo "$net" >"$DIR/$c.net"
  addr_of "$res" >"$DIR/$c.ip"
  echo "    $c on h$n ($net): $(cat "$DIR/$c.ip")"
}
attach c1 1 blue
attach c2 2 blue
attach c3 3 blue
attach r2 2 red
ip_of() { cat "$DIR/$1.ip"; }

say "Cross-host ping over the overlay"
ping_ok() { in_ns "$ID-$1" ping -c1 -W1 "$(ip_of "$2")" >/dev/null 2>&1; }
for pair in "c1 c2" "c1 c3" "c2 c3"; do
  set -- $pair
  ok=""
  for _ in $(seq 50); do ping_ok "$1" "$2" && { ok=1; break; }; sleep 0.1; done
  [ -n "$ok" ] || die "$1 cannot reach $2"
  echo "    $1 -> $2 ($(ip_of "$2")): ok"
done

say "Names across hosts: knit's DNS on h2 (the overlay's gateway), asked from c2 for c3 on h3"
kn_bg 2 "$DIR/h2/dns.log" dns --no-forward --listen 10.252.0.1
GOT=""
for _ in $(seq 50); do
  GOT=$(in_ns "$ID-c2" dig +short +time=1 +tries=1 @10.252.0.1 c3.blue.knit.internal || true)
  [ "$GOT" = "$(ip_of c3)" ] && break
  sleep 0.1
done
show "dig @10.252.0.1 c3.blue.knit.internal   (from c2)"
echo "      $GOT"
[ "$GOT" = "$(ip_of c3)" ] || die "c3 did not resolve from c2 ($GOT)"

say "Isolation: r2 (red, on h2) cannot reach c3 (blue); c2 (blue, same host) can"
if in_ns "$ID-r2" ping -c1 -W1 "$(ip_of c3)" >/dev/null 2>&1; then die "red reached blue"; fi
echo "    r2 -> c3: no answer, as it should be"
ping_ok c2 c3 || die "the positive control failed"
echo "    c2 -> c3: ok"

say "A port mapping: container 'web' on h1's bridge network (bridge + portmap), from outside"
mkns "$ID-web"
mkdir -p "$DIR/www"
echo "hello from web on h1" >"$DIR/www/index.html"
jq -nc '{cniVersion:"1.0.0", name:"local", type:"bridge", bridge:"kcbr0", isGateway:true,
  ipMasq:true, ipam:{type:"host-local", ranges:[[{subnet:"10.254.0.0/24"}]], routes:[{dst:"0.0.0.0/0"}],
  dataDir:"'"$DIR/h1/cni"'"}}' >"$DIR/web.conf"
RES=$(cni ADD "$ID-h1" bridge "$ID-web" "$(cat "$DIR/web.conf")") || die "ADD web: $RES"
jq -c --argjson prev "$RES" '{cniVersion:"1.0.0", name:"local", type:"portmap",
  capabilities:{portMappings:true}, prevResult:$prev,
  runtimeConfig:{portMappings:[{hostPort:8080, containerPort:80, protocol:"tcp"}]}}' \
  <<<'{}' >"$DIR/web.pmconf"
cni ADD "$ID-h1" portmap "$ID-web" "$(cat "$DIR/web.pmconf")" >/dev/null || die "portmap ADD"
nsenter --net="/run/netns/$ID-web" busybox httpd -f -p 80 -h "$DIR/www" &
PIDS+=($!)
show "curl http://192.168.77.11:8080/   (from the underlay, outside every host)"
GOT=""
for _ in $(seq 50); do
  GOT=$(in_ns "$UL" curl -s -m1 http://192.168.77.11:8080/ || true)
  [ -n "$GOT" ] && break
  sleep 0.1
done
echo "      $GOT"
[ "$GOT" = "hello from web on h1" ] || die "the port mapping did not answer"

say "The topology, as etcd holds it"
show "knit --etcd $ETCD topology"
kn 1 topology | sed 's/^/      /'
if command -v dot >/dev/null; then
  kn 1 topology --svg "$WS/target/topology.svg" >/dev/null && echo "    drawn: target/topology.svg"
else
  kn 1 topology --dot >"$WS/target/topology.dot"
  echo "    DOT: target/topology.dot (apt install graphviz for an SVG)"
fi
