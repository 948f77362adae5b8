#ifndef CLAYERSYS_H
#define CLAYERSYS_H

#include <stdint.h>
#include <sys/types.h>
#include <sys/xattr.h>

struct archive;

/// Flags for lk_openat2's `resolve` argument (linux/openat2.h).
#define LK_RESOLVE_NO_XDEV       0x01
#define LK_RESOLVE_NO_MAGICLINKS 0x02
#define LK_RESOLVE_NO_SYMLINKS   0x04
#define LK_RESOLVE_BENEATH       0x08
#define LK_RESOLVE_IN_ROOT       0x10

/// openat2(2): returns a file descriptor, or -1 with errno set. A lookup that raced with a rename
/// elsewhere (EAGAIN) is retried, up to 64 times.
int lk_openat2(int dirfd, const char *path, uint64_t flags, uint64_t mode, uint64_t resolve);

/// listxattrat(2) (Linux 6.13) of `name` in `dirfd`, not following a symlink: the size of the
/// name list, or -1 with errno set (ENOSYS on older kernels).
ssize_t lk_listxattrat(int dirfd, const char *name, char *list, size_t size);

/// renameat2(2) with RENAME_* flags; -1 with errno set on failure.
int lk_renameat2(int olddirfd, const char *oldpath, int newdirfd, const char *newpath, unsigned int flags);

#define LK_RENAME_NOREPLACE 1
#define LK_RENAME_EXCHANGE  2

/// makedev/major/minor are macros in glibc; Swift needs functions.
uint64_t lk_makedev(uint32_t major, uint32_t minor);
uint32_t lk_major(uint64_t dev);
uint32_t lk_minor(uint64_t dev);

/// The file-type bits of a mode (S_IFMT etc. are not importable as typed constants).
#define LK_S_IFMT   0170000
#define LK_S_IFSOCK 0140000
#define LK_S_IFLNK  0120000
#define LK_S_IFREG  0100000
#define LK_S_IFBLK  0060000
#define LK_S_IFDIR  0040000
#define LK_S_IFCHR  0020000
#define LK_S_IFIFO  0010000

/// UTIME_OMIT / UTIME_NOW for utimensat.
long lk_utime_omit(void);

/// O_PATH and AT_EMPTY_PATH (they need _GNU_SOURCE in the headers).
int lk_o_path(void);
int lk_at_empty_path(void);

/// syncfs(2): writes out everything dirty on the file system holding fd.
int lk_syncfs(int fd);

/// copy_file_range(2) (needs _GNU_SOURCE in the headers).
ssize_t lk_copy_file_range(int fd_in, int fd_out, size_t len);
/// copy_file_range(2) at explicit offsets (the fds' own offsets are left alone).
ssize_t lk_copy_file_range_at(int fd_in, long long *off_in, int fd_out, long long *off_out, size_t len);

/// archive_set_error without varargs (Swift cannot call variadic C functions).
void lk_archive_set_error(struct archive *a, int code, const char *message);


// MARK: The mount API (Linux 5.2+; overlayfs's "lowerdir+" needs 6.8+). Glibc's wrappers and
// <linux/mount.h> clash, so these call syscall(2) directly; each returns -1 with errno on failure.

#define LK_FSOPEN_CLOEXEC          0x1
#define LK_FSMOUNT_CLOEXEC         0x1
#define LK_FSCONFIG_SET_FLAG       0
#define LK_FSCONFIG_SET_STRING     1
#define LK_FSCONFIG_CMD_CREATE     6
#define LK_MOUNT_ATTR_RDONLY       0x00000001
#define LK_MOUNT_ATTR_NOSUID       0x00000002
#define LK_MOUNT_ATTR_NODEV        0x00000004
#define LK_MOVE_MOUNT_F_EMPTY_PATH 0x00000004
#define LK_OPEN_TREE_CLONE         1

int lk_fsopen(const char *fsname, unsigned int flags);
int lk_fsconfig(int fsfd, unsigned int cmd, const char *key, const char *value, int aux);
int lk_fsmount(int fsfd, unsigned int flags, unsigned int attr_flags);
int lk_move_mount(int from_dfd, const char *from_path, int to_dfd, const char *to_path, unsigned int flags);
int lk_open_tree(int dfd, const char *path, unsigned int flags);
/// mount_setattr(2) setting `attr_set` on the mount at fd (AT_EMPTY_PATH).
int lk_mount_setattr_fd(int fd, uint64_t attr_set);

/// The mount(2)/umount2(2) flags Swift cannot import from <sys/mount.h>.
#define LK_MS_RDONLY  1
#define LK_MS_NOSUID  2
#define LK_MS_NODEV   4
#define LK_MS_REMOUNT 32
#define LK_MS_BIND    4096
#define LK_MNT_DETACH 2
#define LK_UMOUNT_NOFOLLOW 8

#endif
