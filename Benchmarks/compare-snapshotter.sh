#!/usr/bin/env bash
# compare-snapshotter.sh — containerd 1.6 on `layertool snapshotter` (a proxy plugin) side by
# side with containerd's own overlayfs snapshotter, in the same containerd, the same run:
#   import    `ctr images import --snapshotter S rootfs.tar` (containerd applies every layer)
#   pull      containerd's unpacker (client.Pull with unpack: what CRI and nerdctl run) from a
#             local registry; for layertool the image is first imported with `layertool unpack
#             --image` (untimed), so each layer takes the fast path (AlreadyExists, no apply);
#             overlayfs applies as usual. Both fetch the same blobs from the registry.
#   run       `ctr run --rm --snapshotter S IMG ID /bin/true` (create, mount, start, delete)
# Each round runs every variant once (interleaved); untimed between runs: `ctr images rm --sync`
# (containerd's gc removes the snapshots and content) and `sync`.
#
# Usage: compare-snapshotter.sh [--runs N] [--work DIR] LAYERTOOL_BIN OCI_LAYOUT
#   LAYERTOOL_BIN  e.g. .build/release/layertool
#   OCI_LAYOUT     an OCI image layout with tag `latest`, e.g. $TMPDIR/benchdata/oci/rootfs from
#                  ../shared/bench/make-fixtures.sh, or fixtures/busybox
#   --work DIR     where containerd, the store and the registry keep their files (default: a new
#                  dir under $TMPDIR; use a journaled ext4, see ../shared/bench/README.md)
# Needs root, containerd, ctr, runc, skopeo, docker-registry, and Go with Debian's containerd
# sources (Tests/containerd-conformance/build.sh builds snapshotter-tool). Prints markdown.
set -euo pipefail
export LC_ALL=C
RUNS=5
WORK=""
while [ $# -gt 2 ]; do
  case "$1" in
    --runs) RUNS=$2; shift 2 ;;
    --work) WORK=$2; shift 2 ;;
    *) echo "unknown option $1" >&2; exit 2 ;;
  esac
done
[ $# -eq 2 ] || { sed -n '2,22p' "$0" >&2; exit 2; }
LAYERTOOL=$(realpath "$1")
LAYOUT=$(realpath "$2")
HERE=$(cd "$(dirname "$0")/.." && pwd)
[ "$(id -u)" = 0 ] || { echo "needs root" >&2; exit 2; }
WORK=${WORK:-$(mktemp -d "${TMPDIR:-/tmp}/lkbench-snapshotter-XXXXXX")}
mkdir -p "$WORK"
PIDS=()
cleanup() {
  local status=$?   # the script's own status: the cleanup must not replace it
  for pid in "${PIDS[@]}"; do kill -TERM "$pid" 2>/dev/null || true; done
  wait 2>/dev/null || true
  { grep -o " $WORK/[^ ]*" /proc/self/mountinfo || true; } | sort -r | while read -r m; do umount -l "$m" || true; done
  exit "$status"
}
trap cleanup EXIT

TOOLS=$(OUT="$WORK/go" "$HERE/Tests/containerd-conformance/build.sh")
"$LAYERTOOL" snapshotter --root "$WORK/store" --address "$WORK/layertool.sock" 2>"$WORK/layertool.log" &
PIDS+=($!)
cat > "$WORK/containerd.toml" <<EOF
version = 2
root = "$WORK/containerd-root"
state = "$WORK/containerd-state"
disabled_plugins = ["io.containerd.grpc.v1.cri"]
[grpc]
  address = "$WORK/containerd.sock"
[ttrpc]
  address = "$WORK/containerd.sock.ttrpc"
[proxy_plugins]
  [proxy_plugins.layertool]
    type = "snapshot"
    address = "$WORK/layertool.sock"
EOF
containerd --config "$WORK/containerd.toml" 2>"$WORK/containerd.log" &
PIDS+=($!)
PORT=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
cat > "$WORK/registry.yml" <<EOF
version: 0.1
log:
  level: warn
storage:
  filesystem:
    rootdirectory: $WORK/registry
http:
  addr: 127.0.0.1:$PORT
EOF
docker-registry serve "$WORK/registry.yml" 2>"$WORK/registry.log" &
PIDS+=($!)
for _ in $(seq 100); do [ -S "$WORK/containerd.sock" ] && [ -S "$WORK/layertool.sock" ] && break; sleep 0.1; done
CTR=(ctr --address "$WORK/containerd.sock" --namespace bench)
REF=127.0.0.1:$PORT/lkbench/image:latest
tar -C "$LAYOUT" -cf "$WORK/image.tar" .
skopeo copy -q --dest-tls-verify=false "oci:$LAYOUT:latest" "docker://$REF" >&2
"$LAYERTOOL" unpack --image "$LAYOUT:latest" --name lkbench --root "$WORK/store" >/dev/null

# Times one command (seconds, on stdout); its output goes to the log.
timed() {
  local start end
  start=$EPOCHREALTIME
  "$@" >>"$WORK/commands.log" 2>&1 || { echo "failed: $*" >&2; tail -5 "$WORK/commands.log" >&2; exit 1; }
  end=$EPOCHREALTIME
  echo "$end - $start" | bc -l
}
reset() { "${CTR[@]}" images rm --sync "$@" >/dev/null 2>&1 || true; sync; }
median() { sort -n | awk '{a[NR]=$1} END {m=(NR%2)?a[(NR+1)/2]:(a[NR/2]+a[NR/2+1])/2; printf "%.3f", m}'; }

declare -A T
for round in $(seq "$RUNS"); do
  echo "round $round/$RUNS" >&2
  for sn in layertool overlayfs; do
    IMG=$("${CTR[@]}" images ls -q | grep '^import-' || true); [ -n "$IMG" ] && reset $IMG
    T[import-$sn]+="$(timed "${CTR[@]}" images import --snapshotter $sn "$WORK/image.tar") "
    # The pull must find neither the imported content nor its snapshots (it would then do nothing).
    IMG=$("${CTR[@]}" images ls -q | grep '^import-' || true); [ -n "$IMG" ] && reset $IMG
    reset "$REF"
    T[pull-$sn]+="$(timed "$TOOLS/snapshotter-tool" pull --containerd "$WORK/containerd.sock" --namespace bench --snapshotter $sn "$REF") "
  done
done
# run: the image unpacked for both (the last pull), then N runs each, interleaved.
for sn in layertool overlayfs; do "${CTR[@]}" run --rm --snapshotter $sn "$REF" warm-$sn /bin/true >/dev/null 2>&1 || true; done
for round in $(seq $((RUNS * 4))); do
  for sn in layertool overlayfs; do
    T[run-$sn]+="$(timed "${CTR[@]}" run --rm --snapshotter $sn "$REF" run-$sn-$round /bin/true) "
  done
done

echo "## containerd: layertool snapshotter vs overlayfs ($(date -u '+%Y-%m-%d %H:%M UTC'), load $(cut -d' ' -f1-3 /proc/loadavg))"
echo
echo "Image: $LAYOUT. Medians in seconds ($RUNS runs; run: $((RUNS * 4)))."
echo
echo "| | layertool | overlayfs | ratio |"
echo "|---|---|---|---|"
for part in import pull run; do
  a=$(echo ${T[$part-layertool]} | tr ' ' '\n' | median)
  b=$(echo ${T[$part-overlayfs]} | tr ' ' '\n' | median)
  label=$part; [ $part = pull ] && label="pull (layertool: fast path)"
  printf '| %s | %s | %s | %.2fx |\n' "$label" "$a" "$b" "$(echo "$a / $b" | bc -l)"
done
echo
echo "Fast-path answers in the layertool log: $(grep -c "served from the store's layer" "$WORK/layertool.log")"
