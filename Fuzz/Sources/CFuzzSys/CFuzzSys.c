#define _GNU_SOURCE
#include "CFuzzSys.h"
#include <sched.h>
#include <sys/mount.h>
#include <sys/sysmacros.h>
#include <sys/xattr.h>

int fuzz_private_mount_namespace(void) {
    if (unshare(CLONE_NEWNS) != 0) return -1;
    return mount(NULL, "/", NULL, MS_REC | MS_PRIVATE, NULL);
}

int fuzz_mount_tmpfs(const char *target, const char *options) {
    return mount("tmpfs", target, "tmpfs", MS_NODEV | MS_NOSUID, options);
}

int fuzz_setxattr(const char *path, const char *name, const void *value, size_t size) {
    return setxattr(path, name, value, size, 0);
}

int fuzz_lsetxattr(const char *path, const char *name, const void *value, size_t size) {
    return lsetxattr(path, name, value, size, 0);
}

ssize_t fuzz_llistxattr(const char *path, char *list, size_t size) { return llistxattr(path, list, size); }

ssize_t fuzz_lgetxattr(const char *path, const char *name, void *value, size_t size) {
    return lgetxattr(path, name, value, size);
}

dev_t fuzz_makedev(unsigned int major, unsigned int minor) { return makedev(major, minor); }
