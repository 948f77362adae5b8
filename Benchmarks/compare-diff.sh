#!/usr/bin/env bash
# compare-diff.sh — time producing a layer from trees (`layertool diff`) against what
# users would otherwise run: tar piped into gzip / pigz / zstd, containerd's
# archive.WriteDiff (containerd-peer -mode=diff) and umoci (repack / insert).
#
# Three scenarios per data set (see Benchmarks/README.md, "compare-diff.sh"):
#   full      the first layer: OLD = an empty dir, NEW = the tree
#   5%        OLD = the tree, NEW = a copy of it on the scratch fs with a deterministic
#             change (every 20th file appended to, every 40th deleted, new files)
#   no-change OLD = the tree, NEW = a `cp -a` copy of it (default: many-small only)
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

Times 'LAYERTOOL_BIN diff OLD NEW -o OUT' (.tar.gz, .tar.zst, .tar) against
'tar -C NEW -cf - . | gzip -6 -n' / 'pigz -6' / 'zstd -3 -T2', containerd's
WriteDiff (containerd-peer -mode=diff -compress=gzip|zstd|none -verify) and
'umoci repack' / 'umoci insert', on three scenarios per data set: the full first
layer (OLD empty), a ~5% change, and (for --nochange sets) two equal trees.
Every output goes to the scratch file system; each timed run starts after an
untimed 'sync', and the output is deleted after the run (untimed). Runs are
interleaved (round 1 runs every tool on every scenario once, then round 2, ...).
Before timing, LAYERTOOL_BIN is copied to BIN_COPY_DIR/layertool-<sha256:12> and
the copy is what runs (a rebuild during the run does not change what is measured).
Prints a markdown report on stdout (progress goes to stderr), e.g.
  $PROG --runs 5 .build/release/layertool > diff-results.md

Options:
  --runs SPEC         timed runs per tool: N, or per set: 'rootfs=5,many-small=3',
                      or both: '5,many-small=3' (default 5)
  --sets LIST         comma-separated data sets (default rootfs,many-small)
  --nochange LIST     sets that also get the no-change scenario (default many-small;
                      'none' for no such scenario); only sets in --sets run
  --data DIR          data made by shared/bench/make-fixtures.sh, holding trees/ and
                      oci/ (default \$LKBENCH_DATA or /var/tmp/lkbench/data)
  --scratch DIR       where outputs and modified trees are written; must be a
                      JOURNALED file system (default \$LKBENCH_SCRATCH or /mnt/lkbench)
  --mount-image IMG   instead of --scratch: loop-mount IMG (created as a journaled
                      ext4 of --image-size if missing) on a temporary mount point for
                      the duration of the script; always unmounted on exit
  --image-size SIZE   size for a new --mount-image (default 40G; sparse)
  --containerd-peer P containerd-peer binary (default \$CONTAINERD_PEER or
                      /var/tmp/lkbench/containerd-peer; "not installed" when missing)
  --bin-copy-dir DIR  where the copy of LAYERTOOL_BIN goes (default /var/tmp/lkbench)
  --no-bin-copy       run LAYERTOOL_BIN in place
  --warmup N          untimed runs of each tool per scenario before the timed ones
                      (default 0; the trees are always read once into the page cache)
  --allow-unjournaled run even if the scratch dir is on ext4 without a journal
  -h, --help          this text
EOF
}

die() { echo "$PROG: $*" >&2; exit 2; }
log() { echo "[$(date +%T)] $*" >&2; }

# ------------------------------------------------------------------ options
RUNS_SPEC=5
SETS_CSV=rootfs,many-small
NOCHANGE_CSV=many-small
DATA=${LKBENCH_DATA:-/var/tmp/lkbench/data}
SCRATCH=${LKBENCH_SCRATCH:-/mnt/lkbench}
SCRATCH_GIVEN=0
PEER=${CONTAINERD_PEER:-/var/tmp/lkbench/containerd-peer}
BIN_COPY_DIR=/var/tmp/lkbench
BIN_COPY=1
WARMUP=0
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
    --nochange) need_arg "$@"; NOCHANGE_CSV=$2; shift 2 ;;
    --nochange=*) NOCHANGE_CSV=${1#*=}; shift ;;
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
    --bin-copy-dir) need_arg "$@"; BIN_COPY_DIR=$2; shift 2 ;;
    --bin-copy-dir=*) BIN_COPY_DIR=${1#*=}; shift ;;
    --no-bin-copy) BIN_COPY=0; shift ;;
    --warmup) need_arg "$@"; WARMUP=$2; shift 2 ;;
    --warmup=*) WARMUP=${1#*=}; shift ;;
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
LT_ORIG=$LT
LT_BUILT=$(date -u -r "$LT" '+%Y-%m-%d %H:%M UTC')
LT_SHA=$(sha256sum -- "$LT" | cut -c1-12)
if [ "$BIN_COPY" = 1 ]; then
  mkdir -p -- "$BIN_COPY_DIR"
  copy=$(readlink -f -- "$BIN_COPY_DIR")/layertool-$LT_SHA
  if [ "$copy" != "$LT" ]; then
    if [ -f "$copy" ] && [ "$(sha256sum -- "$copy" | cut -c1-12)" = "$LT_SHA" ]; then :
    else cp -p -- "$LT" "$copy.tmp$$" && mv -f -- "$copy.tmp$$" "$copy"; fi
    # the original may have been rewritten while we copied it
    [ "$(sha256sum -- "$copy" | cut -c1-12)" = "$LT_SHA" ] || die "$LT changed while it was copied; try again"
    LT=$copy
  fi
  log "timing the copy $LT of $LT_ORIG"
fi

[[ $WARMUP =~ ^[0-9]+$ ]] || die "--warmup wants a number, got '$WARMUP'"
[ -n "$MOUNT_IMAGE" ] && [ "$SCRATCH_GIVEN" = 1 ] && die "give either --scratch or --mount-image, not both"

IFS=, read -r -a SETS <<<"$SETS_CSV"
[ ${#SETS[@]} -gt 0 ] || die "--sets is empty"
for s in "${SETS[@]}"; do [[ $s =~ ^[A-Za-z0-9._-]+$ ]] || die "bad set name '$s'"; done
declare -A NOCHANGE=()
if [ "$NOCHANGE_CSV" != none ]; then
  IFS=, read -r -a _nc <<<"$NOCHANGE_CSV"
  for s in "${_nc[@]}"; do [[ $s =~ ^[A-Za-z0-9._-]+$ ]] || die "bad --nochange set '$s'"; NOCHANGE[$s]=1; done
fi

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
  [ "$found" = 1 ] || die "--runs names set '$k', which is not in --sets ($SETS_CSV)"
done

[ -d "$DATA/trees" ] || die "no $DATA/trees (build the data with shared/bench/make-fixtures.sh, see Benchmarks/README.md)"
for s in "${SETS[@]}"; do
  [ -d "$DATA/trees/$s" ] || die "no tree $DATA/trees/$s"
done
for c in tar gzip sha256sum find xargs awk sort cp; do
  command -v "$c" >/dev/null || die "$c is required"
done

[ "$(id -u)" = 0 ] || log "warning: not root: copies lose owners and device nodes, umoci needs root (or fails)"

. "$(dirname -- "$(readlink -f -- "$0")")/scratch.sh"

# free space: per set (one at a time) the modified copy, the no-change copy, two umoci
# bundles, an uncompressed output and a copy of the OCI layout, plus margin
max_tree=0
for s in "${SETS[@]}"; do
  sz=$(( $(du -sk -- "$DATA/trees/$s" | cut -f1) * 1024 ))
  [ "$sz" -gt "$max_tree" ] && max_tree=$sz
done
avail=$(( $(df -P -k -- "$SCRATCH" | awk 'NR==2{print $4}') * 1024 ))
if [ "$avail" -lt $(( max_tree * 7 )) ]; then
  die "scratch $SCRATCH has $((avail/1048576)) MiB free; need about $((max_tree*7/1048576)) MiB"
fi

WORK=$(mktemp -d "$SCRATCH/lkbench-diff.XXXXXX")

# ------------------------------------------------------------------ tools
# Row order of the report; each id has a label, an availability check and a command.
TOOLS=(lt-gz lt-zst lt-tar tar-gzip tar-pigz tar-zstd ctrd-gz ctrd-zst ctrd-none umoci-repack umoci-insert)
declare -A LABEL=(
  [lt-gz]='layertool diff (.tar.gz, gzip -6)'
  [lt-zst]='layertool diff (.tar.zst, zstd -3)'
  [lt-tar]='layertool diff (.tar)'
  [tar-gzip]='tar -c | gzip -6 -n'
  [tar-pigz]='tar -c | pigz -6'
  [tar-zstd]='tar -c | zstd -3 -T2'
  [ctrd-gz]='containerd WriteDiff + gzip (containerd-peer)'
  [ctrd-zst]='containerd WriteDiff + zstd (containerd-peer)'
  [ctrd-none]='containerd WriteDiff, no compression (containerd-peer)'
  [umoci-repack]='umoci repack'
  [umoci-insert]='umoci insert NEW / (full only)'
)
declare -A DIGESTS=(
  [lt-gz]='blob + diffID' [lt-zst]='blob + diffID' [lt-tar]='blob (= diffID)'
  [tar-gzip]='none' [tar-pigz]='none' [tar-zstd]='none'
  [ctrd-gz]='blob + diffID' [ctrd-zst]='blob + diffID' [ctrd-none]='blob (= diffID)'
  [umoci-repack]='blob + diffID (into manifest/config)' [umoci-insert]='blob + diffID (into manifest/config)'
)
# compression of each tool's output (to list it, and to pick the layertool row it is timed against)
declare -A COMP=(
  [lt-gz]=gz [lt-zst]=zst [lt-tar]=none [tar-gzip]=gz [tar-pigz]=gz [tar-zstd]=zst
  [ctrd-gz]=gz [ctrd-zst]=zst [ctrd-none]=none [umoci-repack]=gz [umoci-insert]=gz
)
declare -A REF=([gz]=lt-gz [zst]=lt-zst [none]=lt-tar)
declare -A EXT=([gz]=tar.gz [zst]=tar.zst [none]=tar)

declare -A SCEN_LABEL=([full]='full layer' [pct5]='5% change' [nochange]='no change')

# tool_missing ID: why the tool can't run at all (nothing if it can)
tool_missing() {
  case $1 in
    tar-pigz)  command -v pigz >/dev/null || echo "not installed (pigz)" ;;
    tar-zstd)  command -v zstd >/dev/null || echo "not installed (zstd)" ;;
    lt-zst)    command -v zstd >/dev/null || echo "zstd not installed (needed to check the output)" ;;
    ctrd-*)    [ -x "$PEER" ] || echo "not installed" ;;
    umoci-*)   if ! command -v umoci >/dev/null; then echo "not installed"
               elif ! command -v jq >/dev/null; then echo "not run (jq not installed)"; fi ;;
  esac
  return 0
}

# tool_na ID SET SCEN: why the tool has no row in that scenario (nothing if it has)
tool_na() {
  local id=$1 s=$2 sc=$3
  case $sc in
    nochange) case $id in lt-tar|ctrd-none) ;; *) echo "–" ;; esac ;;
    pct5) [ "$id" = umoci-insert ] && echo "n/a (adds a tree, no diff)" ;;
  esac
  case $id in
    umoci-repack) [ "$sc" = pct5 ] && [ ! -f "$DATA/oci/$s/index.json" ] && echo "no OCI layout oci/$s" ;;
  esac
  return 0
}

scen_old() { case $2 in full) echo "$WORK/empty" ;; *) echo "$DATA/trees/$1" ;; esac; }
scen_new() { case $2 in full) echo "$DATA/trees/$1" ;; pct5) echo "$WORK/$1-new2" ;; nochange) echo "$WORK/$1-copy" ;; esac; }

tar_pipe() { local src=$1; shift; tar -C "$src" -cf - . | "$@"; }

# tool_cmd ID SET SCEN: sets CMD (array), DISP (the command as shown in the report, with
# placeholders), OUT (the layer file; for umoci found after the run), STDOUT (where the
# command's stdout goes), RUNLAYOUT/PRISTINE (umoci: the layout copy the run writes into)
tool_cmd() {
  local id=$1 s=$2 sc=$3 old new
  old=$(scen_old "$s" "$sc"); new=$(scen_new "$s" "$sc")
  OUT=$WORK/out.${EXT[${COMP[$id]}]}
  STDOUT=$OUT
  RUNLAYOUT=; PRISTINE=
  case $id in
    lt-gz|lt-zst|lt-tar)
      CMD=("$LT" diff "$old" "$new" -o "$OUT"); STDOUT=$WORK/stdout.txt
      DISP="layertool diff OLD NEW -o OUT.${EXT[${COMP[$id]}]}" ;;
    tar-gzip) CMD=(tar_pipe "$new" gzip -6 -n);     DISP="tar -C NEW -cf - . | gzip -6 -n > OUT" ;;
    tar-pigz) CMD=(tar_pipe "$new" pigz -6);        DISP="tar -C NEW -cf - . | pigz -6 > OUT" ;;
    tar-zstd) CMD=(tar_pipe "$new" zstd -3 -T2 -c -q); DISP="tar -C NEW -cf - . | zstd -3 -T2 -c -q > OUT" ;;
    ctrd-gz)   CMD=("$PEER" -mode=diff -compress=gzip -verify "$old" "$new"); DISP="containerd-peer -mode=diff -compress=gzip -verify OLD NEW > OUT" ;;
    ctrd-zst)  CMD=("$PEER" -mode=diff -compress=zstd -verify "$old" "$new"); DISP="containerd-peer -mode=diff -compress=zstd -verify OLD NEW > OUT" ;;
    ctrd-none) CMD=("$PEER" -mode=diff -compress=none -verify "$old" "$new"); DISP="containerd-peer -mode=diff -compress=none -verify OLD NEW > OUT" ;;
    umoci-repack)
      RUNLAYOUT=$WORK/layout-run; STDOUT=/dev/null; OUT=
      if [ "$sc" = full ]; then PRISTINE=$WORK/empty-oci; else PRISTINE=$DATA/oci/$s; fi
      CMD=(umoci repack --image "$RUNLAYOUT:new" "$WORK/$s-bundle-$sc")
      DISP="umoci repack --image LAYOUT:new BUNDLE" ;;
    umoci-insert)
      RUNLAYOUT=$WORK/layout-run; STDOUT=/dev/null; OUT=; PRISTINE=$WORK/empty-oci
      CMD=(umoci insert --image "$RUNLAYOUT:empty" --tag new "$new" /)
      DISP="umoci insert --image LAYOUT:empty --tag new NEW /" ;;
    *) die "internal: unknown tool $id" ;;
  esac
}

# umoci_layer LAYOUT: the newest layer of tag 'new' -> sets OUT (blob path), UMOCI_DIFFID
umoci_layer() {
  local l=$1 m c d
  m=$(jq -r '.manifests[] | select(.annotations["org.opencontainers.image.ref.name"]=="new") | .digest' "$l/index.json")
  [ -n "$m" ] || { OUT=; return 1; }
  d=$(jq -r '.layers[-1].digest' "$l/blobs/sha256/${m#sha256:}")
  c=$(jq -r '.config.digest' "$l/blobs/sha256/${m#sha256:}")
  UMOCI_DIFFID=$(jq -r '.rootfs.diff_ids[-1]' "$l/blobs/sha256/${c#sha256:}")
  OUT=$l/blobs/sha256/${d#sha256:}
  UMOCI_BLOB=$d
}

# run_tool ID SET SCEN: untimed prep, timed run. Sets ELAPSED_US, RC, OUT, SIZE.
ERRLOG=$WORK/stderr.log
run_tool() {
  local id=$1 s=$2 sc=$3 t0 t1
  tool_cmd "$id" "$s" "$sc"
  [ -z "$OUT" ] || rm -f -- "$OUT"
  if [ -n "$RUNLAYOUT" ]; then rm -rf -- "$RUNLAYOUT"; cp -a -- "$PRISTINE" "$RUNLAYOUT"; fi
  sync
  RC=0
  t0=$EPOCHREALTIME
  "${CMD[@]}" >"$STDOUT" 2>"$ERRLOG" || RC=$?
  t1=$EPOCHREALTIME
  ELAPSED_US=$(( 10#${t1/./} - 10#${t0/./} ))
  SIZE=
  if [ "$RC" = 0 ]; then
    if [ -n "$RUNLAYOUT" ]; then
      umoci_layer "$RUNLAYOUT" || { RC=99; echo "$PROG: no tag 'new' in the layout after the run" >>"$ERRLOG"; return; }
    fi
    [ -f "$OUT" ] || { RC=98; echo "$PROG: no output file $OUT" >>"$ERRLOG"; return; }
    SIZE=$(stat -c %s -- "$OUT")
  fi
}

# after a run: delete its output (untimed)
clean_run() {
  [ -z "$OUT" ] || rm -f -- "$OUT"
  [ -z "$RUNLAYOUT" ] || rm -rf -- "$RUNLAYOUT"
  rm -f -- "$WORK/stdout.txt"
}

# check_output ID: once per tool and scenario (round 1, untimed): can GNU tar list the
# output, how many entries does it hold, and are the digests the tool reports right?
# Sets ENTRIES and CHECK.
check_output() {
  local id=$1 comp=${COMP[$1]} blob diffid err=$WORK/tar-t.err got
  ENTRIES=; CHECK=
  local -a tarl
  case $comp in
    gz)   tarl=(tar -tzf) ;;
    zst)  tarl=(tar --zstd -tf) ;;
    none) tarl=(tar -tf) ;;
  esac
  if ! ENTRIES=$("${tarl[@]}" "$OUT" 2>"$err" | wc -l); then
    CHECK="⚠ GNU ${tarl[*]} FAILED: $(tail -2 "$err" | tr '\n' ' ')"
    return 0
  fi
  CHECK="tar -t OK"
  # a warning is not a failure, but worth showing (e.g. absolute member names)
  [ ! -s "$err" ] || CHECK+=" (GNU tar warned: $(sort -u "$err" | head -2 | tr '\n' ' ' | sed 's/ *$//'))"
  case $id in tar-*) return 0 ;; esac
  blob=$(sha256sum -- "$OUT" | cut -d' ' -f1)
  case $comp in
    gz)   diffid=$(gzip -dc -- "$OUT" | sha256sum | cut -d' ' -f1) ;;
    zst)  diffid=$(zstd -dc -q -- "$OUT" | sha256sum | cut -d' ' -f1) ;;
    none) diffid=$blob ;;
  esac
  case $id in
    lt-*)   got=$WORK/stdout.txt ;;
    ctrd-*) got=$ERRLOG ;;
    umoci-*)
      if [ "$UMOCI_BLOB" = "sha256:$blob" ] && [ "$UMOCI_DIFFID" = "sha256:$diffid" ]; then CHECK+=", digests in manifest/config OK"
      else CHECK="⚠ $CHECK, digests in manifest/config WRONG (manifest $UMOCI_BLOB, config $UMOCI_DIFFID; file sha256:$blob, tar sha256:$diffid)"; fi
      return 0 ;;
  esac
  if grep -qi -- "$blob" "$got"; then CHECK+=", blob digest OK"; else CHECK="⚠ $CHECK, blob digest NOT printed (sha256:$blob)"; fi
  if grep -qi -- "$diffid" "$got"; then CHECK+=", diffID OK"; else CHECK="⚠ ${CHECK#⚠ }, diffID NOT printed (sha256:$diffid)"; fi
}

tl() { local l=${LABEL[$1]}; echo -n "${l//|/\\|}"; }   # label for a table cell
fmt_s() { awk -v us="$1" 'BEGIN{ s=us/1e6; if (s < 1) printf "%.3f", s; else printf "%.2f", s }'; }
fmt_b() { awk -v b="$1" 'BEGIN{ s=sprintf("%d", b); o=""; while (length(s) > 3) { o="," substr(s, length(s)-2) o; s=substr(s, 1, length(s)-3) } print s o }'; }
ratio() { awk -v a="$1" -v b="$2" 'BEGIN{printf "%.2f", a/b}'; }

median_us() {  # numbers on the command line -> median (integer)
  printf '%s\n' "$@" | sort -n | awk '{a[NR]=$1} END{ if (NR%2) print a[(NR+1)/2]; else printf "%d\n", (a[NR/2]+a[NR/2+1])/2 }'
}

warm_tree() {  # read every file (and the metadata) of a tree into the page cache
  find "$1" -type f -print0 | xargs -0r cat -- >/dev/null
}

# ------------------------------------------------------------------ the 5% change
# mutate DIR LIST: LIST holds the tree's regular files ('./path', NUL-separated, sorted
# with LC_ALL=C), numbered from 1. File i is
#   i % 20 == 0    modified: the line "lkbench change <i>" appended (size, content, mtime change)
#   i % 40 == 10   deleted
#   i % 200 == 100 gets a new sibling "lkbench-new-<i>.txt" (40 lines, about 1.2 KB)
# and a new dir ./lkbench-new-dir with 10 files of 40 lines is added at the top.
# Sets MOD DEL ADD (counts).
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

# ------------------------------------------------------------------ report header
print_header() {
  local title=$1 s
  echo "# $title"
  echo
  echo "- date: started $START_DATE, finished $(date -u '+%Y-%m-%d %H:%M:%S UTC')"
  echo "- load average (1/5/15 min): $START_LOAD at the start, $(cut -d' ' -f1-3 /proc/loadavg) at the end"
  echo "- invocation: \`$INVOCATION\`"
  echo "- kernel: \`$(uname -r)\`; $(nproc) cores ($(awk -F': ' '/^model name/{print $2; exit}' /proc/cpuinfo)); $(awk '/^MemTotal/{printf "%.0f GiB", $2/1048576}' /proc/meminfo) RAM"
  if [ "$LT" != "$LT_ORIG" ]; then
    echo "- layertool: \`$LT\` (sha256 $LT_SHA), a copy made at the start of \`$LT_ORIG\` (built $LT_BUILT)"
  else
    echo "- layertool: \`$LT\` (sha256 $LT_SHA, built $LT_BUILT)"
  fi
  echo "- data: \`$DATA\`"
  echo "- scratch: \`$SCRATCH\` on $SCR_SRC ($SCR_FS, mounted at $SCR_TARGET, journal: $SCR_JOURNAL)"
  echo -n "- timed runs per tool and scenario:"
  for s in "${SETS[@]}"; do echo -n " $s ${RUNS[$s]};"; done
  echo " untimed warm-up runs: $WARMUP; order interleaved (each round runs every tool on every scenario of the set once)"
  echo "- data sets (trees):"
  for s in "${SETS[@]}"; do
    echo -n "  - $s: \`$DATA/trees/$s\`, $(du -sh -- "$DATA/trees/$s" | cut -f1) on disk"
    [ -f "$DATA/stats/$s.txt" ] && echo -n ", $(awk '/^regular_files/{f=$2} /^directories/{d=$2} /^symlinks/{l=$2} END{printf "%d files, %d dirs, %d symlinks", f, d, l}' "$DATA/stats/$s.txt")"
    [ -n "${CHANGE[$s]:-}" ] && echo -n "; 5% change: ${CHANGE[$s]}"
    echo
  done
  echo
}

print_versions() {
  echo "## Tool versions"
  echo
  echo "- $(tar --version | head -1); $(gzip --version | head -1)"
  command -v pigz >/dev/null && echo "- $(pigz --version 2>&1 | head -1)"
  command -v zstd >/dev/null && echo "- $(zstd --version | head -1)"
  command -v umoci >/dev/null && echo "- $(umoci --version | head -1) (gzip: klauspost/pgzip, parallel, default level)"
  if [ -x "$PEER" ]; then
    echo "- containerd-peer: \`$PEER\` (containerd archive package from Debian golang-github-containerd-containerd-dev $(dpkg-query -W -f='${Version}' golang-github-containerd-containerd-dev 2>/dev/null || echo '?'); compression.CompressStream: gzip = Go compress/gzip default level (6), zstd = klauspost/compress zstd default level (≈3))"
  fi
  echo
}

print_commands() {
  local id
  echo "## Commands"
  echo
  echo "OLD/NEW per scenario — full: OLD = an empty dir on the scratch fs, NEW = \`DATA/trees/SET\`;"
  echo "5% change: OLD = \`DATA/trees/SET\`, NEW = the modified copy on the scratch fs;"
  echo "no change: OLD = \`DATA/trees/SET\`, NEW = its \`cp -a\` copy on the scratch fs."
  echo "OUT is a file on the scratch fs, deleted (untimed) after each run. Before each run: \`sync\` (untimed)."
  echo "Wall time is bash's \`\$EPOCHREALTIME\` (microseconds) read just before and after the command"
  echo "(for the pipelines: the whole pipeline, both processes). layertool's stdout (the descriptor and"
  echo "diffID) goes to a file; containerd-peer prints its digests on stderr."
  echo
  for id in "${TOOLS[@]}"; do
    tool_cmd "$id" SET full
    echo "- ${LABEL[$id]}: \`$DISP\`"
  done
  echo
  echo "umoci (LAYOUT is a fresh \`cp -a\` of a pristine OCI layout before every run, untimed; BUNDLE is made once):"
  echo
  echo "- full layer, \`umoci repack\`: pristine layout = an image with no layers (\`umoci init --layout L && umoci new --image L:empty\`);"
  echo "  BUNDLE = \`umoci unpack --image L:empty BUNDLE\` (empty rootfs) followed by \`cp -a DATA/trees/SET/. BUNDLE/rootfs/\`."
  echo "  repack then finds every entry of the rootfs missing from the (empty) mtree manifest and writes them all as one layer."
  echo "- full layer, \`umoci insert\`: the same empty image; \`umoci insert\` tars NEW (the data tree itself) into a new layer at /."
  echo "- 5% change, \`umoci repack\`: pristine layout = \`DATA/oci/SET\` (the image whose single layer is \`layers/SET.tar.gz\`);"
  echo "  BUNDLE = \`umoci unpack --image DATA/oci/SET:latest BUNDLE\` with the same 5% change applied to BUNDLE/rootfs."
  echo "- The size of a umoci row is the size of the new layer blob (the last layer of the manifest tagged \`new\`)."
  echo
}

# ------------------------------------------------------------------ bench
declare -A TIMES SIZES FAIL MISS NA NOTE ENT CHK CHANGE SCOPE
declare -A MED
SET_SCENS=()

prepare_set() {
  local s=$1 list
  log "[$s] reading the tree into the page cache"
  warm_tree "$DATA/trees/$s"
  mkdir -p -- "$WORK/empty"
  list=$WORK/$s-files.list
  ( cd -- "$DATA/trees/$s" && find . -type f -print0 | sort -z ) >"$list"
  log "[$s] making the 5% change: cp -a + mutate (untimed)"
  cp -a -- "$DATA/trees/$s" "$WORK/$s-new2"
  mutate "$WORK/$s-new2" "$list"
  CHANGE[$s]="$MOD of $(tr -cd '\0' <"$list" | wc -c) files modified, $DEL deleted, $ADD added"
  log "[$s] 5% change: ${CHANGE[$s]}"
  if [ -n "${NOCHANGE[$s]:-}" ]; then
    log "[$s] no-change copy: cp -a (untimed)"
    cp -a -- "$DATA/trees/$s" "$WORK/$s-copy"
  fi
  if [ -z "$(tool_missing umoci-repack)" ]; then
    if [ ! -d "$WORK/empty-oci" ]; then
      umoci init --layout "$WORK/empty-oci" && umoci new --image "$WORK/empty-oci:empty" \
        || die "could not make an empty OCI image with umoci"
    fi
    log "[$s] umoci bundles (untimed): empty image + cp -a of the tree; unpack of oci/$s + the 5% change"
    umoci unpack --image "$WORK/empty-oci:empty" "$WORK/$s-bundle-full" >"$WORK/umoci-prep.log" 2>&1 \
      || die "umoci unpack of the empty image failed: $(tail -3 "$WORK/umoci-prep.log")"
    cp -a -- "$DATA/trees/$s/." "$WORK/$s-bundle-full/rootfs/"
    if [ -f "$DATA/oci/$s/index.json" ]; then
      umoci unpack --image "$DATA/oci/$s:latest" "$WORK/$s-bundle-pct5" >"$WORK/umoci-prep.log" 2>&1 \
        || die "umoci unpack of $DATA/oci/$s failed: $(tail -3 "$WORK/umoci-prep.log")"
      mutate "$WORK/$s-bundle-pct5/rootfs" "$list"
      # the bundle must now hold the same names as the modified copy
      if ! diff <(cd -- "$WORK/$s-new2" && find . | sort) <(cd -- "$WORK/$s-bundle-pct5/rootfs" && find . | sort) >"$WORK/names.diff"; then
        NOTE[$s,pct5,umoci-repack]="the umoci bundle's rootfs does not hold the same names as the modified copy ($(grep -c '^[<>]' "$WORK/names.diff") lines differ)"
        log "[$s] WARNING: ${NOTE[$s,pct5,umoci-repack]}"
      fi
    fi
  fi
  rm -f -- "$list"
  sync
}

bench_set() {
  local s=$1 sc id r round
  SET_SCENS=(full pct5)
  [ -n "${NOCHANGE[$s]:-}" ] && SET_SCENS+=(nochange)
  for sc in "${SET_SCENS[@]}"; do
    for id in "${TOOLS[@]}"; do
      MISS[$s,$sc,$id]=$(tool_missing "$id")
      NA[$s,$sc,$id]=$(tool_na "$id" "$s" "$sc")
      TIMES[$s,$sc,$id]=; SIZES[$s,$sc,$id]=
    done
  done
  for ((r = 1; r <= WARMUP; r++)); do
    for sc in "${SET_SCENS[@]}"; do for id in "${TOOLS[@]}"; do
      [ -z "${MISS[$s,$sc,$id]}" ] && [ -z "${NA[$s,$sc,$id]}" ] || continue
      run_tool "$id" "$s" "$sc"; clean_run
    done; done
  done
  for ((round = 1; round <= ${RUNS[$s]}; round++)); do
    for sc in "${SET_SCENS[@]}"; do for id in "${TOOLS[@]}"; do
      [ -z "${MISS[$s,$sc,$id]}" ] && [ -z "${NA[$s,$sc,$id]}" ] && [ -z "${FAIL[$s,$sc,$id]:-}" ] || continue
      run_tool "$id" "$s" "$sc"
      if [ "$RC" != 0 ]; then
        FAIL[$s,$sc,$id]="exit $RC: $(tail -3 "$ERRLOG" | tr '\n' ' ' | cut -c1-400)"
        log "[$s/$sc] round $round/${RUNS[$s]} ${LABEL[$id]}: FAILED (exit $RC)"
        clean_run; continue
      fi
      TIMES[$s,$sc,$id]+=" $ELAPSED_US"
      SIZES[$s,$sc,$id]+=" $SIZE"
      log "[$s/$sc] round $round/${RUNS[$s]} ${LABEL[$id]}: $(fmt_s "$ELAPSED_US") s, $(fmt_b "$SIZE") B"
      if [ "$round" = 1 ]; then
        check_output "$id"
        ENT[$s,$sc,$id]=$ENTRIES; CHK[$s,$sc,$id]=$CHECK
        case $CHECK in ⚠*) log "[$s/$sc] ${LABEL[$id]}: $CHECK" ;; esac
      fi
      clean_run
    done; done
  done
  for sc in "${SET_SCENS[@]}"; do for id in "${TOOLS[@]}"; do
    # shellcheck disable=SC2086
    [ -z "${TIMES[$s,$sc,$id]}" ] || MED[$s,$sc,$id]=$(median_us ${TIMES[$s,$sc,$id]})
  done; done
  SCOPE[$s]="${SET_SCENS[*]}"
}

# cells
time_cell() {
  local s=$1 sc=$2 id=$3 ref
  if [ -n "${MISS[$s,$sc,$id]}" ]; then echo -n "${MISS[$s,$sc,$id]}"; return; fi
  if [ -n "${NA[$s,$sc,$id]}" ]; then echo -n "${NA[$s,$sc,$id]}"; return; fi
  if [ -n "${FAIL[$s,$sc,$id]:-}" ]; then echo -n "FAILED (${FAIL[$s,$sc,$id]%%:*})"; return; fi
  [ -n "${MED[$s,$sc,$id]:-}" ] || { echo -n "–"; return; }
  ref=${REF[${COMP[$id]}]}
  echo -n "$(fmt_s "${MED[$s,$sc,$id]}") s"
  if [ -n "${MED[$s,$sc,$ref]:-}" ] && [ "${MED[$s,$sc,$ref]}" -gt 0 ]; then
    echo -n " ($(ratio "${MED[$s,$sc,$id]}" "${MED[$s,$sc,$ref]}")×)"
  else echo -n " (n/a)"; fi
  case $sc,$id in pct5,tar-*) echo -n " †" ;; esac
  case ${CHK[$s,$sc,$id]:-} in ⚠*) echo -n " ⚠" ;; esac
  [ -z "${NOTE[$s,$sc,$id]:-}" ] || echo -n " ⚠"
}
size_cell() {
  local s=$1 sc=$2 id=$3 sz mn mx
  [ -n "${SIZES[$s,$sc,$id]:-}" ] || { echo -n "–"; return; }
  # shellcheck disable=SC2086
  sz=$(set -- ${SIZES[$s,$sc,$id]}; echo "$1")
  mn=$(printf '%s\n' ${SIZES[$s,$sc,$id]} | sort -n | head -1)
  mx=$(printf '%s\n' ${SIZES[$s,$sc,$id]} | sort -n | tail -1)
  echo -n "$(fmt_b "$sz")"
  local g=${SIZES[$s,$sc,tar-gzip]:-}
  if [ -n "$g" ]; then g=$(set -- $g; echo "$1"); echo -n " ($(ratio "$sz" "$g")×)"; fi
  [ "$mn" = "$mx" ] || echo -n " (varies $(fmt_b "$mn")–$(fmt_b "$mx"))"
}

report() {
  local s sc id any
  print_header "LayerKit: layertool diff vs peers"
  echo "## Results"
  echo
  echo "Per data set, one row per tool. **time**: median wall time over the timed runs, in brackets the"
  echo "ratio to layertool's median with the same compression in the same scenario (gzip rows, umoci"
  echo "included, vs \`layertool diff\` to .tar.gz; zstd rows vs .tar.zst; uncompressed rows vs .tar):"
  echo "**2.00×** means the tool took twice as long as layertool. **size**: bytes of the layer written,"
  echo "in brackets the ratio to the size of \`tar -c | gzip -6 -n\` in the same scenario."
  echo
  echo "**† Read the tar rows of the 5% column with care:** GNU tar has no two-tree diff, so those rows"
  echo "archive the whole modified tree (a full snapshot of NEW, no deletions, no digests): their time is"
  echo "that of re-archiving everything, and their size is the reference the diff layers' sizes are"
  echo "compared to. The files of the data trees have whole-second mtimes (as files extracted from tar or .deb do), so in the 5%"
  echo "and no-change scenarios layertool and containerd both compare the contents of every file whose"
  echo "size and mtime are equal (both read OLD and NEW in full); umoci repack hashes every file of the"
  echo "bundle (mtree sha256digest) whatever the mtimes."
  echo
  for s in "${SETS[@]}"; do
    echo "### $s (${RUNS[$s]} runs)"
    echo
    echo "| tool | digests computed | full: time | full: size (B) | 5% change: time | 5% change: size (B) |"
    echo "|---|---|---|---|---|---|"
    for id in "${TOOLS[@]}"; do
      echo "| $(tl "$id") | ${DIGESTS[$id]} | $(time_cell "$s" full "$id") | $(size_cell "$s" full "$id") | $(time_cell "$s" pct5 "$id") | $(size_cell "$s" pct5 "$id") |"
    done
    echo
  done
  any=0
  for s in "${SETS[@]}"; do if [[ " ${SCOPE[$s]} " == *" nochange "* ]]; then any=1; fi; done
  if [ "$any" = 1 ]; then
    echo "### No change: OLD = the tree, NEW = its \`cp -a\` copy"
    echo
    echo "| tool | digests computed | $(for s in "${SETS[@]}"; do [[ " ${SCOPE[$s]} " == *" nochange "* ]] && echo -n "$s: time | $s: size (B) | "; done)"
    echo "|---|---|$(for s in "${SETS[@]}"; do [[ " ${SCOPE[$s]} " == *" nochange "* ]] && echo -n "---|---|"; done)"
    for id in lt-tar ctrd-none; do
      echo -n "| $(tl "$id") | ${DIGESTS[$id]} |"
      for s in "${SETS[@]}"; do
        [[ " ${SCOPE[$s]} " == *" nochange "* ]] || continue
        echo -n " $(time_cell "$s" nochange "$id") | $(size_cell "$s" nochange "$id") |"
      done
      echo
    done
    echo
  fi

  echo "## Checks of the outputs (round 1, untimed)"
  echo
  echo "Every output is listed with GNU tar (\`tar -tzf\`, \`tar --zstd -tf\` or \`tar -tf\`); for the tools"
  echo "that report digests, the blob digest (sha256 of the file) and the diffID (sha256 of the"
  echo "uncompressed tar) are recomputed and looked up in what the tool printed (umoci: in the new manifest"
  echo "and config). Entries: the number of lines \`tar -t\` lists (layertool and tar list \`./\`, containerd and umoci do not)."
  echo
  echo "| set | scenario | tool | entries | check |"
  echo "|---|---|---|---|---|"
  for s in "${SETS[@]}"; do for sc in ${SCOPE[$s]}; do for id in "${TOOLS[@]}"; do
    [ -n "${CHK[$s,$sc,$id]:-}" ] || continue
    echo "| $s | ${SCEN_LABEL[$sc]} | $(tl "$id") | ${ENT[$s,$sc,$id]} | ${CHK[$s,$sc,$id]} |"
  done; done; done
  echo

  local notes=0
  for s in "${SETS[@]}"; do for sc in ${SCOPE[$s]}; do for id in "${TOOLS[@]}"; do
    if [ -n "${FAIL[$s,$sc,$id]:-}" ] || [ -n "${NOTE[$s,$sc,$id]:-}" ]; then notes=1; fi
    case ${CHK[$s,$sc,$id]:-} in ⚠*) notes=1 ;; esac
  done; done; done
  if [ "$notes" = 1 ]; then
    echo "## Problems"
    echo
    for s in "${SETS[@]}"; do for sc in ${SCOPE[$s]}; do for id in "${TOOLS[@]}"; do
      [ -n "${FAIL[$s,$sc,$id]:-}" ] && echo "- $s / ${SCEN_LABEL[$sc]} / ${LABEL[$id]}: FAILED, ${FAIL[$s,$sc,$id]}"
      [ -n "${NOTE[$s,$sc,$id]:-}" ] && echo "- $s / ${SCEN_LABEL[$sc]} / ${LABEL[$id]}: ⚠ ${NOTE[$s,$sc,$id]}"
      case ${CHK[$s,$sc,$id]:-} in ⚠*) echo "- $s / ${SCEN_LABEL[$sc]} / ${LABEL[$id]}: ${CHK[$s,$sc,$id]}" ;; esac
    done; done; done
    echo
  fi

  echo "## The 5% change"
  echo
  echo "Made once per set, untimed, on a \`cp -a\` of the tree on the scratch fs (and, identically, on the"
  echo "rootfs of the umoci bundle). The tree's regular files are sorted by path (\`find . -type f | LC_ALL=C sort\`)"
  echo "and numbered from 1; file i is modified (the line \`lkbench change <i>\` appended) when i % 20 == 0,"
  echo "deleted when i % 40 == 10, and gets a new sibling \`lkbench-new-<i>.txt\` (40 lines, ~1.2 KB) when"
  echo "i % 200 == 100; a new dir \`lkbench-new-dir/\` with 10 such files is added at the top. Counts:"
  echo
  for s in "${SETS[@]}"; do echo "- $s: ${CHANGE[$s]:-?}"; done
  echo

  print_commands

  echo "## Raw times (seconds, in run order)"
  echo
  echo "| set | scenario | tool | runs | min | median | max |"
  echo "|---|---|---|---|---|---|---|"
  local t list mn mx
  for s in "${SETS[@]}"; do for sc in ${SCOPE[$s]}; do for id in "${TOOLS[@]}"; do
    [ -n "${TIMES[$s,$sc,$id]:-}" ] || continue
    list=; for t in ${TIMES[$s,$sc,$id]}; do list+="$(fmt_s "$t") "; done
    mn=$(printf '%s\n' ${TIMES[$s,$sc,$id]} | sort -n | head -1)
    mx=$(printf '%s\n' ${TIMES[$s,$sc,$id]} | sort -n | tail -1)
    echo "| $s | ${SCEN_LABEL[$sc]} | $(tl "$id") | ${list% } | $(fmt_s "$mn") | $(fmt_s "${MED[$s,$sc,$id]:-0}") | $(fmt_s "$mx") |"
  done; done; done
  echo
  print_versions
}

for s in "${SETS[@]}"; do
  prepare_set "$s"
  bench_set "$s"
  log "[$s] removing the set's scratch material"
  rm -rf -- "$WORK/$s-new2" "$WORK/$s-copy" "$WORK/$s-bundle-full" "$WORK/$s-bundle-pct5"
done
report
