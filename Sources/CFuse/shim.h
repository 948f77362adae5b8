#ifndef LAYERKIT_CFUSE_SHIM_H
#define LAYERKIT_CFUSE_SHIM_H

// libfuse3's low-level API at the 3.12 level (fuse_loop_config objects), and the few macros and
// struct initialisers Swift cannot use, as small inline functions.
#define FUSE_USE_VERSION 312
#include <fuse_lowlevel.h>
#include <errno.h>
#include <stddef.h>
#include <sys/stat.h>
#include <unistd.h>
#include <sys/syscall.h>

/// Runs the multi-threaded loop with at most `max_threads` workers, of which at most
/// `idle_threads` wait for requests (more are started under load and end when it passes).
static inline int lkf_session_loop_mt(struct fuse_session *se, unsigned int max_threads, unsigned int idle_threads) {
    struct fuse_loop_config *config = fuse_loop_cfg_create();
    if (config == NULL) return -ENOMEM;
    fuse_loop_cfg_set_max_threads(config, max_threads);
    fuse_loop_cfg_set_idle_threads(config, idle_threads);
    fuse_loop_cfg_set_clone_fd(config, 0);
    int rc = fuse_session_loop_mt(se, config);
    fuse_loop_cfg_destroy(config);
    return rc;
}

/// Answers a read with `size` bytes of `fd` at `offset`, spliced from the file into the device
/// when the kernel allows it (no copy through user space).
static inline int lkf_reply_fd_data(fuse_req_t req, int fd, size_t size, off_t offset) {
    struct fuse_bufvec buf = FUSE_BUFVEC_INIT(size);
    buf.buf[0].flags = (enum fuse_buf_flags)(FUSE_BUF_IS_FD | FUSE_BUF_FD_SEEK);
    buf.buf[0].fd = fd;
    buf.buf[0].pos = offset;
    return fuse_reply_data(req, &buf, FUSE_BUF_SPLICE_MOVE);
}

/// Writes the request's data to `fd` at `offset` and answers. A short write (a full disk) is
/// answered with its count, which the kernel hands back to the writer, except for a write-back of
/// cached pages (`writepage`): the kernel would take a short count there as success and drop the
/// rest, so it gets the error instead.
static inline void lkf_write_buf(fuse_req_t req, struct fuse_bufvec *in, int fd, off_t offset, int writepage) {
    size_t total = fuse_buf_size(in);
    if (in->count != 1 || (in->buf[0].flags & FUSE_BUF_IS_FD)) {
        struct fuse_bufvec out = FUSE_BUFVEC_INIT(total);
        out.buf[0].flags = (enum fuse_buf_flags)(FUSE_BUF_IS_FD | FUSE_BUF_FD_SEEK);
        out.buf[0].fd = fd;
        out.buf[0].pos = offset;
        ssize_t n = fuse_buf_copy(&out, in, (enum fuse_buf_copy_flags)0);
        if (n < 0) fuse_reply_err(req, (int)-n);
        else if ((size_t)n < total && writepage) fuse_reply_err(req, ENOSPC);
        else fuse_reply_write(req, (size_t)n);
        return;
    }
    const char *data = (const char *)in->buf[0].mem + in->off;
    size_t done = 0;
    while (done < total) {
        ssize_t n = pwrite(fd, data + done, total - done, offset + (off_t)done);
        if (n < 0) {
            if (errno == EINTR) continue;
            if (done == 0 || writepage) { fuse_reply_err(req, errno); return; }
            break;
        }
        if (n == 0) { if (writepage) { fuse_reply_err(req, EIO); return; } break; }
        done += (size_t)n;
    }
    fuse_reply_write(req, done);
}

/// fallocate(2) (a GNU extension, not in Swift's view of glibc): 0 or an errno.
static inline int lkf_fallocate(int fd, int mode, off_t offset, off_t length) {
    return syscall(SYS_fallocate, fd, mode, offset, length) == 0 ? 0 : errno;
}

/// The file-info bits Swift cannot set through the bitfield accessors reliably.
static inline void lkf_set_keep_cache(struct fuse_file_info *fi, int on) { fi->keep_cache = on ? 1 : 0; }
static inline void lkf_set_cache_readdir(struct fuse_file_info *fi, int on) { fi->cache_readdir = on ? 1 : 0; }

#endif
