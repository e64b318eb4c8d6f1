#!/bin/bash
# bandwidth plugin ADD and DEL as whole processes, knit vs the reference (containernetworking-
# plugins in /usr/lib/cni), medians of N cycles, in scratch namespaces (knt-<pid>-...). Root.
#   scripts/bench-bandwidth.sh [KNIT_BANDWIDTH_BINARY]   (default target/cni/bin/bandwidth)
set -euo pipefail
KNIT=${1:-target/cni/bin/bandwidth}
REF=/usr/lib/cni/bandwidth
N=${N:-25}
H=knt-$$-bwbh; C=knt-$$-bwbc
trap 'ip netns del $H 2>/dev/null; ip netns del $C 2>/dev/null' EXIT
ip netns add $H; ip netns add $C
ip -n $H link add vethb type veth peer name eth0 netns $C
ip -n $H link set vethb up; ip -n $C link set eth0 up
CONF='{"cniVersion":"1.0.0","name":"knt-net","type":"bandwidth",
 "ingressRate":50000000,"ingressBurst":400000,"egressRate":50000000,"egressBurst":400000,
 "prevResult":{"cniVersion":"1.0.0","interfaces":[{"name":"vethb"},{"name":"eth0","sandbox":"/run/netns/'$C'"}]}}'
run() { # BINARY VERB
  echo "$CONF" | CNI_COMMAND=$2 CNI_CONTAINERID=ctr1 CNI_NETNS=/run/netns/$C CNI_IFNAME=eth0 \
    CNI_PATH=/usr/lib/cni nsenter --net=/run/netns/$H "$1" >/dev/null
}
median() { sort -n | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}'; }
now() { date +%s%N; }
for bin in "$REF" "$KNIT"; do
  add=(); del=()
  for _ in $(seq "$N"); do
    t0=$(now); run "$bin" ADD; t1=$(now); run "$bin" DEL; t2=$(now)
    add+=($(( (t1 - t0) / 1000 ))); del+=($(( (t2 - t1) / 1000 )))
    # The reference's DEL leaves the veth's qdiscs (the veth normally goes next): untimed.
    nsenter --net=/run/netns/$H tc qdisc del dev vethb root 2>/dev/null || true
    nsenter --net=/run/netns/$H tc qdisc del dev vethb ingress 2>/dev/null || true
  done
  echo "$bin: ADD median $(printf '%s\n' "${add[@]}" | median) us," \
    "DEL median $(printf '%s\n' "${del[@]}" | median) us"
done
start=()
for _ in $(seq "$N"); do t0=$(now); nsenter --net=/run/netns/$H true; start+=($(( ($(now) - t0) / 1000 ))); done
echo "process start alone (nsenter true): median $(printf '%s\n' "${start[@]}" | median) us"
