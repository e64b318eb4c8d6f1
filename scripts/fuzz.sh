#!/usr/bin/env bash
# Fuzz knit's DNS request path (dns/tests/fuzz.rs: arbitrary packets, mutated queries, random
# names from inside and outside knit's networks; the fast path and knit's UDP loop against the
# hickory path, byte for byte) for KNIT_FUZZ_SECS seconds, fresh random cases
# every round; stops at the first failure (proptest prints the minimal failing input).
set -euo pipefail
secs=${KNIT_FUZZ_SECS:-600}
rounds=0
cargo build --release -p dns --tests >/dev/null
end=$((SECONDS + secs))
while [ "$rounds" -eq 0 ] || [ "$SECONDS" -lt "$end" ]; do
  KNIT_FUZZ_CASES=${KNIT_FUZZ_CASES:-3000} cargo test --release -q -p dns --test fuzz >/dev/null
  rounds=$((rounds + 1))
done
echo "fuzz: $rounds rounds in ${SECONDS}s, no failure"
