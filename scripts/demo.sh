#!/usr/bin/env bash
# knit single-host demo: podman (CNI backend) drives knit's CNI plugins inside a demo "host"
# network namespace: a bridge network, two containers talking, a port mapping reached from a
# client outside the host, the topology, then a teardown that leaves nothing behind.
#
#   KNIT_CNI_BIN   plugin dir (default: <workspace>/target/cni/bin, made by `make build`);
#                  KNIT_CNI_BIN=/usr/lib/cni runs the same demo on the reference plugins.
#
# The real host namespace is never touched: podman runs under `nsenter --net` in the demo netns,
# so the bridge, veths and firewall rules the plugins make all live there.
set -euo pipefail

WS=$(cd "$(dirname "$0")/.." && pwd)
CNI_BIN=$(realpath -m "${KNIT_CNI_BIN:-$WS/target/cni/bin}") # podman wants it absolute
ID=knit-demo-$$
HOST_NS=$ID-host            # stands for the machine podman runs on
OUT_NS=$ID-outside          # a client somewhere on the network
HOST_ADDR=10.244.251.1      # the host's address on the link to the client
OUT_ADDR=10.244.251.2
SUBNET=10.244.77.0/24       # the container network
NET=$ID-net
HOST_PORT=8080
IMAGE=knit-demo:busybox
START=$(date +%s%N)

if [ -t 1 ]; then B=$'\033[1m' N=$'\033[0m'; else B="" N=""; fi
say() { printf '\n%s==> %s%s\n' "$B" "$*" "$N"; }
run() { printf '    $ %s\n' "$*"; "$@" 2>&1 | sed 's/^/      /'; }
die() { echo "demo: FAIL: $*" >&2; exit 1; }

[ "$(id -u)" = 0 ] || die "run as root (network namespaces, podman)"
for tool in podman runc conmon nsenter ip curl tar jq; do
  command -v "$tool" >/dev/null || die "$tool is not installed (run 'make deps')"
done
[ -x /bin/busybox ] || die "/bin/busybox missing (busybox-static)"
for p in bridge host-local portmap firewall tuning; do
  [ -x "$CNI_BIN/$p" ] || die "CNI plugin $CNI_BIN/$p missing (run 'make build' or set KNIT_CNI_BIN)"
done

DIR=$(mktemp -d "/tmp/$ID.XXXX")
HAD_CONTAINERS_STATE=$([ -e /var/lib/containers ] && echo 1 || echo 0)
HAD_RUNC_STATE=$([ -e /run/runc ] && echo 1 || echo 0)

in_host() { nsenter --net="/run/netns/$HOST_NS" "$@"; }
in_out() { nsenter --net="/run/netns/$OUT_NS" "$@"; }
pm() {
  CONTAINERS_CONF=$DIR/containers.conf timeout --kill-after=5 60 \
    nsenter --net="/run/netns/$HOST_NS" podman --root "$DIR/root" --runroot "$DIR/runroot" "$@"
}

exec 3>&1 4>&2
CLEANED=0
cleanup() {
  local rc=$?
  # Only the main shell tears down, once (a subshell hit by the signal must not).
  [ "$BASHPID" = $$ ] && [ "$CLEANED" = 0 ] || exit "$rc"
  CLEANED=1
  set +e
  exec 1>&3 2>&4 # a signal may land inside a call whose output goes to /dev/null
  say "Teardown"
  if [ -d "$DIR/root" ] && [ -e "/run/netns/$HOST_NS" ]; then
    local ids sandboxes=""
    ids=$(pm ps -aq 2>/dev/null)
    # shellcheck disable=SC2086 # one argument per container id
    [ -z "$ids" ] || sandboxes=$(podman_inspect_sandbox $ids 2>/dev/null)
    pm rm -af -t 0 >/dev/null 2>&1
    pm network rm -f "$NET" >/dev/null 2>&1
    for s in $sandboxes; do [ -e "$s" ] && { umount -l "$s"; rm -f "$s"; }; done
  fi
  # Anything podman left running for this dir (conmon names it on its command line).
  for pid in $(grep -lsF "$DIR" /proc/[0-9]*/cmdline | cut -d/ -f3); do
    [ "$pid" = $$ ] || [ "$pid" = "$BASHPID" ] || kill -9 "$pid" 2>/dev/null
  done
  grep -F " $DIR" /proc/self/mountinfo | awk '{print $5}' | sort -r | while read -r m; do
    umount "$m" 2>/dev/null || umount -l "$m"
  done
  rm -rf "$DIR" "/var/lib/cni/networks/$NET" "/var/lib/cni/networks/.knit-ipam/$NET" /var/lib/cni/results/"$NET"-*
  [ "$HAD_CONTAINERS_STATE" = 1 ] || rm -rf /var/lib/containers
  [ "$HAD_RUNC_STATE" = 1 ] || rmdir /run/runc 2>/dev/null
  ip netns del "$OUT_NS" 2>/dev/null
  ip netns del "$HOST_NS" 2>/dev/null
  local left
  left=$( { ip netns list | grep -F "$ID"; grep -F "$DIR" /proc/self/mountinfo;
            ls -d "$DIR" "/var/lib/cni/networks/$NET" "/var/lib/cni/networks/.knit-ipam/$NET" 2>/dev/null; } || true)
  if [ -n "$left" ]; then
    echo "demo: left behind:"; echo "$left"; rc=1
  else
    echo "    nothing left behind (namespaces, mounts, podman storage, host-local state)"
  fi
  local ms=$((($(date +%s%N) - START) / 1000000))
  printf '\ndemo: %s in %d.%03d s\n' "$([ "$rc" = 0 ] && echo OK || echo FAILED)" $((ms / 1000)) $((ms % 1000))
  exit "$rc"
}
podman_inspect_sandbox() { pm inspect --format '{{.NetworkSettings.SandboxKey}}' "$@"; }
trap cleanup EXIT
trap 'exit 130' INT TERM

say "knit demo: podman drives the CNI plugins in $CNI_BIN"
say "A demo host ($HOST_NS) and a client outside it ($OUT_NS), joined by a veth pair"
run ip netns add "$HOST_NS"
run ip netns add "$OUT_NS"
run ip link add kd$$h netns "$HOST_NS" type veth peer name kd$$o netns "$OUT_NS"
run ip -n "$HOST_NS" addr add $HOST_ADDR/30 dev kd$$h
run ip -n "$OUT_NS" addr add $OUT_ADDR/30 dev kd$$o
for ns in "$HOST_NS" "$OUT_NS"; do ip -n "$ns" link set lo up; done
ip -n "$HOST_NS" link set kd$$h up
ip -n "$OUT_NS" link set kd$$o up

say "podman (CNI backend) with all its state under $DIR"
mkdir -p "$DIR/net" "$DIR/rootfs/bin" "$DIR/rootfs/www"
cat >"$DIR/containers.conf" <<EOF
[containers]
default_ulimits = ["nofile=1024:1024", "nproc=1024:1024"]
[engine]
cgroup_manager = "cgroupfs"
runtime = "runc"
lock_type = "file"
tmp_dir = "$DIR/tmp"
events_logger = "file"
events_logfile_path = "$DIR/events.log"
[network]
network_backend = "cni"
cni_plugin_dirs = ["$CNI_BIN"]
network_config_dir = "$DIR/net"
EOF
cp /bin/busybox "$DIR/rootfs/bin/"
for a in sh ping ip nc httpd sleep cat echo ls; do ln -s busybox "$DIR/rootfs/bin/$a"; done
echo "hello from a knit container" >"$DIR/rootfs/www/index.html"
out=$(tar -C "$DIR/rootfs" -c . | pm import - "$IMAGE" 2>&1) || die "podman import: $out"
echo "    image $IMAGE imported from busybox-static (no registry needed)"

say "A bridge network $NET ($SUBNET): podman writes a conflist that chains the plugins"
run pm network create --subnet "$SUBNET" "$NET"
echo "    plugin chain: $(jq -r '[.plugins[].type] | join(" -> ")' "$DIR/net/$NET.conflist")"

say "Two containers: 'web' (busybox httpd, -p $HOST_PORT:80) and 'client'"
pm run -d --name web --network "$NET" -p "$HOST_PORT:80" "$IMAGE" httpd -f -p 80 -h /www >/dev/null
pm run -d --name client --network "$NET" "$IMAGE" sleep 300 >/dev/null
ip_of() { pm inspect --format "{{(index .NetworkSettings.Networks \"$NET\").IPAddress}}" "$1"; }
WEB_IP=$(ip_of web)
CLIENT_IP=$(ip_of client)
GW=$(pm inspect --format "{{(index .NetworkSettings.Networks \"$NET\").Gateway}}" web)
echo "    web $WEB_IP, client $CLIENT_IP, gateway $GW"

say "client -> web and client -> gateway (ping)"
run pm exec client ping -c2 -W2 "$WEB_IP"
run pm exec client ping -c1 -W2 "$GW"

say "Port mapping: the outside client fetches http://$HOST_ADDR:$HOST_PORT/ (DNAT to web:80)"
for _ in $(seq 50); do in_out curl -s -m1 -o /dev/null "http://$HOST_ADDR:$HOST_PORT/" && break; sleep 0.1; done
run in_out curl -sS -m3 "http://$HOST_ADDR:$HOST_PORT/"
say "... and the host itself through localhost (http://127.0.0.1:$HOST_PORT/)"
if ! run in_host curl -sS -m3 "http://127.0.0.1:$HOST_PORT/"; then
  echo "    (localhost port mapping not available with these plugins)"
fi

say "Topology"
echo "    demo host ($HOST_NS):"; run ip -n "$HOST_NS" -br addr
echo "    outside ($OUT_NS):"; run ip -n "$OUT_NS" -br addr
for c in web client; do
  echo "    container $c:"; run nsenter --net="$(podman_inspect_sandbox "$c")" ip -br addr
done
echo "    bridge ports:"; run ip -n "$HOST_NS" -br link show master "$(jq -r '.plugins[0].bridge' "$DIR/net/$NET.conflist")"
if in_host nft list table inet knit >/dev/null 2>&1; then
  echo "    knit's nftables table in the demo host:"; run in_host nft list table inet knit
else
  echo "    no 'inet knit' table (reference plugins): their iptables rules in the demo host:"
  run in_host iptables-save -t nat
fi

say "Removing the containers and the network"
run pm rm -f -t 0 web client
run pm network rm "$NET"
