#define _GNU_SOURCE
#include "CLayerSys.h"
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/sysmacros.h>
#include <unistd.h>

#ifndef SYS_openat2
#define SYS_openat2 437
#endif

struct lk_open_how {
    uint64_t flags;
    uint64_t mode;
    uint64_t resolve;
};

int lk_openat2(int dirfd, const char *path, uint64_t flags, uint64_t mode, uint64_t resolve) {
    struct lk_open_how how = { .flags = flags, .mode = mode, .resolve = resolve };
    long rc;
    // With RESOLVE_IN_ROOT or RESOLVE_BENEATH the kernel answers EAGAIN when a rename or mount
    // anywhere on the system raced with the lookup: the lookup is simply tried again (bounded).
    int attempts = 0;
    do {
        rc = syscall(SYS_openat2, dirfd, path, &how, sizeof(how));
    } while (rc < 0 && errno == EAGAIN && ++attempts < 64);
    return (int)rc;
}

int lk_renameat2(int olddirfd, const char *oldpath, int newdirfd, const char *newpath, unsigned int flags) {
    return (int)syscall(SYS_renameat2, olddirfd, oldpath, newdirfd, newpath, flags);
}

uint64_t lk_makedev(uint32_t ma, uint32_t mi) { return makedev(ma, mi); }
uint32_t lk_major(uint64_t dev) { return major(dev); }
uint32_t lk_minor(uint64_t dev) { return minor(dev); }
long lk_utime_omit(void) { return UTIME_OMIT; }

int lk_o_path(void) { return O_PATH; }
int lk_at_empty_path(void) { return AT_EMPTY_PATH; }

ssize_t lk_copy_file_range(int fd_in, int fd_out, size_t len) {
    return copy_file_range(fd_in, NULL, fd_out, NULL, len, 0);
}

ssize_t lk_copy_file_range_at(int fd_in, long long *off_in, int fd_out, long long *off_out, size_t len) {
    loff_t in = *off_in, out = *off_out;
    ssize_t n = copy_file_range(fd_in, &in, fd_out, &out, len, 0);
    *off_in = in;
    *off_out = out;
    return n;
}

void archive_set_error(struct archive *, int, const char *, ...);

void lk_archive_set_error(struct archive *a, int code, const char *message) {
    archive_set_error(a, code, "%s", message);
}

int lk_syncfs(int fd) { return syncfs(fd); }

#ifndef SYS_open_tree
#define SYS_open_tree 428
#endif
#ifndef SYS_move_mount
#define SYS_move_mount 429
#endif
#ifndef SYS_fsopen
#define SYS_fsopen 430
#endif
#ifndef SYS_fsconfig
#define SYS_fsconfig 431
#endif
#ifndef SYS_fsmount
#define SYS_fsmount 432
#endif
#ifndef SYS_mount_setattr
#define SYS_mount_setattr 442
#endif

struct lk_mount_attr {
    uint64_t attr_set;
    uint64_t attr_clr;
    uint64_t propagation;
    uint64_t userns_fd;
};

int lk_fsopen(const char *fsname, unsigned int flags) {
    return (int)syscall(SYS_fsopen, fsname, flags);
}

int lk_fsconfig(int fsfd, unsigned int cmd, const char *key, const char *value, int aux) {
    return (int)syscall(SYS_fsconfig, fsfd, cmd, key, value, aux);
}

int lk_fsmount(int fsfd, unsigned int flags, unsigned int attr_flags) {
    return (int)syscall(SYS_fsmount, fsfd, flags, attr_flags);
}

int lk_move_mount(int from_dfd, const char *from_path, int to_dfd, const char *to_path, unsigned int flags) {
    return (int)syscall(SYS_move_mount, from_dfd, from_path, to_dfd, to_path, flags);
}

int lk_open_tree(int dfd, const char *path, unsigned int flags) {
    return (int)syscall(SYS_open_tree, dfd, path, flags | O_CLOEXEC);
}

int lk_mount_setattr_fd(int fd, uint64_t attr_set) {
    struct lk_mount_attr attr = { .attr_set = attr_set };
    return (int)syscall(SYS_mount_setattr, fd, "", AT_EMPTY_PATH, &attr, sizeof(attr));
}

#ifndef SYS_listxattrat
#define SYS_listxattrat 465
#endif

ssize_t lk_listxattrat(int dirfd, const char *name, char *list, size_t size) {
    return (ssize_t)syscall(SYS_listxattrat, dirfd, name, AT_SYMLINK_NOFOLLOW, list, size);
}
