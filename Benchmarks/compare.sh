#!/usr/bin/env bash
# compare.sh — time `layertool unpack` against the extractors users would otherwise
# pick (GNU tar, tar -I igzip, bsdtar, umoci, containerd's applier) on the same layers.
#
# See Benchmarks/README.md for how to build the data sets and the scratch file system.
# Run with --help for the options.
set -euo pipefail
export LC_ALL=C          # '.' as decimal point in $EPOCHREALTIME, printf and sort

PROG=$(basename "$0")
INVOCATION="$0 $*"
START_DATE=$(date -u '+%Y-%m-%d %H:%M:%S UTC')
START_LOAD=$(cut -d' ' -f1-3 /proc/loadavg)

usage() {
  cat <<EOF
Usage: $PROG [options] LAYERTOOL_BIN

Times 'LAYERTOOL_BIN unpack LAYER DEST' against GNU tar, tar -I igzip, bsdtar,
umoci and containerd (containerd-peer) on the same .tar.gz (and .tar.zst for
layertool and GNU tar --zstd). Every timed run starts on an empty output dir on
the scratch file system, after an untimed 'sync'; the output is deleted after
the run (untimed). Runs are interleaved (tool A run 1, tool B run 1, ...).
Prints a markdown report on stdout (progress goes to stderr), e.g.
  $PROG --runs 5,few-large=3 .build/release/layertool > results.md

Options:
  --runs SPEC         timed runs per tool: N, or per set: 'rootfs=5,few-large=3',
                      or both: '5,few-large=3' (default 5)
  --sets LIST         comma-separated data sets (default rootfs,many-small,few-large)
  --data DIR          data made by shared/bench/make-fixtures.sh, holding layers/ and
                      oci/ (default \$LKBENCH_DATA or /var/tmp/lkbench/data)
  --scratch DIR       where outputs are written; must be a JOURNALED file system
                      (default \$LKBENCH_SCRATCH or /mnt/lkbench)
  --mount-image IMG   instead of --scratch: loop-mount IMG (created as a journaled
                      ext4 of --image-size if missing) on a temporary mount point for
                      the duration of the script; always unmounted on exit
  --image-size SIZE   size for a new --mount-image (default 40G; sparse)
  --containerd-peer P containerd-peer binary (default \$CONTAINERD_PEER or
                      /var/tmp/lkbench/containerd-peer; its row says "not installed"
                      when missing)
  --warmup N          untimed runs of each tool per set before the timed ones (default 0;
                      the layer files are always read once into the page cache)
  --verify-equal      do not time anything: run each tool once per set and compare
                      its tree with GNU tar's (diff -r --no-dereference, plus sorted
                      'stat -c "%n %f %u %g %s %Y %h"' of both trees), and check that
                      layertool prints the blob digest and the diffID. Exit status 1
                      when layertool's tree or digests differ.
  --allow-unjournaled run even if the scratch dir is on ext4 without a journal
                      (results are then dominated by ext4's inode-reuse walk)
  -h, --help          this text
EOF
}

die() { echo "$PROG: $*" >&2; exit 2; }
log() { echo "[$(date +%T)] $*" >&2; }

# ------------------------------------------------------------------ options
RUNS_SPEC=5
SETS_CSV=rootfs,many-small,few-large
DATA=${LKBENCH_DATA:-/var/tmp/lkbench/data}
SCRATCH=${LKBENCH_SCRATCH:-/mnt/lkbench}
SCRATCH_GIVEN=0
PEER=${CONTAINERD_PEER:-/var/tmp/lkbench/containerd-peer}
WARMUP=0
VERIFY=0
MOUNT_IMAGE=
IMAGE_SIZE=40G
ALLOW_UNJOURNALED=0
LT=

need_arg() { [ $# -ge 2 ] && [ -n "$2" ] || die "option $1 needs a value (see --help)"; }
while [ $# -gt 0 ]; do
  case $1 in
    --runs) need_arg "$@"; RUNS_SPEC=$2; shift 2 ;;
    --runs=*) RUNS_SPEC=${1#*=}; shift ;;
    --sets) need_arg "$@"; SETS_CSV=$2; shift 2 ;;
    --sets=*) SETS_CSV=${1#*=}; shift ;;
    --data) need_arg "$@"; DATA=$2; shift 2 ;;
    --data=*) DATA=${1#*=}; shift ;;
    --scratch) need_arg "$@"; SCRATCH=$2; SCRATCH_GIVEN=1; shift 2 ;;
    --scratch=*) SCRATCH=${1#*=}; SCRATCH_GIVEN=1; shift ;;
    --mount-image) need_arg "$@"; MOUNT_IMAGE=$2; shift 2 ;;
    --mount-image=*) MOUNT_IMAGE=${1#*=}; shift ;;
    --image-size) need_arg "$@"; IMAGE_SIZE=$2; shift 2 ;;
    --image-size=*) IMAGE_SIZE=${1#*=}; shift ;;
    --containerd-peer) need_arg "$@"; PEER=$2; shift 2 ;;
    --containerd-peer=*) PEER=${1#*=}; shift ;;
    --warmup) need_arg "$@"; WARMUP=$2; shift 2 ;;
    --warmup=*) WARMUP=${1#*=}; shift ;;
    --verify-equal) VERIFY=1; shift ;;
    --allow-unjournaled) ALLOW_UNJOURNALED=1; shift ;;
    -h|--help) usage; exit 0 ;;
    --) shift; break ;;
    -*) echo "$PROG: unknown option: $1" >&2; usage >&2; exit 2 ;;
    *) [ -z "$LT" ] || die "more than one LAYERTOOL_BIN given ('$LT', '$1')"; LT=$1; shift ;;
  esac
done
if [ $# -gt 0 ]; then
  [ -z "$LT" ] && [ $# -eq 1 ] || die "more than one LAYERTOOL_BIN given"
  LT=$1
fi
[ -n "$LT" ] || { usage >&2; echo >&2; die "missing LAYERTOOL_BIN"; }

# ------------------------------------------------------------------ checks
LT_ARG=$LT
case $LT in */*) ;; *) LT=$(command -v -- "$LT" || true) ;; esac
[ -n "$LT" ] && [ -f "$LT" ] && [ -x "$LT" ] || die "LAYERTOOL_BIN is not an executable file: $LT_ARG"
LT=$(readlink -f -- "$LT")

[[ $WARMUP =~ ^[0-9]+$ ]] || die "--warmup wants a number, got '$WARMUP'"
[ -n "$MOUNT_IMAGE" ] && [ "$SCRATCH_GIVEN" = 1 ] && die "give either --scratch or --mount-image, not both"

IFS=, read -r -a SETS <<<"$SETS_CSV"
[ ${#SETS[@]} -gt 0 ] || die "--sets is empty"
for s in "${SETS[@]}"; do [[ $s =~ ^[A-Za-z0-9._-]+$ ]] || die "bad set name '$s'"; done

declare -A RUNS
DEFAULT_RUNS=
IFS=, read -r -a _items <<<"$RUNS_SPEC"
for it in "${_items[@]}"; do
  if [[ $it =~ ^[1-9][0-9]*$ ]]; then DEFAULT_RUNS=$it
  elif [[ $it =~ ^([A-Za-z0-9._-]+)=([1-9][0-9]*)$ ]]; then RUNS[${BASH_REMATCH[1]}]=${BASH_REMATCH[2]}
  else die "bad --runs '$RUNS_SPEC' (want N, SET=N or a comma-separated mix)"; fi
done
DEFAULT_RUNS=${DEFAULT_RUNS:-5}
for s in "${SETS[@]}"; do RUNS[$s]=${RUNS[$s]:-$DEFAULT_RUNS}; done
for k in "${!RUNS[@]}"; do
  found=0; for s in "${SETS[@]}"; do [ "$s" = "$k" ] && found=1; done
  [ $found = 1 ] || die "--runs names set '$k', which is not in --sets"
done

[ -d "$DATA/layers" ] || die "no data: $DATA/layers is missing (build it with shared/bench/make-fixtures.sh; see Benchmarks/README.md)"
DATA=$(readlink -f -- "$DATA")
for s in "${SETS[@]}"; do
  [ -f "$DATA/layers/$s.tar.gz" ] || die "missing layer $DATA/layers/$s.tar.gz"
done
command -v tar >/dev/null || die "GNU tar is required (it is the reference)"
tar --version 2>/dev/null | head -1 | grep -q 'GNU tar' || die "'tar' is not GNU tar"
command -v gzip >/dev/null || die "gzip is required by tar -xzf"

[ "$(id -u)" = 0 ] || log "warning: not root: tar/bsdtar will not restore owners, umoci needs root (or fails), device nodes fail"

. "$(dirname -- "$(readlink -f -- "$0")")/scratch.sh"

# free space: two trees of the largest set at once (verify mode), plus margin
max_tar=0
for s in "${SETS[@]}"; do
  if [ -f "$DATA/layers/$s.tar" ]; then sz=$(stat -c %s -- "$DATA/layers/$s.tar"); else sz=$(( $(stat -c %s -- "$DATA/layers/$s.tar.gz") * 4 )); fi
  [ "$sz" -gt "$max_tar" ] && max_tar=$sz
done
avail=$(( $(df -P -k -- "$SCRATCH" | awk 'NR==2{print $4}') * 1024 ))
if [ "$avail" -lt $(( max_tar * 3 )) ]; then
  die "scratch $SCRATCH has $((avail/1048576)) MiB free; need about $((max_tar*3/1048576)) MiB"
fi

WORK=$(mktemp -d "$SCRATCH/lkbench-compare.XXXXXX")

# ------------------------------------------------------------------ tools
# Row order of the report; each id has a label, an availability check and a command.
TOOLS=(layertool-gz layertool-zst tar-gz tar-zst tar-igzip bsdtar umoci containerd)
declare -A LABEL=(
  [layertool-gz]='layertool unpack (.tar.gz)'
  [layertool-zst]='layertool unpack (.tar.zst)'
  [tar-gz]='GNU tar -xzf'
  [tar-zst]='GNU tar --zstd -xf (.tar.zst)'
  [tar-igzip]='GNU tar -I igzip -xf'
  [bsdtar]='bsdtar -xf'
  [umoci]='umoci unpack'
  [containerd]='containerd apply (containerd-peer -verify)'
)
declare -A DIGESTS=(
  [layertool-gz]='blob + diffID'
  [layertool-zst]='blob + diffID'
  [tar-gz]='none'
  [tar-zst]='none'
  [tar-igzip]='none'
  [bsdtar]='none'
  [umoci]='blob + diffID (checked against manifest/config)'
  [containerd]='blob + diffID'
)
# the layertool row each tool's ratio refers to (same compression)
declare -A REF=(
  [layertool-gz]=layertool-gz [tar-gz]=layertool-gz [tar-igzip]=layertool-gz
  [bsdtar]=layertool-gz [umoci]=layertool-gz [containerd]=layertool-gz
  [layertool-zst]=layertool-zst [tar-zst]=layertool-zst
)
if command -v unpigz >/dev/null && [ -z "${CONTAINERD_DISABLE_PIGZ:-}" ]; then
  LABEL[containerd]='containerd apply, unpigz (containerd-peer -verify)'
else
  LABEL[containerd]='containerd apply, Go gzip (containerd-peer -verify)'
fi

# tool_missing ID SET: prints why the tool can't run on SET (nothing if it can)
tool_missing() {
  local id=$1 s=$2
  case $id in
    layertool-zst|tar-zst) [ -f "$DATA/layers/$s.tar.zst" ] || { echo "no $s.tar.zst"; return; } ;;
  esac
  case $id in
    tar-zst)    command -v zstd >/dev/null || echo "not installed (zstd)" ;;
    tar-igzip)  command -v igzip >/dev/null || echo "not installed (igzip)" ;;
    bsdtar)     command -v bsdtar >/dev/null || echo "not installed" ;;
    umoci)      if ! command -v umoci >/dev/null; then echo "not installed"
                elif [ ! -f "$DATA/oci/$s/index.json" ]; then echo "no OCI layout oci/$s"; fi ;;
    containerd) [ -x "$PEER" ] || echo "not installed" ;;
  esac
}

# tool_cmd ID SET DEST: sets CMD (array) and OUTTREE (where the tree lands)
tool_cmd() {
  local id=$1 s=$2 d=$3 L=$DATA/layers/$2
  OUTTREE=$d
  case $id in
    layertool-gz)  CMD=("$LT" unpack "$L.tar.gz" "$d") ;;
    layertool-zst) CMD=("$LT" unpack "$L.tar.zst" "$d") ;;
    tar-gz)        CMD=(tar -xzf "$L.tar.gz" -C "$d") ;;
    tar-zst)       CMD=(tar --zstd -xf "$L.tar.zst" -C "$d") ;;
    tar-igzip)     CMD=(tar -I igzip -xf "$L.tar.gz" -C "$d") ;;
    bsdtar)        CMD=(bsdtar -xf "$L.tar.gz" -C "$d") ;;
    umoci)         CMD=(umoci unpack --image "$DATA/oci/$s:latest" "$d"); OUTTREE=$d/rootfs ;;
    containerd)    CMD=("$PEER" -verify "$L.tar.gz" "$d") ;;
    *) die "internal: unknown tool $id" ;;
  esac
}

# prepare ID DEST: an empty DEST (umoci: DEST must not exist)
prepare() {
  rm -rf -- "$2"
  [ "$1" = umoci ] || mkdir -- "$2"
}

# run_tool ID SET DEST STDOUT: one untimed-prep, timed run. Sets ELAPSED_US, RC.
ERRLOG=$WORK/stderr.log
run_tool() {
  local id=$1 s=$2 d=$3 out=$4 t0 t1
  prepare "$id" "$d"
  tool_cmd "$id" "$s" "$d"
  sync
  RC=0
  t0=$EPOCHREALTIME
  "${CMD[@]}" >"$out" 2>"$ERRLOG" || RC=$?
  t1=$EPOCHREALTIME
  ELAPSED_US=$(( 10#${t1/./} - 10#${t0/./} ))
}

fmt_s() { awk -v us="$1" 'BEGIN{ s=us/1e6; if (s < 1) printf "%.3f", s; else printf "%.2f", s }'; }

median_us() {  # numbers on the command line -> median (integer microseconds)
  printf '%s\n' "$@" | sort -n | awk '{a[NR]=$1} END{ if (NR%2) print a[(NR+1)/2]; else printf "%d\n", (a[NR/2]+a[NR/2+1])/2 }'
}

expected_entries() {  # entries in the layer as 'find . | wc -l' would count them
  local s=$1
  if [ -f "$DATA/layers/$s.tar" ]; then tar -tf "$DATA/layers/$s.tar" | wc -l
  else tar -tzf "$DATA/layers/$s.tar.gz" | wc -l; fi
}

layer_sha() {  # sha256 of a layer file, from stats/layers.txt when it is there
  local f=$1 h=
  if [ -f "$DATA/stats/layers.txt" ]; then
    h=$(awk -v n="$(basename -- "$f")" '$1==n{print $3}' "$DATA/stats/layers.txt")
  fi
  [ -n "$h" ] || h=$(sha256sum -- "$f" | cut -d' ' -f1)
  echo "$h"
}

warm_cache() {
  local s=$1 f
  for f in "$DATA/layers/$s.tar.gz" "$DATA/layers/$s.tar.zst"; do
    [ -f "$f" ] && cat -- "$f" >/dev/null
  done
  return 0
}

# ------------------------------------------------------------------ report header
print_header() {
  local title=$1 s
  echo "# $title"
  echo
  echo "- date: started $START_DATE, finished $(date -u '+%Y-%m-%d %H:%M:%S UTC')"
  echo "- load average (1/5/15 min): $START_LOAD at the start, $(cut -d' ' -f1-3 /proc/loadavg) at the end"
  echo "- invocation: \`$INVOCATION\`"
  echo "- kernel: \`$(uname -r)\`; $(nproc) cores ($(awk -F': ' '/^model name/{print $2; exit}' /proc/cpuinfo)); $(awk '/^MemTotal/{printf "%.0f GiB", $2/1048576}' /proc/meminfo) RAM"
  echo "- layertool: \`$LT\` (sha256 $(sha256sum -- "$LT" | cut -c1-12), $(date -u -r "$LT" '+built %Y-%m-%d %H:%M UTC'))"
  echo "- data: \`$DATA\`"
  echo "- scratch: \`$SCRATCH\` on $SCR_SRC ($SCR_FS, mounted at $SCR_TARGET, journal: $SCR_JOURNAL)"
  if [ "$VERIFY" = 0 ]; then
    echo -n "- timed runs per tool:"
    for s in "${SETS[@]}"; do echo -n " $s ${RUNS[$s]};"; done
    echo " untimed warm-up runs per tool: $WARMUP; order interleaved (each round runs every tool once)"
  fi
  echo "- data sets:"
  for s in "${SETS[@]}"; do
    echo -n "  - $s:"
    for ext in tar tar.gz tar.zst; do
      [ -f "$DATA/layers/$s.$ext" ] && echo -n " .$ext $(awk -v b="$(stat -c %s -- "$DATA/layers/$s.$ext")" 'BEGIN{printf "%.1f MB", b/1e6}');"
    done
    [ -f "$DATA/stats/$s.txt" ] && echo -n " $(awk '/^regular_files/{f=$2} /^directories/{d=$2} /^symlinks/{l=$2} END{printf "%d files, %d dirs, %d symlinks", f, d, l}' "$DATA/stats/$s.txt")"
    echo
  done
  echo
}

print_versions() {
  echo "## Tool versions"
  echo
  echo "- $(tar --version | head -1); $(gzip --version | head -1)"
  command -v zstd >/dev/null && echo "- $(zstd --version | head -1)"
  command -v igzip >/dev/null && echo "- $(igzip --version 2>&1 | head -1)"
  command -v bsdtar >/dev/null && echo "- $(bsdtar --version | head -1)"
  command -v umoci >/dev/null && echo "- $(umoci --version | head -1)"
  if [ -x "$PEER" ]; then
    echo "- containerd-peer: \`$PEER\` (containerd archive package from Debian golang-github-containerd-containerd-dev $(dpkg-query -W -f='${Version}' golang-github-containerd-containerd-dev 2>/dev/null || echo '?'); gzip via $(command -v unpigz >/dev/null && [ -z "${CONTAINERD_DISABLE_PIGZ:-}" ] && echo "$(unpigz --version 2>&1 | head -1)" || echo "Go compress/gzip"))"
  fi
  echo
}

print_commands() {
  local id
  echo "## Commands"
  echo
  echo "SET is the data-set name; DEST is a fresh empty directory on the scratch fs"
  echo "(umoci: DEST does not exist yet, the tree lands in DEST/rootfs). Each command's"
  echo "stdout goes to /dev/null. Before each run: \`sync\` (untimed); after: \`rm -rf DEST\` (untimed)."
  echo "Wall time is bash's \`\$EPOCHREALTIME\` (microseconds) read just before and after the command."
  echo
  for id in "${TOOLS[@]}"; do
    tool_cmd "$id" SET DEST
    echo "- ${LABEL[$id]}: \`${CMD[*]}\`"
  done
  echo
}

# ------------------------------------------------------------------ verify mode
# tree_stat DIR: one sorted line per entry (paths relative to DIR). Directory sizes
# are left out (they depend on the fs's directory-block history, not on the layer);
# device nodes show major:minor in place of the size; the root dir's mtime is
# compared on its own (compare_trees), as several extractors leave it at "now".
tree_stat() {
  ( cd -- "$1" && {
      stat -c '%n %f %u %g - - %h' .
      find . -mindepth 1 -type d -print0 | xargs -0r stat -c '%n %f %u %g - %Y %h'
      find . ! -type d ! -type c ! -type b -print0 | xargs -0r stat -c '%n %f %u %g %s %Y %h'
      find . \( -type c -o -type b \) -print0 | xargs -0r stat -c '%n %f %u %g %t:%T %Y %h'
    } ) | sort
}

# compare_trees REF OTHER REPORTFILE: sets NDIFF (number of differing lines) and
# ROOTNOTE (non-empty when only the root dir's mtime differs from GNU tar's)
compare_trees() {
  local a=$1 b=$2 rep=$3 rc=0
  : >"$rep"
  diff -r --no-dereference -- "$a" "$b" >"$rep.raw" 2>&1 || rc=$?
  # GNU diff reports every pair of device nodes as different, even when equal;
  # their type, mode, owner and major:minor are compared by the stat lines below.
  grep -Ev '^File .* is a (character|block) special file while file .* is a (character|block) special file$' \
    "$rep.raw" >"$rep.diff" || true
  if [ -s "$rep.diff" ]; then
    { echo "### diff -r --no-dereference (exit $rc)"; sed "s#$WORK/##g" "$rep.diff"; } >>"$rep"
  fi
  tree_stat "$a" >"$rep.a"
  tree_stat "$b" >"$rep.b"
  if ! cmp -s "$rep.a" "$rep.b"; then
    { echo "### stat -c '%n %f %u %g %s %Y %h' (< GNU tar, > this tool)"; diff "$rep.a" "$rep.b" | grep '^[<>]' || true; } >>"$rep"
  fi
  NDIFF=$( { cat "$rep.diff"; diff "$rep.a" "$rep.b" | grep '^[<>]' || true; } | wc -l)
  ROOTNOTE=
  if [ "$(stat -c %Y -- "$a")" != "$(stat -c %Y -- "$b")" ]; then
    ROOTNOTE="root dir mtime not restored"
  fi
  rm -f -- "$rep.raw" "$rep.diff" "$rep.a" "$rep.b"
}

verify_mode() {
  local s id d ref rep out bad=0 blob diffid miss lt_ok
  print_header "LayerKit: layertool unpack vs GNU tar, tree comparison (--verify-equal)"
  print_commands
  echo "## Results"
  echo
  echo "Each tool's tree is compared with GNU tar's (\`tar -xzf\`) tree of the same layer."
  echo
  echo "| tool | digests computed | $(printf '%s | ' "${SETS[@]}")"
  echo "|---|---|$(printf -- '---|%.0s' "${SETS[@]}")"
  declare -A CELL
  local details=$WORK/details.md
  : >"$details"
  for s in "${SETS[@]}"; do
    log "[$s] verify: reference tree (GNU tar -xzf)"
    warm_cache "$s"
    ref=$WORK/ref
    run_tool tar-gz "$s" "$ref" /dev/null
    [ "$RC" = 0 ] || die "GNU tar failed on $s: $(tail -3 "$ERRLOG")"
    blob=$(layer_sha "$DATA/layers/$s.tar.gz")
    diffid=
    [ -f "$DATA/layers/$s.tar" ] && diffid=$(layer_sha "$DATA/layers/$s.tar")
    for id in "${TOOLS[@]}"; do
      [ "$id" = tar-gz ] && { CELL[$s,$id]="reference"; continue; }
      miss=$(tool_missing "$id" "$s")
      if [ -n "$miss" ]; then CELL[$s,$id]=$miss; continue; fi
      log "[$s] verify: $id"
      d=$WORK/out-$id
      out=$WORK/stdout-$id
      run_tool "$id" "$s" "$d" "$out"
      if [ "$RC" != 0 ]; then
        CELL[$s,$id]="FAILED (exit $RC)"
        { echo "#### $s / ${LABEL[$id]}: exit $RC"; echo '```'; tail -20 "$ERRLOG"; echo '```'; echo; } >>"$details"
        case $id in layertool-*) bad=1 ;; esac
        rm -rf -- "$d"; continue
      fi
      rep=$WORK/rep-$id
      compare_trees "$ref" "$OUTTREE" "$rep"
      if [ "$NDIFF" = 0 ]; then CELL[$s,$id]="identical"
      else
        CELL[$s,$id]="$NDIFF differences"
        case $id in layertool-*) bad=1 ;; esac
        { echo "#### $s / ${LABEL[$id]}: $NDIFF differences (first 40 lines)"; echo '```'; head -40 "$rep"; echo '```'; echo; } >>"$details"
      fi
      [ -z "$ROOTNOTE" ] || CELL[$s,$id]+=" ($ROOTNOTE)"
      # does the tool report the digests? (layertool and containerd-peer print them)
      case $id in
        layertool-*|containerd)
          local fblob=$blob
          [ "$id" = layertool-zst ] && fblob=$(layer_sha "$DATA/layers/$s.tar.zst")
          lt_ok=""
          grep -qi -- "$fblob" "$out" && lt_ok+=", blob digest OK" || lt_ok+=", blob digest NOT printed"
          if [ -n "$diffid" ]; then
            grep -qi -- "$diffid" "$out" && lt_ok+=", diffID OK" || lt_ok+=", diffID NOT printed"
          fi
          case $lt_ok in *NOT*) case $id in layertool-*) bad=1 ;; esac
            { echo "#### $s / ${LABEL[$id]}: digests"; echo "expected blob sha256:$fblob, diffID sha256:${diffid:-?}; stdout was:"; echo '```'; head -20 "$out"; echo '```'; echo; } >>"$details" ;;
          esac
          CELL[$s,$id]+=$lt_ok ;;
      esac
      rm -rf -- "$d" "$out" "$rep"
    done
    rm -rf -- "$ref"
  done
  for id in "${TOOLS[@]}"; do
    echo -n "| ${LABEL[$id]} | ${DIGESTS[$id]} |"
    for s in "${SETS[@]}"; do echo -n " ${CELL[$s,$id]} |"; done
    echo
  done
  echo
  if [ -s "$details" ]; then echo "## Differences"; echo; cat "$details"; fi
  print_versions
  if [ "$bad" = 1 ]; then
    echo "**RESULT: layertool differs from GNU tar (or did not print the digests).**"
    log "verify: layertool DIFFERS (see report)"
    return 1
  fi
  echo "**RESULT: layertool's trees match GNU tar's and it printed both digests.**"
  log "verify: layertool matches GNU tar"
}

# ------------------------------------------------------------------ bench mode
bench_mode() {
  local s id r round d n
  declare -A TIMES FAIL MISS NOTE EXPECT
  for s in "${SETS[@]}"; do
    log "[$s] reading layers into the page cache; counting entries"
    warm_cache "$s"
    EXPECT[$s]=$(expected_entries "$s")
    for id in "${TOOLS[@]}"; do MISS[$s,$id]=$(tool_missing "$id" "$s"); TIMES[$s,$id]=; done
    # untimed warm-up
    for ((r = 1; r <= WARMUP; r++)); do
      for id in "${TOOLS[@]}"; do
        [ -z "${MISS[$s,$id]}" ] || continue
        d=$WORK/out-$id
        run_tool "$id" "$s" "$d" /dev/null
        rm -rf -- "$d"
      done
    done
    # timed, interleaved rounds
    for ((round = 1; round <= ${RUNS[$s]}; round++)); do
      for id in "${TOOLS[@]}"; do
        [ -z "${MISS[$s,$id]}" ] && [ -z "${FAIL[$s,$id]:-}" ] || continue
        d=$WORK/out-$id
        run_tool "$id" "$s" "$d" /dev/null
        if [ "$RC" != 0 ]; then
          FAIL[$s,$id]="exit $RC: $(tail -2 "$ERRLOG" | tr '\n' ' ' | cut -c1-300)"
          log "[$s] round $round/${RUNS[$s]} ${LABEL[$id]}: FAILED (exit $RC)"
          rm -rf -- "$d"; continue
        fi
        TIMES[$s,$id]+=" $ELAPSED_US"
        log "[$s] round $round/${RUNS[$s]} ${LABEL[$id]}: $(fmt_s "$ELAPSED_US") s"
        if [ "$round" = 1 ]; then  # untimed sanity check: did it extract every entry?
          n=$( (cd -- "$OUTTREE" && find . | wc -l) )
          if [ "$n" != "${EXPECT[$s]}" ]; then
            NOTE[$s,$id]="found $n entries after extraction, the layer has ${EXPECT[$s]}"
            log "[$s] ${LABEL[$id]}: ${NOTE[$s,$id]}"
          fi
        fi
        rm -rf -- "$d"
      done
    done
  done

  # ---- report
  declare -A MED
  for s in "${SETS[@]}"; do
    for id in "${TOOLS[@]}"; do
      if [ -z "${MISS[$s,$id]}" ] && [ -z "${FAIL[$s,$id]:-}" ] && [ -n "${TIMES[$s,$id]}" ]; then
        # shellcheck disable=SC2086
        MED[$s,$id]=$(median_us ${TIMES[$s,$id]})
      fi
    done
  done

  print_header "LayerKit: layertool unpack vs peers"
  echo "## Results"
  echo
  echo "Median wall time in seconds over the timed runs; in brackets the ratio to layertool"
  echo "on the same input (.tar.gz rows vs \`layertool unpack\` of the .tar.gz, .tar.zst rows vs"
  echo "its .tar.zst): **2.00×** means the tool took twice as long as layertool, **0.50×** half as long."
  echo "Only wall time is measured; the written data may still be in the page cache (no tool here fsyncs"
  echo "unless noted), and the untimed \`sync\` before the next run flushes it."
  echo
  echo -n "| tool | digests computed |"
  for s in "${SETS[@]}"; do
    if [ "${RUNS[$s]}" = 1 ]; then echo -n " $s (1 run) |"; else echo -n " $s (${RUNS[$s]} runs) |"; fi
  done
  echo
  echo "|---|---|$(printf -- '---|%.0s' "${SETS[@]}")"
  local cell ref
  for id in "${TOOLS[@]}"; do
    echo -n "| ${LABEL[$id]} | ${DIGESTS[$id]} |"
    for s in "${SETS[@]}"; do
      if [ -n "${MISS[$s,$id]}" ]; then cell=${MISS[$s,$id]}
      elif [ -n "${FAIL[$s,$id]:-}" ]; then cell="FAILED (${FAIL[$s,$id]%%:*})"
      else
        cell="$(fmt_s "${MED[$s,$id]}") s"
        ref=${REF[$id]}
        if [ -n "${MED[$s,$ref]:-}" ] && [ "${MED[$s,$ref]}" -gt 0 ]; then
          cell+=" ($(awk -v a="${MED[$s,$id]}" -v b="${MED[$s,$ref]}" 'BEGIN{printf "%.2f", a/b}')×)"
        else
          cell+=" (n/a)"
        fi
        [ -n "${NOTE[$s,$id]:-}" ] && cell+=" ⚠"
      fi
      echo -n " $cell |"
    done
    echo
  done
  echo

  local notes=0
  for s in "${SETS[@]}"; do for id in "${TOOLS[@]}"; do
    if [ -n "${FAIL[$s,$id]:-}" ] || [ -n "${NOTE[$s,$id]:-}" ]; then notes=1; fi
  done; done
  if [ "$notes" = 1 ]; then
    echo "## Problems"
    echo
    for s in "${SETS[@]}"; do for id in "${TOOLS[@]}"; do
      [ -n "${FAIL[$s,$id]:-}" ] && echo "- $s / ${LABEL[$id]}: FAILED, ${FAIL[$s,$id]}"
      [ -n "${NOTE[$s,$id]:-}" ] && echo "- $s / ${LABEL[$id]}: ⚠ ${NOTE[$s,$id]}"
    done; done
    echo
  fi

  print_commands

  echo "## Raw times (seconds, in run order)"
  echo
  echo "| set | tool | runs | min | median | max |"
  echo "|---|---|---|---|---|---|"
  local t list mn mx
  for s in "${SETS[@]}"; do
    for id in "${TOOLS[@]}"; do
      [ -n "${TIMES[$s,$id]}" ] || continue
      list=; for t in ${TIMES[$s,$id]}; do list+="$(fmt_s "$t") "; done
      mn=$(printf '%s\n' ${TIMES[$s,$id]} | sort -n | head -1)
      mx=$(printf '%s\n' ${TIMES[$s,$id]} | sort -n | tail -1)
      echo "| $s | ${LABEL[$id]} | ${list% } | $(fmt_s "$mn") | $(fmt_s "${MED[$s,$id]:-0}") | $(fmt_s "$mx") |"
    done
  done
  echo
  print_versions
}

if [ "$VERIFY" = 1 ]; then
  verify_mode
else
  bench_mode
fi
