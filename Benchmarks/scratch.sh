# Shared by compare.sh and compare-diff.sh (sourced, not run): the cleanup trap and the scratch
# file system (optional loop mount of a journaled ext4 image, and the refusal of an ext4 without
# a journal). Expects PROG, die, log, MOUNT_IMAGE, IMAGE_SIZE, SCRATCH and ALLOW_UNJOURNALED; sets
# WORK, MNT, MOUNTED, SCRATCH, SCR_SRC, SCR_FS, SCR_TARGET and SCR_JOURNAL.
# ------------------------------------------------------------------ cleanup
WORK=
MNT=
MOUNTED=0
cleanup() {
  local rc=$?
  trap - EXIT INT TERM HUP
  if [ -n "$WORK" ] && [ -d "$WORK" ]; then
    rm -rf -- "$WORK" || echo "$PROG: could not remove $WORK" >&2
  fi
  if [ "$MOUNTED" = 1 ]; then
    sync
    umount -- "$MNT" 2>/dev/null || umount -l -- "$MNT" || echo "$PROG: could not unmount $MNT" >&2
    rmdir -- "$MNT" 2>/dev/null || true
  fi
  exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM
trap 'exit 129' HUP

# ------------------------------------------------------------------ scratch
if [ -n "$MOUNT_IMAGE" ]; then
  [ "$(id -u)" = 0 ] || die "--mount-image needs root"
  if [ ! -e "$MOUNT_IMAGE" ]; then
    log "creating $IMAGE_SIZE journaled ext4 image $MOUNT_IMAGE"
    truncate -s "$IMAGE_SIZE" -- "$MOUNT_IMAGE"
    mkfs.ext4 -q -F -- "$MOUNT_IMAGE"
  fi
  MNT=$(mktemp -d "${TMPDIR:-/tmp}/lkbench-mnt.XXXXXX")
  mount -o loop -- "$MOUNT_IMAGE" "$MNT" || { rmdir -- "$MNT"; MNT=; die "could not loop-mount $MOUNT_IMAGE"; }
  MOUNTED=1
  SCRATCH=$MNT
fi
[ -d "$SCRATCH" ] || die "scratch dir $SCRATCH does not exist (see Benchmarks/README.md: loop-mount a journaled ext4 there, or use --mount-image)"
SCRATCH=$(readlink -f -- "$SCRATCH")
[ -w "$SCRATCH" ] || die "scratch dir $SCRATCH is not writable"

SCR_SRC=$(findmnt -n -o SOURCE -T "$SCRATCH" 2>/dev/null || echo '?')
SCR_FS=$(findmnt -n -o FSTYPE -T "$SCRATCH" 2>/dev/null || echo '?')
SCR_TARGET=$(findmnt -n -o TARGET -T "$SCRATCH" 2>/dev/null || echo '?')
SCR_JOURNAL=unknown
case $SCR_FS in
  ext4|ext3)
    dev=$(basename -- "$(readlink -f -- "$SCR_SRC" 2>/dev/null || echo "$SCR_SRC")")
    if compgen -G "/proc/fs/jbd2/$dev-*" >/dev/null; then SCR_JOURNAL=yes
    elif [ -d "/proc/fs/ext4/$dev" ]; then SCR_JOURNAL=no; fi ;;
  xfs|btrfs|f2fs) SCR_JOURNAL="n/a ($SCR_FS)" ;;
esac
if [ "$SCR_JOURNAL" = no ]; then
  if [ "$ALLOW_UNJOURNALED" = 1 ]; then
    log "WARNING: $SCRATCH is on ext4 without a journal; results will be skewed (--allow-unjournaled)"
  else
    die "$SCRATCH is on ext4 WITHOUT a journal ($SCR_SRC): timings there measure ext4's walk over recently freed inodes, not the tool being timed. Use a journaled scratch (see Benchmarks/README.md) or --allow-unjournaled"
  fi
fi

