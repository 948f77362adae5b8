#!/usr/bin/env bash
# Builds LayerKit's fuzz targets (libFuzzer + AddressSanitizer) and runs each for a bounded time
# on its seed corpus. Exits non-zero if any target finds a crash, hang, leak or broken invariant.
#
#   Fuzz/run.sh [--time SECONDS] [--seed N] [--configuration debug|release] [--scratch-path DIR] [--nice] [--no-build] [TARGET...]
#
# TARGET: apply, image, upper-diff, store-open (default: all, one after the other). --seed fixes
# libFuzzer's random seed (CI uses 1, so a failure there is reproducible).
# New inputs go to Fuzz/.build/fuzz-corpus/TARGET (the seeds in Fuzz/corpus/TARGET are only read);
# crashes, hangs and leaks to Fuzz/.build/fuzz-artifacts/TARGET/, logs to Fuzz/.build/fuzz-logs/.
# Run as root for the private tmpfs the targets work in (see Sources/FuzzSupport/Scratch.swift).
set -euo pipefail
cd "$(dirname "$0")"

time_per_target=30
configuration=release
nice_level=""
build=1
scratch=()
seed=()
targets=()
while [ $# -gt 0 ]; do
  case "$1" in
    --time) time_per_target="$2"; shift 2 ;;
    --configuration|-c) configuration="$2"; shift 2 ;;
    --seed) seed=(-seed="$2"); shift 2 ;;
    --scratch-path) scratch=(--scratch-path "$2"); shift 2 ;;
    --nice) nice_level="nice -n 19"; shift ;;
    --no-build) build=0; shift ;;
    -h|--help) sed -n '2,14p' "$0"; exit 0 ;;
    -*) echo "run.sh: unknown option $1" >&2; exit 2 ;;
    *) targets+=("$1"); shift ;;
  esac
done
[ ${#targets[@]} -gt 0 ] || targets=(apply image upper-diff store-open)

product() {
  case "$1" in
    apply) echo FuzzApply ;;
    image) echo FuzzImage ;;
    upper-diff) echo FuzzUpperDiff ;;
    store-open) echo FuzzStoreOpen ;;
    *) echo "run.sh: unknown target $1 (apply, image, upper-diff, store-open)" >&2; exit 2 ;;
  esac
}

# Per target: the longest input, the dictionary.
max_len() { case "$1" in apply) echo 65536 ;; image) echo 131072 ;; upper-diff) echo 4096 ;; store-open) echo 1024 ;; esac; }
dictionary() { case "$1" in apply) echo dictionaries/tar.dict ;; image) echo dictionaries/image.dict ;; *) echo "" ;; esac; }

# SwiftPM's --sanitize fuzzer links libFuzzer's main (no `main` symbol of our own); the -Xswiftc form
# instruments every Swift module with both, whatever order the flags reach the driver in.
flags=(-c "$configuration" ${scratch[@]+"${scratch[@]}"} --sanitize fuzzer --sanitize address -Xswiftc -sanitize=fuzzer,address -Xswiftc -parse-as-library)
if [ "$build" = 1 ]; then
  # One invocation builds every target (a build per product would compile LayerKit again each time).
  swift build "${flags[@]}"
fi
bin="$(swift build "${flags[@]}" --show-bin-path)"

# libFuzzer reports crashes itself: Swift's backtracer would only slow that down.
export SWIFT_BACKTRACE=enable=no
export ASAN_OPTIONS="${ASAN_OPTIONS:-detect_leaks=1:allocator_may_return_null=1}"

status=0
mkdir -p .build/fuzz-logs
for t in "${targets[@]}"; do
  work=".build/fuzz-corpus/$t"
  artifacts=".build/fuzz-artifacts/$t/"
  mkdir -p "$work" "$artifacts"
  dict="$(dictionary "$t")"
  log=".build/fuzz-logs/$t.log"
  echo "== fuzz $t: ${time_per_target}s (log: Fuzz/$log)"
  set +e
  $nice_level "$bin/$(product "$t")" "$work" "corpus/$t" \
    -max_total_time="$time_per_target" -timeout=25 -rss_limit_mb=3072 -max_len="$(max_len "$t")" \
    ${dict:+-dict="$dict"} ${seed[@]+"${seed[@]}"} -artifact_prefix="$artifacts" -print_final_stats=1 -detect_leaks=1 >"$log" 2>&1
  rc=$?
  set -e
  # An uninstrumented build fuzzes blind: LayerKit alone has tens of thousands of counters.
  counters=$(sed -n 's/^INFO: Loaded 1 modules *(\([0-9]*\) inline 8-bit counters.*/\1/p' "$log" | head -1)
  if [ "${counters:-0}" -lt 20000 ]; then
    echo "== fuzz $t: the binary has ${counters:-no} coverage counters: LayerKit was not instrumented" >&2
    status=1
  fi
  grep -E "^#[0-9]+ +(DONE|INITED)|stat::number_of_executed_units|stat::peak_rss_mb|ERROR|SUMMARY|invariant broken" "$log" | tail -8 || true
  if [ $rc -ne 0 ]; then
    echo "== fuzz $t: FAILED (exit $rc); the input is in Fuzz/$artifacts" >&2
    tail -40 "$log" >&2
    status=1
  fi
done
exit $status
