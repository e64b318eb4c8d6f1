#!/usr/bin/env bash
# The release-mode suites: the kernel tests of libnet, cni-plugins and overlay-vxlan
# (`kernel`) and the integration tests that run the real binaries in namespaces (`netns`).
# Both are built by one cargo invocation, with one package and feature selection: separate
# `cargo test -p ...` runs unify features each their own way and rebuild most of the tree
# each time.
#   scripts/release-tests.sh build          compile every test binary of both suites
#   scripts/release-tests.sh run SUITE...   run a suite's binaries (after `build`)
set -euo pipefail
cd "$(dirname "$0")/.."
CARGO=${CARGO:-cargo}
SELECTION=(--release -p libnet -p cni-plugins -p overlay-vxlan -p netns-tests
  --features libnet/root-tests,cni-plugins/root-tests,overlay-vxlan/root-tests,netns-tests/root-tests)
LIST=target/release/knit-test-binaries

case "${1:-}" in
build)
  mkdir -p target/release
  # Each test binary: its package's directory (where cargo would run it), name, path.
  "$CARGO" test "${SELECTION[@]}" --no-run --message-format=json-render-diagnostics \
    | jq -r 'select(.reason == "compiler-artifact" and .profile.test and .executable != null)
        | "\(.manifest_path | rtrimstr("/Cargo.toml")) \(.target.kind[0]) \(.target.name) \(.executable)"' \
    | sort > "$LIST.tmp"
  mv "$LIST.tmp" "$LIST"
  ;;
run)
  shift
  [ $# -gt 0 ] || { echo "usage: $0 run kernel|netns..." >&2; exit 2; }
  for suite in "$@"; do
    case $suite in
      kernel) packages=(libnet cni-plugins overlay-vxlan); args=(--test-threads=2) ;;
      netns) packages=(netns-tests); args=(--test-threads=1 --nocapture) ;;
      *) echo "$0: no suite $suite (kernel, netns)" >&2; exit 2 ;;
    esac
    for p in "${packages[@]}"; do
      found=0
      while read -r dir kind name exe; do
        [ "$(basename "$dir")" = "$p" ] || continue
        found=1
        echo "     Running $p $kind $name ($exe)"
        (cd "$dir" && "$exe" "${args[@]}")
      done < "$LIST"
      if [ "$found" = 0 ]; then
        echo "FAIL: no test binary of $p in $LIST: run '$0 build' first" >&2
        exit 1
      fi
    done
  done
  ;;
*)
  echo "usage: $0 build | run kernel|netns..." >&2
  exit 2
  ;;
esac
