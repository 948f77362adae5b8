#!/usr/bin/env bash
# compare-store.sh — time the layer store (`layertool unpack --image ... --root STORE`,
# `layertool mount` / `umount`, `layertool commit`) against what users would otherwise run:
# umoci (unpack / repack), containerd's applier and differ (containerd-peer), a plain
# `mount -t overlay` over the store's l/ short links (as Docker's overlay2 mounts) and
# fuse-overlayfs over the same layers.
#
# Three parts (see Benchmarks/README.md, "compare-store.sh"):
#   import   an OCI image (data/oci/SET) into a fresh store, per run
#   mount    mount + umount of a container on generated images of 1, 128 and 500 layers
#   commit   a 5% change in a container on the rootfs image, turned into a layer + image
# The script re-executes itself in a private mount namespace (unshare -m): a mount it
# leaves behind by accident goes away with the namespace. Run with --help for the options.
set -euo pipefail
export LC_ALL=C          # '.' as decimal point in $EPOCHREALTIME, printf and sort

PROG=$(basename "$0")

if [ -z "${LKBENCH_STORE_UNSHARED:-}" ]; then
  [ "$(id -u)" = 0 ] || { echo "$PROG: needs root (mounts, a private mount namespace)" >&2; exit 2; }
  case " $* " in *" -h "*|*" --help "*) ;; *)
    export LKBENCH_STORE_UNSHARED=1 LKBENCH_STORE_INVOCATION="$0 $*"
    exec unshare -m --propagation private -- "$0" "$@" ;;
  esac
fi
INVOCATION=${LKBENCH_STORE_INVOCATION:-"$0 $*"}
START_DATE=$(date -u '+%Y-%m-%d %H:%M:%S UTC')
START_LOAD=$(cut -d' ' -f1-3 /proc/loadavg)

usage() {
  cat <<EOF
Usage: $PROG [options] LAYERTOOL_BIN

Times the layer store of LAYERTOOL_BIN against peers, on the scratch file system:
  import  'layertool unpack --image DATA/oci/SET:latest --root STORE' into a fresh
          store vs 'umoci unpack' of the same layout and containerd's archive.Apply
          of its layer (containerd-peer -verify), each peer also with a 'sync -f'
          (syncfs) after it, since the store syncs the file system before it records
          a layer;
  mount   'layertool mount --root S --name C IMG TARGET' + 'layertool umount' (and
          'layertool rm C', timed apart) on images of N tiny layers (generated
          once, imported once) vs 'mount -t overlay' with the same lower dirs as
          l/<short> links relative to the store root (Docker's overlay2 way; one
          page of mount data) and fuse-overlayfs over the same dirs;
  commit  a container on the rootfs image with a ~5% change (untimed) -> timed
          'layertool commit' vs 'layertool diff CONTAINER -o OUT.tar.gz', 'umoci
          repack' of a bundle with the same change and containerd's WriteDiff of
          the layer's dir against the container's mount (containerd-peer -mode=diff).
Runs are interleaved (each round runs every tool once). Everything runs in a private
mount namespace (the script re-executes itself under 'unshare -m'). Before timing,
LAYERTOOL_BIN is copied to BIN_COPY_DIR/layertool-<sha256:12> and the copy runs.
Prints a markdown report on stdout (progress goes to stderr), e.g.
  $PROG --mount-image /var/tmp/lkbench/scratch-store.img .build/release/layertool > store.md

Options:
  --parts LIST        import,mount,commit (default: all three)
  --runs N            timed runs per tool for import and commit (default 5)
  --mount-runs N      timed mount/umount cycles per tool and image (default 50)
  --import-runs N     timed imports (layertool, umoci) of each generated image (default 3)
  --sets LIST         import data sets (default rootfs; also many-small, few-large)
  --layers LIST       layer counts of the mount images (default 1,128,500)
  --data DIR          data made by shared/bench/make-fixtures.sh (default
                      \$LKBENCH_DATA or /var/tmp/lkbench/data)
  --scratch DIR       a JOURNALED file system for stores and outputs (default
                      \$LKBENCH_SCRATCH or /mnt/lkbench)
  --mount-image IMG   instead of --scratch: loop-mount IMG (created as a journaled ext4
                      of --image-size if missing) for the run; always unmounted on exit
  --image-size SIZE   size for a new --mount-image (default 12G; sparse)
  --containerd-peer P containerd-peer binary (default \$CONTAINERD_PEER or
                      /var/tmp/lkbench/containerd-peer)
  --bin-copy-dir DIR  where the copy of LAYERTOOL_BIN goes (default /var/tmp/lkbench)
  --no-bin-copy       run LAYERTOOL_BIN in place
  --allow-unjournaled run even if the scratch dir is on ext4 without a journal
  -h, --help          this text
EOF
}

die() { echo "$PROG: $*" >&2; exit 2; }
log() { echo "[$(date +%T)] $*" >&2; }

# ------------------------------------------------------------------ options
PARTS_CSV=import,mount,commit
RUNS=5
MOUNT_RUNS=50
GEN_RUNS=3
SETS_CSV=rootfs
LAYERS_CSV=1,128,500
DATA=${LKBENCH_DATA:-/var/tmp/lkbench/data}
SCRATCH=${LKBENCH_SCRATCH:-/mnt/lkbench}
SCRATCH_GIVEN=0
PEER=${CONTAINERD_PEER:-/var/tmp/lkbench/containerd-peer}
BIN_COPY_DIR=/var/tmp/lkbench
BIN_COPY=1
MOUNT_IMAGE=
IMAGE_SIZE=12G
ALLOW_UNJOURNALED=0
LT=

need_arg() { if [ $# -lt 2 ] || [ -z "$2" ]; then die "option $1 needs a value (see --help)"; fi; }
while [ $# -gt 0 ]; do
  case $1 in
    --parts) need_arg "$@"; PARTS_CSV=$2; shift 2 ;;
    --runs) need_arg "$@"; RUNS=$2; shift 2 ;;
    --mount-runs) need_arg "$@"; MOUNT_RUNS=$2; shift 2 ;;
    --import-runs) need_arg "$@"; GEN_RUNS=$2; shift 2 ;;
    --sets) need_arg "$@"; SETS_CSV=$2; shift 2 ;;
    --layers) need_arg "$@"; LAYERS_CSV=$2; shift 2 ;;
    --data) need_arg "$@"; DATA=$2; shift 2 ;;
    --scratch) need_arg "$@"; SCRATCH=$2; SCRATCH_GIVEN=1; shift 2 ;;
    --mount-image) need_arg "$@"; MOUNT_IMAGE=$2; shift 2 ;;
    --image-size) need_arg "$@"; IMAGE_SIZE=$2; shift 2 ;;
    --containerd-peer) need_arg "$@"; PEER=$2; shift 2 ;;
    --bin-copy-dir) need_arg "$@"; BIN_COPY_DIR=$2; shift 2 ;;
    --no-bin-copy) BIN_COPY=0; shift ;;
    --allow-unjournaled) ALLOW_UNJOURNALED=1; shift ;;
    -h|--help) usage; exit 0 ;;
    --) shift; break ;;
    -*) echo "$PROG: unknown option: $1" >&2; usage >&2; exit 2 ;;
    *) [ -z "$LT" ] || die "more than one LAYERTOOL_BIN given ('$LT', '$1')"; LT=$1; shift ;;
  esac
done
if [ $# -gt 0 ]; then
  if [ -n "$LT" ] || [ $# -ne 1 ]; then die "more than one LAYERTOOL_BIN given"; fi
  LT=$1
fi
[ -n "$LT" ] || { usage >&2; echo >&2; die "missing LAYERTOOL_BIN"; }

# ------------------------------------------------------------------ checks
[[ $RUNS =~ ^[1-9][0-9]*$ ]] || die "--runs wants a number, got '$RUNS'"
[[ $MOUNT_RUNS =~ ^[1-9][0-9]*$ ]] || die "--mount-runs wants a number, got '$MOUNT_RUNS'"
[[ $GEN_RUNS =~ ^[1-9][0-9]*$ ]] || die "--import-runs wants a number, got '$GEN_RUNS'"
IFS=, read -r -a PARTS <<<"$PARTS_CSV"
declare -A PART=()
for p in "${PARTS[@]}"; do
  case $p in import|mount|commit) PART[$p]=1 ;; *) die "bad part '$p' (import, mount, commit)" ;; esac
done
IFS=, read -r -a SETS <<<"$SETS_CSV"
for s in "${SETS[@]}"; do
  [[ $s =~ ^[A-Za-z0-9._-]+$ ]] || die "bad set name '$s'"
  [ -z "${PART[import]:-}" ] || [ -f "$DATA/oci/$s/index.json" ] || die "no OCI layout $DATA/oci/$s"
done
IFS=, read -r -a NLAYERS <<<"$LAYERS_CSV"
for n in "${NLAYERS[@]}"; do
  if ! [[ $n =~ ^[1-9][0-9]*$ ]] || [ "$n" -gt 500 ]; then die "bad layer count '$n' (1-500: overlayfs stacks at most 500)"; fi
done
[ -z "${PART[commit]:-}" ] || { [ -f "$DATA/oci/rootfs/index.json" ] && [ -d "$DATA/trees/rootfs" ]; } \
  || die "the commit part needs $DATA/oci/rootfs and $DATA/trees/rootfs"
for c in tar gzip sha256sum find xargs awk sort cp jq mount umount; do
  command -v "$c" >/dev/null || die "$c is required"
done

LT_ARG=$LT
case $LT in */*) ;; *) LT=$(command -v -- "$LT" || true) ;; esac
if [ -z "$LT" ] || [ ! -f "$LT" ] || [ ! -x "$LT" ]; then die "LAYERTOOL_BIN is not an executable file: $LT_ARG"; fi
LT=$(readlink -f -- "$LT")
LT_ORIG=$LT
LT_BUILT=$(date -u -r "$LT" '+%Y-%m-%d %H:%M UTC')
LT_SHA=$(sha256sum -- "$LT" | cut -c1-12)
if [ "$BIN_COPY" = 1 ]; then
  mkdir -p -- "$BIN_COPY_DIR"
  copy=$(readlink -f -- "$BIN_COPY_DIR")/layertool-$LT_SHA
  if [ "$copy" != "$LT" ]; then
    if [ -f "$copy" ] && [ "$(sha256sum -- "$copy" | cut -c1-12)" = "$LT_SHA" ]; then :
    else cp -p -- "$LT" "$copy.tmp$$" && mv -f -- "$copy.tmp$$" "$copy"; fi
    [ "$(sha256sum -- "$copy" | cut -c1-12)" = "$LT_SHA" ] || die "$LT changed while it was copied; try again"
    LT=$copy
  fi
  log "timing the copy $LT of $LT_ORIG"
fi
[ -n "$MOUNT_IMAGE" ] && [ "$SCRATCH_GIVEN" = 1 ] && die "give either --scratch or --mount-image, not both"

# shellcheck source=Benchmarks/scratch.sh
. "$(dirname -- "$(readlink -f -- "$0")")/scratch.sh"

# Before scratch.sh's cleanup (which removes WORK): unmount whatever is still mounted
# under WORK, deepest first (a container, a peer overlay, a fuse-overlayfs), so that
# nothing is ever deleted through a mount.
umount_under() {
  local dir=$1 m
  [ -n "$dir" ] || return 0
  awk -v d="$dir/" 'index($5, d) == 1 { print $5 }' /proc/self/mountinfo | sort -r | while read -r m; do
    umount -- "$m" 2>/dev/null || umount -l -- "$m" 2>/dev/null || echo "$PROG: could not unmount $m" >&2
  done
}
cleanup_store() {
  local rc=$?
  set +e
  umount_under "$WORK"
  (exit "$rc")
  cleanup
}
trap cleanup_store EXIT

avail=$(( $(df -P -k -- "$SCRATCH" | awk 'NR==2{print $4}') * 1024 ))
[ "$avail" -gt $(( 4 * 1024 * 1024 * 1024 )) ] || die "scratch $SCRATCH has $((avail/1048576)) MiB free; want at least 4 GiB"

WORK=$(mktemp -d "$SCRATCH/lkbench-store.XXXXXX")
ERRLOG=$WORK/stderr.log
OUTF=$WORK/stdout.txt

# ------------------------------------------------------------------ helpers
fmt_s() { awk -v us="$1" 'BEGIN{ s=us/1e6; if (s < 1) printf "%.3f", s; else printf "%.2f", s }'; }
fmt_ms() { awk -v us="$1" 'BEGIN{ ms=us/1e3; if (ms < 10) printf "%.2f", ms; else if (ms < 100) printf "%.1f", ms; else printf "%.0f", ms }'; }
fmt_b() { awk -v b="$1" 'BEGIN{ s=sprintf("%d", b); o=""; while (length(s) > 3) { o="," substr(s, length(s)-2) o; s=substr(s, 1, length(s)-3) } print s o }'; }
ratio() { awk -v a="$1" -v b="$2" 'BEGIN{printf "%.2f", a/b}'; }
median_us() {  # numbers on the command line -> median (integer)
  printf '%s\n' "$@" | sort -n | awk '{a[NR]=$1} END{ if (NR%2) print a[(NR+1)/2]; else printf "%d\n", (a[NR/2]+a[NR/2+1])/2 }'
}
pct_us() {  # P numbers... -> the P-th percentile (nearest rank)
  local p=$1; shift
  printf '%s\n' "$@" | sort -n | awk -v p="$p" '{a[NR]=$1} END{ r=int((p*NR+99)/100); if (r < 1) r=1; print a[r] }'
}
minmax() { printf '%s\n' "$@" | sort -n | awk 'NR==1{mn=$1} {mx=$1} END{print mn, mx}'; }
warm_tree() { find "$1" -type f -print0 | xargs -0r cat -- >/dev/null; }
esc() { local l=$1; echo -n "${l//|/\\|}"; }

# timed CMD...: runs CMD (stdout to $OUTF, stderr to $ERRLOG); sets ELAPSED_US and RC
timed() {
  local t0 t1
  RC=0
  t0=$EPOCHREALTIME
  "$@" >"$OUTF" 2>"$ERRLOG" || RC=$?
  t1=$EPOCHREALTIME
  ELAPSED_US=$(( 10#${t1/./} - 10#${t0/./} ))
}
fail_text() { echo "exit $RC: $(tail -3 "$ERRLOG" | tr '\n' ' ' | cut -c1-400)"; }

declare -A TIMES MED FAIL NOTE SIZE CHK
PROBLEMS=()

# ------------------------------------------------------------------ part 1: import
IMPORT_TOOLS=(lt-import umoci umoci-sync ctrd ctrd-sync)
declare -A ILABEL=(
  [lt-import]='layertool unpack --image … --root STORE (import into the store)'
  [umoci]='umoci unpack'
  [umoci-sync]='umoci unpack + sync -f'
  [ctrd]='containerd apply, unpigz (containerd-peer -verify)'
  [ctrd-sync]='containerd apply + sync -f'
)
declare -A IDIGESTS=(
  [lt-import]='blob + diffID (checked against manifest/config)' [umoci]='blob + diffID (checked against manifest/config)'
  [umoci-sync]='blob + diffID (checked against manifest/config)' [ctrd]='blob + diffID (computed)' [ctrd-sync]='blob + diffID (computed)'
)
import_missing() {
  case $1 in
    umoci*) command -v umoci >/dev/null || echo "not installed" ;;
    ctrd*) [ -x "$PEER" ] || echo "not installed" ;;
  esac
  return 0
}
umoci_unpack_sync() { umoci unpack --image "$1" "$2" && sync -f -- "$2"; }
ctrd_apply_sync() { "$PEER" -verify "$1" "$2" && sync -f -- "$2"; }

# the blob of the (single) layer of DATA/oci/SET
oci_layer_blob() {
  local l=$DATA/oci/$1 m d
  m=$(jq -r '.manifests[0].digest' "$l/index.json")
  d=$(jq -r '.layers[-1].digest' "$l/blobs/sha256/${m#sha256:}")
  echo "$l/blobs/sha256/${d#sha256:}"
}

import_cmd() {  # ID SET DEST -> CMD, DISP
  local id=$1 s=$2 dest=$3
  case $id in
    lt-import)  CMD=("$LT" unpack --image "$DATA/oci/$s:latest" --root "$dest" --json); DISP="layertool unpack --image DATA/oci/SET:latest --root STORE --json" ;;
    umoci)      CMD=(umoci unpack --image "$DATA/oci/$s:latest" "$dest"); DISP="umoci unpack --image DATA/oci/SET:latest BUNDLE" ;;
    umoci-sync) CMD=(umoci_unpack_sync "$DATA/oci/$s:latest" "$dest"); DISP="umoci unpack --image DATA/oci/SET:latest BUNDLE && sync -f BUNDLE" ;;
    ctrd)       CMD=("$PEER" -verify "$(oci_layer_blob "$s")" "$dest"); DISP="containerd-peer -verify DATA/oci/SET/blobs/sha256/LAYER DEST" ;;
    ctrd-sync)  CMD=(ctrd_apply_sync "$(oci_layer_blob "$s")" "$dest"); DISP="containerd-peer -verify DATA/oci/SET/blobs/sha256/LAYER DEST && sync -f DEST" ;;
  esac
}

# entries of the unpacked tree a tool made (round 1): the store's layer dir, umoci's rootfs
tree_entries() {
  local id=$1 dest=$2 d
  case $id in
    lt-import) d=$(find "$dest/layers" -mindepth 2 -maxdepth 2 -name diff | head -1) ;;
    umoci*) d=$dest/rootfs ;;
    *) d=$dest ;;
  esac
  if [ -z "$d" ] || [ ! -d "$d" ]; then echo 0; return; fi
  find "$d" -mindepth 1 | wc -l
}

bench_import() {
  local s id r dest n want
  for s in "${SETS[@]}"; do
    log "[import/$s] reading the OCI layout into the page cache"
    warm_tree "$DATA/oci/$s"
    want=$( (gzip -dc -- "$(oci_layer_blob "$s")" | tar -tf - | grep -v '^\./$' | sed 's,/$,,' | sort -u | wc -l) 2>/dev/null || echo '?')
    NOTE[import,$s,entries]=$want
    for id in "${IMPORT_TOOLS[@]}"; do TIMES[import,$s,$id]=; FAIL[import,$s,$id]=$(import_missing "$id"); done
    for ((r = 1; r <= RUNS; r++)); do
      for id in "${IMPORT_TOOLS[@]}"; do
        [ -z "${FAIL[import,$s,$id]}" ] || continue
        dest=$WORK/import-out        # does not exist: umoci wants that; layertool creates the store
        rm -rf -- "$dest"
        case $id in ctrd*) mkdir -- "$dest" ;; esac
        import_cmd "$id" "$s" "$dest"
        sync
        timed "${CMD[@]}"
        if [ "$RC" != 0 ]; then
          FAIL[import,$s,$id]=$(fail_text); log "[import/$s] round $r ${ILABEL[$id]}: FAILED ($RC)"
        else
          TIMES[import,$s,$id]+=" $ELAPSED_US"
          log "[import/$s] round $r/$RUNS ${ILABEL[$id]}: $(fmt_s "$ELAPSED_US") s"
          if [ "$r" = 1 ]; then
            n=$(tree_entries "$id" "$dest")
            CHK[import,$s,$id]=$n
            [ "$n" = "$want" ] || PROBLEMS+=("import $s / ${ILABEL[$id]}: the unpacked tree has $n entries, the layer $want")
            if [ "$id" = lt-import ]; then
              SIZE[import,$s,store]=$(du -sb -- "$dest" | cut -f1)
              SIZE[import,$s,blobs]=$(du -sb -- "$dest/blobs" 2>/dev/null | cut -f1 || echo 0)
            fi
          fi
        fi
        rm -rf -- "$dest"
      done
    done
    for id in "${IMPORT_TOOLS[@]}"; do
      # shellcheck disable=SC2086
      [ -z "${TIMES[import,$s,$id]}" ] || MED[import,$s,$id]=$(median_us ${TIMES[import,$s,$id]})
    done
  done
}

# ------------------------------------------------------------------ generated N-layer images
# gen_image N LAYOUT: an OCI image layout (tag latest) of N gzip layers; layer i holds
# ./layers/<i>.txt and ./top.txt ("layer <i>"), so the merged tree has N files in layers/
# and top.txt from the top layer. Fixed owner and mtime; digests by sha256sum.
gen_image() {
  local n=$1 l=$2 i src=$WORK/gen-src t=$WORK/gen.tar d g sz diffids='' layers='' cfg cfgd man mand
  mkdir -p -- "$l/blobs/sha256"
  printf '{"imageLayoutVersion":"1.0.0"}' >"$l/oci-layout"
  for ((i = 1; i <= n; i++)); do
    rm -rf -- "$src"; mkdir -p -- "$src/layers"
    echo "layer $i" >"$src/layers/$i.txt"
    echo "layer $i" >"$src/top.txt"
    tar -C "$src" --sort=name --owner=0 --group=0 --numeric-owner --mtime=@1700000000 -cf "$t" .
    d=$(sha256sum <"$t" | cut -d' ' -f1)
    gzip -n -6 -c -- "$t" >"$t.gz"
    g=$(sha256sum <"$t.gz" | cut -d' ' -f1)
    sz=$(stat -c %s -- "$t.gz")
    mv -f -- "$t.gz" "$l/blobs/sha256/$g"
    diffids+="${diffids:+,}\"sha256:$d\""
    layers+="${layers:+,}{\"mediaType\":\"application/vnd.oci.image.layer.v1.tar+gzip\",\"digest\":\"sha256:$g\",\"size\":$sz}"
  done
  rm -rf -- "$src" "$t"
  cfg="{\"created\":\"2023-11-14T22:13:20Z\",\"architecture\":\"amd64\",\"os\":\"linux\",\"config\":{},\"rootfs\":{\"type\":\"layers\",\"diff_ids\":[$diffids]}}"
  cfgd=$(printf '%s' "$cfg" | sha256sum | cut -d' ' -f1)
  printf '%s' "$cfg" >"$l/blobs/sha256/$cfgd"
  man="{\"schemaVersion\":2,\"mediaType\":\"application/vnd.oci.image.manifest.v1+json\",\"config\":{\"mediaType\":\"application/vnd.oci.image.config.v1+json\",\"digest\":\"sha256:$cfgd\",\"size\":${#cfg}},\"layers\":[$layers]}"
  mand=$(printf '%s' "$man" | sha256sum | cut -d' ' -f1)
  printf '%s' "$man" >"$l/blobs/sha256/$mand"
  printf '{"schemaVersion":2,"mediaType":"application/vnd.oci.image.index.v1+json","manifests":[{"mediaType":"application/vnd.oci.image.manifest.v1+json","digest":"sha256:%s","size":%d,"annotations":{"org.opencontainers.image.ref.name":"latest"}}]}' \
    "$mand" "${#man}" >"$l/index.json"
}

# ------------------------------------------------------------------ part 2: mount
MOUNT_TOOLS=(lt lt-mount2 lt-fuse lt-lower kmount fuse)
declare -A MLABEL=(
  [lt]='layertool mount + umount (overlay driver)'
  [lt-mount2]='layertool mount + umount, LAYERKIT_OVERLAY_MOUNT=mount2 (its mount(2) fallback)'
  [lt-fuse]='layertool mount --driver fuse + umount (LayerKit FUSE union)'
  [lt-lower]='layertool mount --lower … + umount (no store)'
  [kmount]='mount -t overlay, l/ short links (mount(2), as overlay2)'
  [fuse]='fuse-overlayfs + umount'
)
# mount_check N TARGET: the merged tree must hold N files in layers/ and the top layer's top.txt
mount_check() {
  local n=$1 t=$2 c top
  c=$(find "$t/layers" -mindepth 1 -maxdepth 1 -name '*.txt' 2>/dev/null | wc -l)
  top=$(cat -- "$t/top.txt" 2>/dev/null || echo '?')
  if [ "$c" = "$n" ] && [ "$top" = "layer $n" ]; then echo "OK ($c files in layers/, top.txt = \"$top\")"
  else echo "⚠ WRONG: $c files in layers/ (want $n), top.txt = \"$top\" (want \"layer $n\")"; fi
}
kmount() {  # ROOT OPTIONS TARGET: mount(8) run from the store root (relative l/ paths)
  local rc=0
  cd -- "$1" || return 1
  mount -t overlay overlay -o "$2" "$3" || rc=$?
  cd -- "$WORK" || true
  return "$rc"
}

bench_mount() {
  local n s l target chain link lower opts fuseopts r id ok
  local -a lowers_abs ltlower
  for n in "${NLAYERS[@]}"; do
    l=$WORK/img-$n; s=$WORK/store-$n; target=$WORK/target
    log "[mount/$n] generating an image of $n layers (untimed)"
    gen_image "$n" "$l"
    sync
    log "[mount/$n] importing it into a fresh store and umoci unpack of it, $GEN_RUNS runs each (interleaved)"
    TIMES[gen,$n,lt]=; TIMES[gen,$n,umoci]=; FAIL[gen,$n,umoci]=
    command -v umoci >/dev/null || FAIL[gen,$n,umoci]="not installed"
    for ((r = 1; r <= GEN_RUNS; r++)); do
      rm -rf -- "$s"; sync
      timed "$LT" unpack --image "$l:latest" --root "$s" --name "img$n" --json
      [ "$RC" = 0 ] || die "import of the $n-layer image failed: $(fail_text)"
      TIMES[gen,$n,lt]+=" $ELAPSED_US"
      cp -- "$OUTF" "$WORK/import-$n.json"
      [ -z "${FAIL[gen,$n,umoci]}" ] || continue
      rm -rf -- "$WORK/umoci-$n"; sync
      timed umoci unpack --image "$l:latest" "$WORK/umoci-$n"
      if [ "$RC" = 0 ]; then TIMES[gen,$n,umoci]+=" $ELAPSED_US"; else FAIL[gen,$n,umoci]=$(fail_text); fi
      rm -rf -- "$WORK/umoci-$n"
    done
    # shellcheck disable=SC2086
    MED[gen,$n,lt]=$(median_us ${TIMES[gen,$n,lt]})
    # shellcheck disable=SC2086
    [ -z "${TIMES[gen,$n,umoci]}" ] || MED[gen,$n,umoci]=$(median_us ${TIMES[gen,$n,umoci]})
    # the lower dirs, top first: l/<short> (relative to the store root) and absolute
    lower=; lowers_abs=()
    while read -r chain; do
      link=$(cat -- "$s/layers/${chain#sha256:}/link")
      lower="l/$link${lower:+:$lower}"
      lowers_abs=("$s/l/$link" "${lowers_abs[@]}")
    done < <(jq -r '.layers[].chainID' "$WORK/import-$n.json")
    opts="lowerdir=$lower,upperdir=peer/upper,workdir=peer/work"
    NOTE[mount,$n,optlen]=${#opts}
    fuseopts="lowerdir=$(IFS=:; echo "${lowers_abs[*]}"),upperdir=$s/peer/upper,workdir=$s/peer/work"
    ltlower=(); for link in "${lowers_abs[@]}"; do ltlower+=(--lower "$link"); done
    mkdir -p -- "$target"
    for id in "${MOUNT_TOOLS[@]}"; do
      TIMES[mount,$n,$id,m]=; TIMES[mount,$n,$id,u]=; TIMES[mount,$n,$id,rm]=; TIMES[mount,$n,$id,sum]=
      FAIL[mount,$n,$id]=
    done
    command -v fuse-overlayfs >/dev/null || FAIL[mount,$n,fuse]="not installed"
    for ((r = 1; r <= MOUNT_RUNS; r++)); do
      for id in "${MOUNT_TOOLS[@]}"; do
        [ -z "${FAIL[mount,$n,$id]}" ] || continue
        case $id in
          lt|lt-mount2|lt-fuse)
            sync
            # exported only around this command (no extra process in the timed part)
            [ "$id" != lt-mount2 ] || export LAYERKIT_OVERLAY_MOUNT=mount2
            if [ "$id" = lt-fuse ]; then timed "$LT" mount --root "$s" --driver fuse --name bench "img$n" "$target"
            else timed "$LT" mount --root "$s" --name bench "img$n" "$target"; fi
            unset LAYERKIT_OVERLAY_MOUNT
            if [ "$RC" != 0 ]; then FAIL[mount,$n,$id]=$(fail_text); "$LT" rm --root "$s" bench >/dev/null 2>&1 || true; continue; fi
            local tm=$ELAPSED_US
            [ "$r" != 1 ] || CHK[mount,$n,$id]="$(mount_check "$n" "$target"); $(grep -E '^driver' "$OUTF" | tr -s ' ')"
            timed "$LT" umount --root "$s" "$target"
            if [ "$RC" != 0 ]; then FAIL[mount,$n,$id]=$(fail_text); umount -- "$target" 2>/dev/null || true; continue; fi
            local tu=$ELAPSED_US
            timed "$LT" rm --root "$s" bench
            [ "$RC" = 0 ] || { FAIL[mount,$n,$id]="rm: $(fail_text)"; continue; }
            TIMES[mount,$n,$id,rm]+=" $ELAPSED_US" ;;
          lt-lower|kmount|fuse)
            rm -rf -- "$s/peer"; mkdir -p -- "$s/peer/upper" "$s/peer/work"
            sync
            case $id in
              kmount) timed kmount "$s" "$opts" "$target" ;;
              fuse) timed fuse-overlayfs -o "$fuseopts" "$target" ;;
              lt-lower) timed "$LT" mount "${ltlower[@]}" --upper "$s/peer/upper" --work "$s/peer/work" "$target" ;;
            esac
            if [ "$RC" != 0 ]; then FAIL[mount,$n,$id]=$(fail_text); continue; fi
            local tm=$ELAPSED_US
            [ "$r" != 1 ] || CHK[mount,$n,$id]=$(mount_check "$n" "$target")
            if [ "$id" = lt-lower ]; then timed "$LT" umount "$target"; else timed umount -- "$target"; fi
            if [ "$RC" != 0 ]; then FAIL[mount,$n,$id]=$(fail_text); umount -l -- "$target" 2>/dev/null || true; continue; fi
            local tu=$ELAPSED_US ;;
        esac
        TIMES[mount,$n,$id,m]+=" $tm"; TIMES[mount,$n,$id,u]+=" $tu"; TIMES[mount,$n,$id,sum]+=" $((tm + tu))"
      done
      (( r % 10 != 0 )) || log "[mount/$n] round $r/$MOUNT_RUNS"
    done
    for id in "${MOUNT_TOOLS[@]}"; do
      [ -z "${FAIL[mount,$n,$id]}" ] || log "[mount/$n] ${MLABEL[$id]}: FAILED: ${FAIL[mount,$n,$id]}"
      for ok in m u rm sum; do
        # shellcheck disable=SC2086
        [ -z "${TIMES[mount,$n,$id,$ok]}" ] || MED[mount,$n,$id,$ok]=$(median_us ${TIMES[mount,$n,$id,$ok]})
      done
      [ -z "${MED[mount,$n,$id,sum]:-}" ] || log "[mount/$n] ${MLABEL[$id]}: median mount+umount $(fmt_ms "${MED[mount,$n,$id,sum]}") ms"
    done
    umount_under "$WORK"
    rm -rf -- "$l" "$s" "$target"
  done
}

# ------------------------------------------------------------------ part 3: commit
# mutate DIR LIST: the 5% change of compare-diff.sh (same rule, same counts). LIST holds the
# tree's regular files ('./path', NUL-separated, sorted), numbered from 1; file i gets the line
# "lkbench change <i>" appended when i % 20 == 0, is deleted when i % 40 == 10, and gets a new
# sibling lkbench-new-<i>.txt (40 lines) when i % 200 == 100; a dir lkbench-new-dir/ with 10
# files is added at the top. Sets MOD DEL ADD.
mutate() {
  local dir=$1 list=$2 i=0 f j
  local -a del=()
  MOD=0; DEL=0; ADD=0
  while IFS= read -r -d '' f; do
    i=$((i + 1))
    if (( i % 20 == 0 )); then printf 'lkbench change %d\n' "$i" >>"$dir/$f"; MOD=$((MOD + 1)); fi
    if (( i % 40 == 10 )); then del+=("$dir/$f"); fi
    if (( i % 200 == 100 )); then
      printf "lkbench new file $i line %02d\n" {1..40} >"$dir/${f%/*}/lkbench-new-$i.txt"; ADD=$((ADD + 1))
    fi
  done <"$list"
  DEL=${#del[@]}
  [ "$DEL" = 0 ] || printf '%s\0' "${del[@]}" | xargs -0r rm -f --
  mkdir -- "$dir/lkbench-new-dir"
  for j in $(seq 1 10); do
    printf "lkbench new dir file $j line %02d\n" {1..40} >"$dir/lkbench-new-dir/f$j.txt"
  done
  ADD=$((ADD + 10))
}

COMMIT_TOOLS=(lt-commit lt-diff ctrd-diff umoci-repack)
declare -A CLABEL=(
  [lt-commit]='layertool commit C NAME (layer + image in the store)'
  [lt-diff]='layertool diff C -o OUT.tar.gz (the layer file only)'
  [ctrd-diff]='containerd WriteDiff + gzip, lower vs mounted container (containerd-peer)'
  [umoci-repack]='umoci repack (bundle with the same change)'
)
declare -A CDIGESTS=(
  [lt-commit]='blob + diffID (into manifest/config)' [lt-diff]='blob + diffID, printed'
  [ctrd-diff]='blob + diffID' [umoci-repack]='blob + diffID (into manifest/config)'
)

umoci_new_layer() {  # LAYOUT -> "SIZE DIGEST" of the last layer of tag new
  local l=$1 m d
  m=$(jq -r '.manifests[] | select(.annotations["org.opencontainers.image.ref.name"]=="new") | .digest' "$l/index.json")
  [ -n "$m" ] || return 1
  d=$(jq -r '.layers[-1].digest' "$l/blobs/sha256/${m#sha256:}")
  echo "$(stat -c %s -- "$l/blobs/sha256/${d#sha256:}") $d"
}

bench_commit() {
  local s=$WORK/store-commit list=$WORK/rootfs-files.list target=$WORK/ctarget lowerdir bundle=$WORK/commit-bundle r id c out sz chain
  log "[commit] importing the rootfs image into a store, umoci bundle + the 5% change (untimed)"
  warm_tree "$DATA/oci/rootfs"
  "$LT" unpack --image "$DATA/oci/rootfs:latest" --root "$s" --name rootfs --json >"$WORK/commit-import.json" 2>"$ERRLOG" \
    || die "import of rootfs failed: $(tail -3 "$ERRLOG")"
  chain=$(jq -r '.layers[-1].chainID' "$WORK/commit-import.json")
  lowerdir=$s/layers/${chain#sha256:}/diff
  ( cd -- "$DATA/trees/rootfs" && find . -type f -print0 | sort -z ) >"$list"
  if command -v umoci >/dev/null; then
    umoci unpack --image "$DATA/oci/rootfs:latest" "$bundle" >"$WORK/umoci-prep.log" 2>&1 || die "umoci unpack failed: $(tail -3 "$WORK/umoci-prep.log")"
    mutate "$bundle/rootfs" "$list"
  else FAIL[commit,umoci-repack]="not installed"; fi
  [ -x "$PEER" ] || FAIL[commit,ctrd-diff]="not installed"
  for id in "${COMMIT_TOOLS[@]}"; do TIMES[commit,$id]=; SIZE[commit,$id]=; FAIL[commit,$id]=${FAIL[commit,$id]:-}; done
  mkdir -p -- "$target"
  for ((r = 1; r <= RUNS; r++)); do
    c=c$r
    "$LT" mount --root "$s" --name "$c" rootfs "$target" >"$OUTF" 2>"$ERRLOG" || die "mount for commit failed: $(tail -3 "$ERRLOG")"
    mutate "$target" "$list"
    CHANGE="$MOD of $(tr -cd '\0' <"$list" | wc -c) files modified, $DEL deleted, $ADD added"
    [ "$r" != 1 ] || log "[commit] 5% change: $CHANGE"
    for id in "${COMMIT_TOOLS[@]}"; do
      [ -z "${FAIL[commit,$id]}" ] || continue
      out=$WORK/commit-out.tar.gz; rm -f -- "$out"
      case $id in
        lt-commit) sync; timed "$LT" commit --root "$s" --json "$c" "committed$r" ;;
        lt-diff)   sync; timed "$LT" diff --root "$s" "$c" -o "$out" ;;
        ctrd-diff) sync; timed "$PEER" -mode=diff -compress=gzip -verify "$lowerdir" "$target"; mv -f -- "$OUTF" "$out" ;;
        umoci-repack)
          rm -rf -- "$WORK/layout-run"; cp -a -- "$DATA/oci/rootfs" "$WORK/layout-run"
          sync; timed umoci repack --image "$WORK/layout-run:new" "$bundle" ;;
      esac
      if [ "$RC" != 0 ]; then FAIL[commit,$id]=$(fail_text); log "[commit] round $r ${CLABEL[$id]}: FAILED"; continue; fi
      case $id in
        lt-commit) sz=$(jq -r '.layer.size' "$OUTF") ;;
        lt-diff|ctrd-diff) sz=$(stat -c %s -- "$out") ;;
        umoci-repack) sz=$(umoci_new_layer "$WORK/layout-run" | cut -d' ' -f1) ;;
      esac
      if [ "$r" = 1 ]; then
        case $id in
          lt-commit) CHK[commit,$id]=$(tar -tzf "$s/blobs/sha256/$(jq -r '.layer.digest' "$OUTF" | sed 's/^sha256://')" | wc -l) ;;
          lt-diff|ctrd-diff) CHK[commit,$id]=$(tar -tzf "$out" | wc -l) ;;
          umoci-repack) CHK[commit,$id]=$(tar -tzf "$WORK/layout-run/blobs/sha256/$(umoci_new_layer "$WORK/layout-run" | cut -d' ' -f2 | sed 's/^sha256://')" | wc -l) ;;
        esac
      fi
      TIMES[commit,$id]+=" $ELAPSED_US"; SIZE[commit,$id]+=" $sz"
      log "[commit] round $r/$RUNS ${CLABEL[$id]}: $(fmt_s "$ELAPSED_US") s, $(fmt_b "$sz") B"
      rm -f -- "$out"
    done
    # untimed: the container and the committed image go, so every round starts alike
    "$LT" umount --root "$s" "$target" >/dev/null 2>"$ERRLOG" || die "umount after commit failed: $(tail -3 "$ERRLOG")"
    "$LT" rm --root "$s" "$c" >/dev/null 2>"$ERRLOG" || die "rm $c failed: $(tail -3 "$ERRLOG")"
    if [ -z "${FAIL[commit,lt-commit]}" ]; then
      "$LT" rm --root "$s" "committed$r" >/dev/null 2>"$ERRLOG" || log "[commit] rm committed$r: $(tail -1 "$ERRLOG")"
    fi
    rm -rf -- "$WORK/layout-run"
  done
  for id in "${COMMIT_TOOLS[@]}"; do
    # shellcheck disable=SC2086
    [ -z "${TIMES[commit,$id]}" ] || MED[commit,$id]=$(median_us ${TIMES[commit,$id]})
  done
  umount_under "$WORK"
  rm -rf -- "$s" "$bundle" "$target" "$list"
}

# ------------------------------------------------------------------ report
raw_row() {  # LABEL TIMES... -> "| label | runs | min | median | max |" in seconds
  local label=$1 t list='' mm; shift
  for t in "$@"; do list+="$(fmt_s "$t") "; done
  mm=$(minmax "$@")
  echo "| $label | ${list% } | $(fmt_s "${mm% *}") | $(fmt_s "$(median_us "$@")") | $(fmt_s "${mm#* }") |"
}

report() {
  local s id n ref sz
  echo "# LayerKit: the layer store (import, mount, commit) vs peers"
  echo
  echo "- date: started $START_DATE, finished $(date -u '+%Y-%m-%d %H:%M:%S UTC')"
  echo "- load average (1/5/15 min): $START_LOAD at the start, $(cut -d' ' -f1-3 /proc/loadavg) at the end"
  echo "- invocation: \`$INVOCATION\`"
  echo "- kernel: \`$(uname -r)\`; $(nproc) cores ($(awk -F': ' '/^model name/{print $2; exit}' /proc/cpuinfo)); $(awk '/^MemTotal/{printf "%.0f GiB", $2/1048576}' /proc/meminfo) RAM"
  if [ "$LT" != "$LT_ORIG" ]; then echo "- layertool: \`$LT\` (sha256 $LT_SHA), a copy of \`$LT_ORIG\` (built $LT_BUILT)"
  else echo "- layertool: \`$LT\` (sha256 $LT_SHA, built $LT_BUILT)"; fi
  echo "- data: \`$DATA\`"
  echo "- scratch: \`$SCRATCH\` on $SCR_SRC ($SCR_FS, mounted at $SCR_TARGET, journal: $SCR_JOURNAL); all in a private mount namespace"
  echo "- timed runs: import and commit $RUNS per tool, mount $MOUNT_RUNS cycles per tool and image; interleaved (each round runs every tool once); \`sync\` (untimed) before each timed command"
  echo

  if [ -n "${PART[import]:-}" ]; then
    echo "## Import of an OCI image"
    echo
    echo "Each run starts on a store / bundle / dir that does not exist yet. Time ratio = tool / layertool."
    echo "**layertool syncs the file system (syncfs) before it records a layer**; umoci and containerd's"
    echo "applier do not, so each peer also runs with a \`sync -f\` (syncfs of the scratch fs) after it."
    echo
    echo -n "| tool | digests |"; for s in "${SETS[@]}"; do echo -n " $s ($RUNS runs) |"; done; echo
    echo -n "|---|---|"; for s in "${SETS[@]}"; do echo -n "---|"; done; echo
    for id in "${IMPORT_TOOLS[@]}"; do
      echo -n "| $(esc "${ILABEL[$id]}") | ${IDIGESTS[$id]} |"
      for s in "${SETS[@]}"; do
        if [ -n "${FAIL[import,$s,$id]:-}" ]; then echo -n " FAILED (${FAIL[import,$s,$id]%%:*}) |"; continue; fi
        [ -n "${MED[import,$s,$id]:-}" ] || { echo -n " – |"; continue; }
        ref=${MED[import,$s,lt-import]:-}
        echo -n " $(fmt_s "${MED[import,$s,$id]}") s"
        [ -z "$ref" ] || echo -n " ($(ratio "${MED[import,$s,$id]}" "$ref")×)"
        echo -n " |"
      done
      echo
    done
    echo
    for s in "${SETS[@]}"; do
      echo -n "- $s: the layer lists ${NOTE[import,$s,entries]} entries; unpacked trees (round 1):"
      for id in "${IMPORT_TOOLS[@]}"; do [ -z "${CHK[import,$s,$id]:-}" ] || echo -n " ${ILABEL[$id]%% (*} ${CHK[import,$s,$id]};"; done
      [ -z "${SIZE[import,$s,store]:-}" ] || echo -n " the store after the import: $(fmt_b "${SIZE[import,$s,store]}") B, of which blobs/ (the blobs kept for export) $(fmt_b "${SIZE[import,$s,blobs]}") B"
      echo
    done
    echo
  fi

  if [ -n "${PART[mount]:-}" ]; then
    echo "## Mount + umount latency"
    echo
    echo "Images of N tiny gzip layers (layer i holds \`layers/<i>.txt\` and \`top.txt\`), imported once into a"
    echo "fresh store per image. Per cycle: mount a writable container/overlay on the image at TARGET, then unmount"
    echo "it. Median of the per-cycle sums (mount + umount), ratio = tool / layertool. layertool's cycle also"
    echo "creates the container (record, upper/work/merged dirs); \`layertool rm\` of it is timed apart. The peers'"
    echo "upper and work dirs are made fresh (untimed) before each cycle."
    echo
    echo -n "| tool |"; for n in "${NLAYERS[@]}"; do echo -n " $n layer$([ "$n" = 1 ] || echo s) |"; done; echo
    echo -n "|---|"; for n in "${NLAYERS[@]}"; do echo -n "---|"; done; echo
    for id in "${MOUNT_TOOLS[@]}"; do
      echo -n "| $(esc "${MLABEL[$id]}") |"
      for n in "${NLAYERS[@]}"; do
        if [ -n "${FAIL[mount,$n,$id]:-}" ]; then echo -n " FAILED (${FAIL[mount,$n,$id]%%:*}) |"; continue; fi
        ref=${MED[mount,$n,lt,sum]:-}
        echo -n " $(fmt_ms "${MED[mount,$n,$id,sum]}") ms"
        [ -z "$ref" ] || echo -n " ($(ratio "${MED[mount,$n,$id,sum]}" "$ref")×)"
        echo -n " |"
      done
      echo
    done
    echo
    echo "Breakdown (medians in ms; p90 in brackets):"
    echo
    echo "| layers | tool | mount | umount | layertool rm | mount data (bytes) |"
    echo "|---|---|---|---|---|---|"
    for n in "${NLAYERS[@]}"; do for id in "${MOUNT_TOOLS[@]}"; do
      if [ -n "${FAIL[mount,$n,$id]:-}" ]; then echo "| $n | $(esc "${MLABEL[$id]}") | FAILED | | | $([ "$id" = kmount ] && echo "${NOTE[mount,$n,optlen]}") |"; continue; fi
      # shellcheck disable=SC2086
      echo "| $n | $(esc "${MLABEL[$id]}") | $(fmt_ms "${MED[mount,$n,$id,m]}") ($(fmt_ms "$(pct_us 90 ${TIMES[mount,$n,$id,m]})")) | $(fmt_ms "${MED[mount,$n,$id,u]}") ($(fmt_ms "$(pct_us 90 ${TIMES[mount,$n,$id,u]})")) | $([ -n "${MED[mount,$n,$id,rm]:-}" ] && echo "$(fmt_ms "${MED[mount,$n,$id,rm]}") ($(fmt_ms "$(pct_us 90 ${TIMES[mount,$n,$id,rm]})"))" || echo –) | $([ "$id" = kmount ] && echo "${NOTE[mount,$n,optlen]}" || echo –) |"
    done; done
    echo
    echo "Checks (first cycle): the merged tree must list N files in \`layers/\` and the top layer's \`top.txt\`."
    echo
    for n in "${NLAYERS[@]}"; do for id in "${MOUNT_TOOLS[@]}"; do
      [ -z "${CHK[mount,$n,$id]:-}" ] || echo "- $n layer(s), ${MLABEL[$id]}: ${CHK[mount,$n,$id]}"
      [ -z "${FAIL[mount,$n,$id]:-}" ] || echo "- $n layer(s), ${MLABEL[$id]}: **FAILED**, ${FAIL[mount,$n,$id]}"
    done; done
    echo
    echo "Import of these images ($GEN_RUNS runs each, interleaved; layertool into a fresh store, umoci into a new bundle; medians):"
    echo
    echo "| layers | layertool unpack --image … --root S | umoci unpack | layertool runs | umoci runs |"
    echo "|---|---|---|---|---|"
    for n in "${NLAYERS[@]}"; do
      echo -n "| $n | $(fmt_s "${MED[gen,$n,lt]:-0}") s (1.00×) | "
      if [ -n "${MED[gen,$n,umoci]:-}" ]; then echo -n "$(fmt_s "${MED[gen,$n,umoci]}") s ($(ratio "${MED[gen,$n,umoci]}" "${MED[gen,$n,lt]}")×) |"
      else echo -n "${FAIL[gen,$n,umoci]:-–} |"; fi
      # shellcheck disable=SC2086
      echo " $(for t in ${TIMES[gen,$n,lt]}; do echo -n "$(fmt_s "$t") "; done)| $(for t in ${TIMES[gen,$n,umoci]:-}; do echo -n "$(fmt_s "$t") "; done)|"
    done
    echo
  fi

  if [ -n "${PART[commit]:-}" ]; then
    echo "## Commit of a 5% change (rootfs, $RUNS runs)"
    echo
    echo "Per round: a new container on the rootfs image is mounted and changed (untimed): ${CHANGE:-?}"
    echo "(the rule of compare-diff.sh). Then, on that container: \`layertool commit\`, \`layertool diff\`"
    echo "of it into a .tar.gz, containerd's WriteDiff of the image's layer dir against the container's mount"
    echo "(what containerd's walking differ does for a commit), and \`umoci repack\` of a bundle (\`umoci unpack\`"
    echo "of the same image, made once) with the same change. Ratio = tool / \`layertool commit\`."
    echo
    echo "| tool | digests | time | layer size (B) | entries |"
    echo "|---|---|---|---|---|"
    for id in "${COMMIT_TOOLS[@]}"; do
      if [ -n "${FAIL[commit,$id]:-}" ]; then echo "| $(esc "${CLABEL[$id]}") | ${CDIGESTS[$id]} | FAILED (${FAIL[commit,$id]%%:*}) | | |"; continue; fi
      # shellcheck disable=SC2086
      sz=$(set -- ${SIZE[commit,$id]}; echo "$1")
      # shellcheck disable=SC2086
      echo "| $(esc "${CLABEL[$id]}") | ${CDIGESTS[$id]} | $(fmt_s "${MED[commit,$id]}") s ($(ratio "${MED[commit,$id]}" "${MED[commit,lt-commit]}")×) | $(fmt_b "$sz")$(mm=$(minmax ${SIZE[commit,$id]}); [ "${mm% *}" = "${mm#* }" ] || echo " (varies $(fmt_b "${mm% *}")–$(fmt_b "${mm#* }"))") | ${CHK[commit,$id]:-} |"
    done
    echo
  fi

  local any=0
  for k in "${!FAIL[@]}"; do [ -z "${FAIL[$k]}" ] || any=1; done
  if [ "$any" = 1 ] || [ ${#PROBLEMS[@]} -gt 0 ]; then
    echo "## Problems"
    echo
    for k in $(printf '%s\n' "${!FAIL[@]}" | sort); do [ -z "${FAIL[$k]}" ] || echo "- $k: ${FAIL[$k]}"; done
    for k in "${PROBLEMS[@]}"; do echo "- $k"; done
    echo
  fi

  echo "## Commands"
  echo
  if [ -n "${PART[import]:-}" ]; then
    for id in "${IMPORT_TOOLS[@]}"; do import_cmd "$id" "${SETS[0]}" X; echo "- import, ${ILABEL[$id]}: \`$DISP\`"; done
  fi
  if [ -n "${PART[mount]:-}" ]; then
    echo "- mount, layertool: \`layertool mount --root S --name bench IMG TARGET\`, \`layertool umount --root S TARGET\`; \`layertool rm --root S bench\`"
    echo "- mount, layertool with its mount(2) fallback: the same commands with \`LAYERKIT_OVERLAY_MOUNT=mount2\` in the environment (short \`l/\` links, relative to the store root)"
    echo "- mount, layertool FUSE union: \`layertool mount --root S --driver fuse --name bench IMG TARGET\`, \`layertool umount --root S TARGET\`; \`layertool rm --root S bench\`"
    echo "- mount, layertool without the store: \`layertool mount --lower S/l/TOP … --lower S/l/BOTTOM --upper S/peer/upper --work S/peer/work TARGET\`; \`layertool umount TARGET\`"
    echo "- mount, mount(2): \`cd S && mount -t overlay overlay -o lowerdir=l/TOP:…:l/BOTTOM,upperdir=peer/upper,workdir=peer/work TARGET\`; \`umount TARGET\`"
    echo "- mount, fuse-overlayfs: \`fuse-overlayfs -o lowerdir=S/l/TOP:…:S/l/BOTTOM,upperdir=S/peer/upper,workdir=S/peer/work TARGET\`; \`umount TARGET\`"
  fi
  if [ -n "${PART[commit]:-}" ]; then
    echo "- commit, layertool: \`layertool mount --root S --name C rootfs TARGET\` + the change (untimed); timed: \`layertool commit --root S --json C NAME\`"
    echo "- commit, layertool diff: \`layertool diff --root S C -o OUT.tar.gz\`"
    echo "- commit, containerd: \`containerd-peer -mode=diff -compress=gzip -verify S/layers/CHAINID/diff TARGET > OUT\`"
    echo "- commit, umoci: \`umoci repack --image LAYOUT:new BUNDLE\` (LAYOUT a fresh \`cp -a\` of DATA/oci/rootfs each run)"
  fi
  echo

  echo "## Raw times (seconds, in run order)"
  echo
  echo "| what | runs | min | median | max |"
  echo "|---|---|---|---|---|"
  if [ -n "${PART[import]:-}" ]; then
    for s in "${SETS[@]}"; do for id in "${IMPORT_TOOLS[@]}"; do
      # shellcheck disable=SC2086
      [ -z "${TIMES[import,$s,$id]:-}" ] || raw_row "import $s: $(esc "${ILABEL[$id]}")" ${TIMES[import,$s,$id]}
    done; done
  fi
  if [ -n "${PART[commit]:-}" ]; then
    for id in "${COMMIT_TOOLS[@]}"; do
      # shellcheck disable=SC2086
      [ -z "${TIMES[commit,$id]:-}" ] || raw_row "commit: $(esc "${CLABEL[$id]}")" ${TIMES[commit,$id]}
    done
  fi
  echo
  if [ -n "${PART[mount]:-}" ]; then
    echo "Mount cycles (ms; mount+umount per cycle): min / p10 / median / p90 / max"
    echo
    echo "| layers | tool | min | p10 | median | p90 | max |"
    echo "|---|---|---|---|---|---|---|"
    for n in "${NLAYERS[@]}"; do for id in "${MOUNT_TOOLS[@]}"; do
      [ -n "${TIMES[mount,$n,$id,sum]:-}" ] || continue
      # shellcheck disable=SC2086
      echo "| $n | $(esc "${MLABEL[$id]}") | $(fmt_ms "$(pct_us 0 ${TIMES[mount,$n,$id,sum]})") | $(fmt_ms "$(pct_us 10 ${TIMES[mount,$n,$id,sum]})") | $(fmt_ms "${MED[mount,$n,$id,sum]}") | $(fmt_ms "$(pct_us 90 ${TIMES[mount,$n,$id,sum]})") | $(fmt_ms "$(pct_us 100 ${TIMES[mount,$n,$id,sum]})") |"
    done; done
    echo
  fi

  echo "## Tool versions"
  echo
  command -v umoci >/dev/null && echo "- $(umoci --version | head -1)"
  command -v fuse-overlayfs >/dev/null && echo "- fuse-overlayfs $(dpkg-query -W -f='${Version}' fuse-overlayfs 2>/dev/null || echo '?'); $(fusermount3 --version 2>&1 | head -1)"
  echo "- $(mount --version | head -1)"
  [ -x "$PEER" ] && echo "- containerd-peer: \`$PEER\` (containerd archive package from Debian golang-github-containerd-containerd-dev $(dpkg-query -W -f='${Version}' golang-github-containerd-containerd-dev 2>/dev/null || echo '?'))"
  echo "- $(tar --version | head -1); $(gzip --version | head -1)"
  echo
}

[ -z "${PART[import]:-}" ] || bench_import
[ -z "${PART[mount]:-}" ] || bench_mount
[ -z "${PART[commit]:-}" ] || bench_commit
report
