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

/// openat2(2): returns a file descriptor, or -1 with errno set.
int lk_openat2(int dirfd, const char *path, uint64_t flags, uint64_t mode, uint64_t resolve);

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

/// syncfs(2): writes out everything dirty on the file system holding fd.
int lk_syncfs(int fd);

/// copy_file_range(2) (needs _GNU_SOURCE in the headers).
ssize_t lk_copy_file_range(int fd_in, int fd_out, size_t len);

/// archive_set_error without varargs (Swift cannot call variadic C functions).
void lk_archive_set_error(struct archive *a, int code, const char *message);

#endif
