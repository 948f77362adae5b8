// Calls the fuzz harness needs that Swift's Glibc module does not import.
#pragma once
#include <sys/types.h>
#include <stddef.h>

/// unshare(CLONE_NEWNS), then / made private (recursively): mounts made after it stay in this process.
int fuzz_private_mount_namespace(void);
/// mount(2) of a tmpfs with nodev,nosuid and `options`.
int fuzz_mount_tmpfs(const char *target, const char *options);
int fuzz_setxattr(const char *path, const char *name, const void *value, size_t size);
int fuzz_lsetxattr(const char *path, const char *name, const void *value, size_t size);
ssize_t fuzz_llistxattr(const char *path, char *list, size_t size);
ssize_t fuzz_lgetxattr(const char *path, const char *name, void *value, size_t size);
dev_t fuzz_makedev(unsigned int major, unsigned int minor);
