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
    long rc = syscall(SYS_openat2, dirfd, path, &how, sizeof(how));
    return (int)rc;
}

int lk_renameat2(int olddirfd, const char *oldpath, int newdirfd, const char *newpath, unsigned int flags) {
    return (int)syscall(SYS_renameat2, olddirfd, oldpath, newdirfd, newpath, flags);
}

uint64_t lk_makedev(uint32_t ma, uint32_t mi) { return makedev(ma, mi); }
uint32_t lk_major(uint64_t dev) { return major(dev); }
uint32_t lk_minor(uint64_t dev) { return minor(dev); }
long lk_utime_omit(void) { return UTIME_OMIT; }

ssize_t lk_copy_file_range(int fd_in, int fd_out, size_t len) {
    return copy_file_range(fd_in, NULL, fd_out, NULL, len, 0);
}

void archive_set_error(struct archive *, int, const char *, ...);

void lk_archive_set_error(struct archive *a, int code, const char *message) {
    archive_set_error(a, code, "%s", message);
}

int lk_syncfs(int fd) { return syncfs(fd); }
