#!/usr/bin/env bash
# compare-union.sh — the userspace union (`layertool fuse-serve`) side by side with kernel
# overlayfs and fuse-overlayfs, on the same layers in one run.
#
# Run with --help for the options.
set -euo pipefail
export LC_ALL=C          # '.' as decimal point in $EPOCHREALTIME, printf and sort

PROG=$(basename "$0")
INVOCATION="$0 $*"

usage() {
  cat <<EOF
Usage: $PROG [options] LAYERTOOL_BIN

Mounts the same lower layers with kernel overlayfs, fuse-overlayfs and
'LAYERTOOL_BIN fuse-serve', each on a fresh upper/work dir on the scratch file
system, and times: a sequential read of a 1 GiB file, readdir and stat of a
100,000-file tree, copy-up of 4 KiB files (per file) and of a 100 MiB file, and
an untar of the Debian-rootfs-like layer into the mount. Each timed run gets a
fresh mount (cold dentry/attribute caches in the driver; the lower files are in
the page cache: what is timed is the driver, not the disk). Runs are
interleaved (driver A run 1, driver B run 1, ...). Everything runs in a private
mount namespace: no mount outlives the script. Prints a markdown report on
stdout (progress on stderr), e.g.
  $PROG --runs 3 .build/release/layertool > union-results.md

Options:
  --runs N            timed runs per driver and row (default 3)
  --data DIR          data sets (trees/, layers/) (default \$LKBENCH_DATA or
                      /var/tmp/lkbench/data)
  --scratch DIR       where layers, uppers and mounts live; must be a JOURNALED
                      file system (default \$LKBENCH_SCRATCH or /mnt/lkbench)
  --mount-image IMG   instead of --scratch: loop-mount IMG (created as a journaled
                      ext4 of --image-size if missing) for the duration of the script
  --image-size SIZE   size for a new --mount-image (default 16G; sparse)
  --allow-unjournaled run even if the scratch dir is on ext4 without a journal
  -h, --help          this text
EOF
}

die() { echo "$PROG: $*" >&2; exit 2; }
log() { echo "[$(date +%T)] $*" >&2; }

RUNS=3
DATA=${LKBENCH_DATA:-/var/tmp/lkbench/data}
SCRATCH=${LKBENCH_SCRATCH:-/mnt/lkbench}
MOUNT_IMAGE=
IMAGE_SIZE=16G
ALLOW_UNJOURNALED=0
LT=
need_arg() { [ $# -ge 2 ] && [ -n "$2" ] || die "option $1 needs a value (see --help)"; }
ARGS=("$@")
while [ $# -gt 0 ]; do
  case $1 in
    --runs) need_arg "$@"; RUNS=$2; shift 2 ;;
    --data) need_arg "$@"; DATA=$2; shift 2 ;;
    --scratch) need_arg "$@"; SCRATCH=$2; shift 2 ;;
    --mount-image) need_arg "$@"; MOUNT_IMAGE=$2; shift 2 ;;
    --image-size) need_arg "$@"; IMAGE_SIZE=$2; shift 2 ;;
    --allow-unjournaled) ALLOW_UNJOURNALED=1; shift ;;
    -h|--help) usage; exit 0 ;;
    -*) die "unknown option $1 (see --help)" ;;
    *) [ -z "$LT" ] || die "one LAYERTOOL_BIN only"; LT=$1; shift ;;
  esac
done
[ -n "$LT" ] || { usage >&2; exit 2; }
[ "$(id -u)" = 0 ] || die "needs root (mounts)"
[[ $RUNS =~ ^[1-9][0-9]*$ ]] || die "--runs wants a positive number"
LT=$(readlink -f -- "$LT"); [ -x "$LT" ] || die "$LT is not executable"
command -v fuse-overlayfs >/dev/null || die "fuse-overlayfs is not installed (apt-get install fuse-overlayfs)"
grep -qw overlay /proc/filesystems || modprobe overlay 2>/dev/null || true
grep -qw overlay /proc/filesystems || die "no kernel overlayfs"
[ -e /dev/fuse ] || die "no /dev/fuse"
ROOTFS_TAR=$DATA/layers/rootfs.tar
[ -f "$ROOTFS_TAR" ] || die "no $ROOTFS_TAR (see Benchmarks/README.md for the data sets)"

# Everything below runs in a private mount namespace: the mounts vanish with it.
if [ -z "${LKBENCH_UNION_NS:-}" ]; then
  exec unshare -m --propagation private env LKBENCH_UNION_NS=1 "$0" "${ARGS[@]}"
fi

. "$(dirname -- "$(readlink -f -- "$0")")/scratch.sh"

DPID=
M=
# Unmount the driver first if a run was interrupted, then scratch.sh's cleanup.
trap 'rc=$?; set +e; [ -n "$M" ] && umount -l "$M" 2>/dev/null; [ -n "$DPID" ] && kill "$DPID" 2>/dev/null; (exit $rc); cleanup' EXIT
WORK=$(mktemp -d "$SCRATCH/lkbench-union.XXXXXX")
LOWER=$WORK/lower
M=$WORK/merged
mkdir -p "$LOWER" "$M"

# ------------------------------------------------------------------ the lower layer (once)
log "building the lower layer in $LOWER"
head -c $((1 << 30)) /dev/urandom > "$LOWER/big1g"
head -c $((100 << 20)) /dev/urandom > "$LOWER/big100m"
mkdir "$LOWER/small"
perl -e 'for my $i (0..999) { open(my $f, ">", "$ARGV[0]/small/f$i") or die; print $f "x" x 4096; close $f }' "$LOWER"
perl -e '
  my $root = "$ARGV[0]/tree";
  mkdir $root or die;
  for my $d (0..99) {
    mkdir "$root/d$d" or die;
    for my $i (0..999) { open(my $f, ">", "$root/d$d/f$i") or die; print $f "$d/$i\n"; close $f }
  }' "$LOWER"
sync

# ------------------------------------------------------------------ drivers
DRIVERS=(kernel fuse-overlayfs union)
declare -A LABEL=(
  [kernel]='kernel overlayfs'
  [fuse-overlayfs]="fuse-overlayfs $(fuse-overlayfs --version 2>/dev/null | sed -n 's/^fuse-overlayfs: version //p')"
  [union]='layertool fuse-serve'
)
mount_driver() {  # DRIVER: fresh upper/work, mounted on $M
  local d=$1
  rm -rf -- "$WORK/upper" "$WORK/work"
  mkdir "$WORK/upper" "$WORK/work"
  case $d in
    kernel) mount -t overlay overlay -o "lowerdir=$LOWER,upperdir=$WORK/upper,workdir=$WORK/work,redirect_dir=off,metacopy=off,index=off" "$M" ;;
    fuse-overlayfs) fuse-overlayfs -o "lowerdir=$LOWER,upperdir=$WORK/upper,workdir=$WORK/work" "$M" ;;
    union)
      rm -f -- "$WORK/ready"; mkfifo "$WORK/ready"
      "$LT" fuse-serve --lower "$LOWER" --upper "$WORK/upper" --work "$WORK/work" --ready-fd 3 "$M" 3>"$WORK/ready" &
      DPID=$!
      local line; read -r line < "$WORK/ready"
      [ "$line" = ready ] || die "fuse-serve: $line" ;;
  esac
}
unmount_driver() {
  umount "$M"
  if [ -n "$DPID" ]; then wait "$DPID" || die "fuse-serve exited $?"; DPID=; fi
  # fuse-overlayfs exits by itself on unmount; give it a moment to go.
  local n=0; while pgrep -f "fuse-overlayfs .*$M\$" >/dev/null && [ $n -lt 50 ]; do sleep 0.1; n=$((n+1)); done
}

# ------------------------------------------------------------------ rows
ROWS=(seqread readdir stat copyup4k copyup100m untar)
declare -A ROWLABEL=(
  [seqread]='sequential read, 1 GiB file (cat)'
  [readdir]='readdir of 100,000 files (find)'
  [stat]='readdir + stat of 100,000 files (find -printf %s)'
  [copyup4k]='copy-up of a 4 KiB file (append; per file, 1,000 files)'
  [copyup100m]='copy-up of a 100 MiB file (append)'
  [untar]='untar of the rootfs layer into the mount (tar -xf)'
)
# run_row ROW: prints microseconds (per file for copyup4k)
run_row() {
  local t0 t1
  case $1 in
    seqread) t0=$EPOCHREALTIME; cat "$M/big1g" > /dev/null; t1=$EPOCHREALTIME ;;
    readdir) t0=$EPOCHREALTIME; find "$M/tree" > /dev/null; t1=$EPOCHREALTIME ;;
    stat) t0=$EPOCHREALTIME; find "$M/tree" -printf '%s\n' > /dev/null; t1=$EPOCHREALTIME ;;
    copyup4k)
      t0=$EPOCHREALTIME
      for i in $(seq 0 999); do echo y >> "$M/small/f$i"; done
      t1=$EPOCHREALTIME
      echo $(( (${t1/./} - ${t0/./}) / 1000 )); return ;;
    copyup100m) t0=$EPOCHREALTIME; echo y >> "$M/big100m"; t1=$EPOCHREALTIME ;;
    untar) t0=$EPOCHREALTIME; tar -xf "$ROOTFS_TAR" -C "$M"; t1=$EPOCHREALTIME ;;
  esac
  echo $(( ${t1/./} - ${t0/./} ))
}
median_us() { printf '%s\n' "$@" | sort -n | awk '{a[NR]=$1} END {print (NR%2 ? a[(NR+1)/2] : int((a[NR/2]+a[NR/2+1])/2))}'; }
fmt() { awk -v us="$1" 'BEGIN { if (us >= 1000000) printf "%.2f s", us/1e6; else if (us >= 1000) printf "%.1f ms", us/1e3; else printf "%d µs", us }'; }

declare -A TIMES
cat "$LOWER/big1g" "$LOWER/big100m" "$ROOTFS_TAR" > /dev/null   # into the page cache, untimed
find "$LOWER/tree" > /dev/null
for row in "${ROWS[@]}"; do
  for run in $(seq 1 "$RUNS"); do
    for d in "${DRIVERS[@]}"; do
      mount_driver "$d"
      sync
      us=$(run_row "$row")
      unmount_driver
      TIMES[$row,$d]="${TIMES[$row,$d]:-} $us"
      log "$row run $run ${LABEL[$d]}: $(fmt "$us")"
    done
  done
done

# ------------------------------------------------------------------ report
echo "## Userspace union vs fuse-overlayfs vs kernel overlayfs"
echo
echo "Command: \`$INVOCATION\`  "
echo "Machine: $(nproc) cores, $(uname -r); scratch: $SCR_FS on $SCR_SRC (journal: $SCR_JOURNAL); $RUNS runs, medians."
echo
echo "| row | ${LABEL[kernel]} | ${LABEL[fuse-overlayfs]} | ${LABEL[union]} | union / fuse-overlayfs |"
echo "|---|---:|---:|---:|---:|"
for row in "${ROWS[@]}"; do
  k=$(median_us ${TIMES[$row,kernel]}); f=$(median_us ${TIMES[$row,fuse-overlayfs]}); u=$(median_us ${TIMES[$row,union]})
  ratio=$(awk -v u="$u" -v f="$f" 'BEGIN { printf "%.2fx", (f > 0 ? u / f : 0) }')
  echo "| ${ROWLABEL[$row]} | $(fmt "$k") | $(fmt "$f") | $(fmt "$u") | $ratio |"
done
echo
echo "Lower: one layer on the scratch fs (1 GiB and 100 MiB random files, 1,000 x 4 KiB files, 100 dirs x 1,000 small files); \
the untar row extracts \`$(basename "$ROOTFS_TAR")\` ($(du -h "$ROOTFS_TAR" | cut -f1)) with GNU tar. Each run mounts afresh on an empty \
upper; kernel overlayfs with redirect_dir=off,metacopy=off,index=off; fuse-overlayfs and the union with their defaults. \
Times from bash's \`\$EPOCHREALTIME\` around the command; below 1.00x the union is faster."
