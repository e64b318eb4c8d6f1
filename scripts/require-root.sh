#!/usr/bin/env bash
# Kernel and integration tests need root: fail loudly, never skip.
if [ "$(id -u)" != 0 ]; then
  echo "FAIL: this suite needs root (network namespaces, netlink, nftables); run it as root" >&2
  exit 1
fi
