#!/usr/bin/env bash
# Installs every Debian package the build, the tests, the benchmarks and the demo need.
# Idempotent; run as root on Debian 12. Skips apt entirely when everything is already present.
set -euo pipefail
PKGS=(iproute2 nftables iptables iputils-ping etcd-server etcd-client podman runc containernetworking-plugins
      netavark aardvark-dns busybox-static iperf3 curl jq docker.io bind9-dnsutils unbound dnsperf
      protobuf-compiler libprotobuf-dev)
missing=()
for p in "${PKGS[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
  echo "deps: installing ${missing[*]}"
  export DEBIAN_FRONTEND=noninteractive
  # No package may start a service on the host (docker.io would start dockerd, which rewrites
  # the host's iptables): the tests start their own daemons inside namespaces.
  guard=""
  if [ ! -e /usr/sbin/policy-rc.d ]; then
    printf '#!/bin/sh\nexit 101\n' > /usr/sbin/policy-rc.d && chmod 0755 /usr/sbin/policy-rc.d
    guard=1
  fi
  trap 'if [ -n "$guard" ]; then rm -f /usr/sbin/policy-rc.d; fi' EXIT
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi
