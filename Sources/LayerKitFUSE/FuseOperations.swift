import CFuse
import LayerKit
#if canImport(Glibc)
import Glibc
#endif

@inline(__always)
fileprivate func server(_ req: fuse_req_t?) -> FuseUnionServer {
    Unmanaged<FuseUnionServer>.fromOpaque(fuse_req_userdata(req)!).takeUnretainedValue()
}

@inline(__always)
fileprivate func bytes(_ name: UnsafePointer<CChar>?) -> [UInt8] {
    guard let name else { return [] }
    return Array(UnsafeRawBufferPointer(start: name, count: strlen(name)))
}

fileprivate func caller(_ req: fuse_req_t?) -> UnionCaller {
    guard let ctx = fuse_req_ctx(req) else { return .current }
    return UnionCaller(uid: ctx.pointee.uid, gid: ctx.pointee.gid)
}

fileprivate func replyEntry(_ req: fuse_req_t?, _ st: stat, _ timeout: Double) {
    var e = fuse_entry_param()
    e.ino = fuse_ino_t(st.st_ino)
    e.generation = 1
    e.attr = st
    e.attr_timeout = timeout
    e.entry_timeout = timeout
    fuse_reply_entry(req, &e)
}

/// Runs `body`; a thrown UnionError is the reply.
@inline(__always)
fileprivate func answer(_ req: fuse_req_t?, _ body: () throws(UnionError) -> Void) {
    do throws(UnionError) { try body() } catch { fuse_reply_err(req, error.errno) }
}

/// The libfuse low-level callbacks: each finds the server through the request's userdata, calls
/// the union and replies; a `UnionError` becomes its errno.
enum FuseOperations {
    static func table() -> fuse_lowlevel_ops {
        var ops = fuse_lowlevel_ops()

        ops.`init` = { userdata, conn in
            guard let conn else { return }
            // No FUSE_CAP_SPLICE_READ: write data arrives in memory, so a short write can be told apart.
            let want: UInt32 = UInt32(FUSE_CAP_SPLICE_WRITE | FUSE_CAP_SPLICE_MOVE
                                      | FUSE_CAP_READDIRPLUS | FUSE_CAP_PARALLEL_DIROPS | FUSE_CAP_ASYNC_READ
                                      | FUSE_CAP_ATOMIC_O_TRUNC)
            conn.pointee.want |= conn.pointee.capable & want
            // Writeback caching: the kernel gathers small writes into page-sized ones and keeps
            // size and times itself, sending them with setattr. Correct here because the union is
            // the only writer of its upper; open and create adjust their flags for it
            // (FuseUnionServer.backingFlags), and a failed write-back is answered with its error.
            let s = Unmanaged<FuseUnionServer>.fromOpaque(userdata!).takeUnretainedValue()
            if s.options.writebackCache && conn.pointee.capable & UInt32(FUSE_CAP_WRITEBACK_CACHE) != 0 {
                conn.pointee.want |= UInt32(FUSE_CAP_WRITEBACK_CACHE)
                s.writebackEnabled = true
            }
            conn.pointee.want &= ~UInt32(FUSE_CAP_READDIRPLUS_AUTO)
            conn.pointee.max_write = 1 << 20
            conn.pointee.max_readahead = 1 << 20
            conn.pointee.max_background = 64
            conn.pointee.congestion_threshold = 48
        }

        ops.lookup = { req, parent, name in
            let s = server(req)
            do throws(UnionError) {
                replyEntry(req, try s.union.lookup(parent: parent, name: bytes(name)), s.options.cacheTimeout)
            } catch {
                if error.errno == ENOENT {
                    // A negative entry the kernel may cache: nothing but this union creates names.
                    var e = fuse_entry_param()
                    e.entry_timeout = s.options.cacheTimeout
                    fuse_reply_entry(req, &e)
                } else {
                    fuse_reply_err(req, error.errno)
                }
            }
        }

        ops.forget = { req, ino, count in
            server(req).union.forget(ino, count: count)
            fuse_reply_none(req)
        }

        ops.forget_multi = { req, count, items in
            let s = server(req)
            if let items { for i in 0..<count { s.union.forget(items[i].ino, count: items[i].nlookup) } }
            fuse_reply_none(req)
        }

        ops.getattr = { req, ino, _ in
            let s = server(req)
            answer(req) { () throws(UnionError) in
                var st = try s.union.attributes(ino)
                fuse_reply_attr(req, &st, s.options.cacheTimeout)
            }
        }

        ops.setattr = { req, ino, attr, toSet, fi in
            let s = server(req)
            guard let attr else { fuse_reply_err(req, EINVAL); return }
            var change = UnionAttributeChange()
            let set = toSet
            if set & FUSE_SET_ATTR_MODE != 0 { change.mode = attr.pointee.st_mode }
            if set & FUSE_SET_ATTR_UID != 0 { change.uid = attr.pointee.st_uid }
            if set & FUSE_SET_ATTR_GID != 0 { change.gid = attr.pointee.st_gid }
            if set & FUSE_SET_ATTR_SIZE != 0 { change.size = Int64(attr.pointee.st_size) }
            let now = timespec(tv_sec: 0, tv_nsec: Int((1 << 30) - 1))  // UTIME_NOW
            if set & FUSE_SET_ATTR_ATIME_NOW != 0 { change.accessTime = now }
            else if set & FUSE_SET_ATTR_ATIME != 0 { change.accessTime = attr.pointee.st_atim }
            if set & FUSE_SET_ATTR_MTIME_NOW != 0 { change.modificationTime = now }
            else if set & FUSE_SET_ATTR_MTIME != 0 { change.modificationTime = attr.pointee.st_mtim }
            let fd = fi.map { FuseFileHandle.borrow($0.pointee.fh).fd }
            answer(req) { () throws(UnionError) in
                var st = try s.union.setAttributes(ino, change, fd: fd)
                fuse_reply_attr(req, &st, s.options.cacheTimeout)
            }
        }

        ops.readlink = { req, ino in
            answer(req) { () throws(UnionError) in
                let target = try server(req).union.readLink(ino)
                _ = (target + [0]).withUnsafeBufferPointer { p in
                    p.withMemoryRebound(to: CChar.self) { fuse_reply_readlink(req, $0.baseAddress) }
                }
            }
        }

        ops.mknod = { req, parent, name, mode, rdev in
            let s = server(req)
            answer(req) { () throws(UnionError) in
                let st = try s.union.makeNode(parent: parent, name: bytes(name), mode: mode, device: rdev, caller: caller(req))
                replyEntry(req, st, s.options.cacheTimeout)
            }
        }

        ops.mkdir = { req, parent, name, mode in
            let s = server(req)
            answer(req) { () throws(UnionError) in
                let st = try s.union.makeDirectory(parent: parent, name: bytes(name), mode: mode, caller: caller(req))
                replyEntry(req, st, s.options.cacheTimeout)
            }
        }

        ops.symlink = { req, target, parent, name in
            let s = server(req)
            answer(req) { () throws(UnionError) in
                let st = try s.union.makeSymlink(parent: parent, name: bytes(name), target: bytes(target), caller: caller(req))
                replyEntry(req, st, s.options.cacheTimeout)
            }
        }

        ops.link = { req, ino, newParent, newName in
            let s = server(req)
            answer(req) { () throws(UnionError) in
                let st = try s.union.link(ino, newParent: newParent, newName: bytes(newName))
                replyEntry(req, st, s.options.cacheTimeout)
            }
        }

        ops.unlink = { req, parent, name in
            answer(req) { () throws(UnionError) in
                try server(req).union.unlink(parent: parent, name: bytes(name))
                fuse_reply_err(req, 0)
            }
        }

        ops.rmdir = { req, parent, name in
            answer(req) { () throws(UnionError) in
                try server(req).union.removeDirectory(parent: parent, name: bytes(name))
                fuse_reply_err(req, 0)
            }
        }

        ops.rename = { req, parent, name, newParent, newName, flags in
            answer(req) { () throws(UnionError) in
                try server(req).union.rename(parent: parent, name: bytes(name), newParent: newParent, newName: bytes(newName), flags: flags)
                fuse_reply_err(req, 0)
            }
        }

        ops.open = { req, ino, fi in
            guard let fi else { fuse_reply_err(req, EINVAL); return }
            answer(req) { () throws(UnionError) in
                let s = server(req)
                let (fd, inUpper) = try s.union.openFile(ino, flags: s.backingFlags(fi.pointee.flags))
                fi.pointee.fh = FuseFileHandle(fd: fd, inUpper: inUpper).retainedFH()
                // Page cache stays valid across opens: every change to the file goes through this mount.
                lkf_set_keep_cache(fi, 1)
                if fuse_reply_open(req, fi) != 0 { _ = FuseFileHandle.take(fi.pointee.fh) }
            }
        }

        ops.create = { req, parent, name, mode, fi in
            guard let fi else { fuse_reply_err(req, EINVAL); return }
            let s = server(req)
            answer(req) { () throws(UnionError) in
                let (st, fd) = try s.union.create(parent: parent, name: bytes(name), mode: mode, flags: s.backingFlags(fi.pointee.flags), caller: caller(req))
                fi.pointee.fh = FuseFileHandle(fd: fd).retainedFH()
                lkf_set_keep_cache(fi, 1)
                var e = fuse_entry_param()
                e.ino = fuse_ino_t(st.st_ino)
                e.generation = 1
                e.attr = st
                e.attr_timeout = s.options.cacheTimeout
                e.entry_timeout = s.options.cacheTimeout
                if fuse_reply_create(req, &e, fi) != 0 { _ = FuseFileHandle.take(fi.pointee.fh) }
            }
        }

        ops.read = { req, ino, size, offset, fi in
            guard let fi else { fuse_reply_err(req, EBADF); return }
            let fd = FuseFileHandle.borrow(fi.pointee.fh).readFD(server(req).union, ino)
            _ = lkf_reply_fd_data(req, fd, size, offset)
        }

        ops.write_buf = { req, _, bufv, offset, fi in
            guard let fi, let bufv else { fuse_reply_err(req, EBADF); return }
            lkf_write_buf(req, bufv, FuseFileHandle.borrow(fi.pointee.fh).fd, offset, fi.pointee.writepage != 0 ? 1 : 0)
        }

        ops.flush = { req, _, _ in fuse_reply_err(req, 0) }

        // Handles open for writing are on the upper (copied up at open).
        ops.fallocate = { req, _, mode, offset, length, fi in
            guard let fi else { fuse_reply_err(req, EBADF); return }
            fuse_reply_err(req, lkf_fallocate(FuseFileHandle.borrow(fi.pointee.fh).fd, mode, offset, length))
        }

        // SEEK_DATA/SEEK_HOLE answered by the backing file: sparse-aware readers keep the holes.
        ops.lseek = { req, ino, offset, whence, fi in
            guard let fi else { fuse_reply_err(req, EBADF); return }
            let position = lseek(FuseFileHandle.borrow(fi.pointee.fh).readFD(server(req).union, ino), offset, whence)
            if position < 0 { fuse_reply_err(req, errno) } else { fuse_reply_lseek(req, position) }
        }

        ops.release = { req, _, fi in
            if let fi { _ = FuseFileHandle.take(fi.pointee.fh) }
            fuse_reply_err(req, 0)
        }

        ops.fsync = { req, _, dataOnly, fi in
            guard let fi else { fuse_reply_err(req, EBADF); return }
            let fd = FuseFileHandle.borrow(fi.pointee.fh).fd
            let rc = dataOnly != 0 ? fdatasync(fd) : fsync(fd)
            fuse_reply_err(req, rc == 0 ? 0 : errno)
        }

        ops.opendir = { req, ino, fi in
            guard let fi else { fuse_reply_err(req, EINVAL); return }
            answer(req) { () throws(UnionError) in
                let entries = try server(req).union.readDirectory(ino)
                let dot = UnionDirectoryEntry(name: [UInt8(ascii: ".")], type: UInt8(DT_DIR))
                let dotdot = UnionDirectoryEntry(name: [UInt8(ascii: "."), UInt8(ascii: ".")], type: UInt8(DT_DIR))
                fi.pointee.fh = FuseDirectoryHandle(ino: ino, entries: [dot, dotdot] + entries).retainedFH()
                if fuse_reply_open(req, fi) != 0 { _ = FuseDirectoryHandle.take(fi.pointee.fh) }
            }
        }

        ops.readdir = { req, ino, size, offset, fi in
            guard let fi else { fuse_reply_err(req, EBADF); return }
            let s = server(req)
            let handle = FuseDirectoryHandle.borrow(fi.pointee.fh)
            var buffer = [CChar](repeating: 0, count: size)
            var used = 0
            var index = Int(offset)
            while index < handle.entries.count {
                let entry = handle.entries[index]
                var st = stat()
                st.st_mode = mode_t(entry.type) << 12
                st.st_ino = ino_t((try? s.union.peekInode(parent: ino, name: entry.name)) ?? UInt64(0xffff_ffff))
                let needed = (entry.name + [0]).withUnsafeBufferPointer { name in
                    name.withMemoryRebound(to: CChar.self) { n in
                        buffer.withUnsafeMutableBufferPointer { fuse_add_direntry(req, $0.baseAddress! + used, size - used, n.baseAddress, &st, off_t(index + 1)) }
                    }
                }
                if needed > size - used { break }
                used += needed
                index += 1
            }
            fuse_reply_buf(req, buffer, used)
        }

        ops.readdirplus = { req, ino, size, offset, fi in
            guard let fi else { fuse_reply_err(req, EBADF); return }
            let s = server(req)
            let handle = FuseDirectoryHandle.borrow(fi.pointee.fh)
            var buffer = [CChar](repeating: 0, count: size)
            var used = 0
            var index = Int(offset)
            while index < handle.entries.count {
                let entry = handle.entries[index]
                var e = fuse_entry_param()
                var looked = false
                if index < 2 {
                    // "." and "..": attributes only; the kernel does not count them as lookups.
                    e.attr.st_mode = mode_t(directoryModeForDots)
                    e.attr.st_ino = ino_t(ino)
                } else {
                    guard let st = try? s.union.lookup(parent: ino, name: entry.name) else {
                        index += 1   // vanished since opendir (a lower dir removed under the mount)
                        continue
                    }
                    e.ino = fuse_ino_t(st.st_ino)
                    e.generation = 1
                    e.attr = st
                    e.attr_timeout = s.options.cacheTimeout
                    e.entry_timeout = s.options.cacheTimeout
                    looked = true
                }
                let needed = (entry.name + [0]).withUnsafeBufferPointer { name in
                    name.withMemoryRebound(to: CChar.self) { n in
                        buffer.withUnsafeMutableBufferPointer { fuse_add_direntry_plus(req, $0.baseAddress! + used, size - used, n.baseAddress, &e, off_t(index + 1)) }
                    }
                }
                if needed > size - used {
                    if looked { s.union.forget(UInt64(e.ino), count: 1) }
                    break
                }
                used += needed
                index += 1
            }
            fuse_reply_buf(req, buffer, used)
        }

        ops.releasedir = { req, _, fi in
            if let fi { _ = FuseDirectoryHandle.take(fi.pointee.fh) }
            fuse_reply_err(req, 0)
        }

        ops.fsyncdir = { req, _, _, _ in fuse_reply_err(req, 0) }

        ops.statfs = { req, _ in
            answer(req) { () throws(UnionError) in
                var sv = try server(req).union.statistics()
                fuse_reply_statfs(req, &sv)
            }
        }

        ops.setxattr = { req, ino, name, value, size, flags in
            guard let name else { fuse_reply_err(req, EINVAL); return }
            let bytes = value.map { Array(UnsafeRawBufferPointer(start: $0, count: size)) } ?? []
            answer(req) { () throws(UnionError) in
                try server(req).union.setXattr(ino, name: String(cString: name), value: bytes, flags: flags)
                fuse_reply_err(req, 0)
            }
        }

        ops.getxattr = { req, ino, name, size in
            guard let name else { fuse_reply_err(req, EINVAL); return }
            answer(req) { () throws(UnionError) in
                let value = try server(req).union.getXattr(ino, name: String(cString: name))
                if size == 0 { fuse_reply_xattr(req, value.count) }
                else if size < value.count { fuse_reply_err(req, ERANGE) }
                else { value.withUnsafeBytes { _ = fuse_reply_buf(req, $0.baseAddress?.assumingMemoryBound(to: CChar.self), value.count) } }
            }
        }

        ops.listxattr = { req, ino, size in
            answer(req) { () throws(UnionError) in
                var list: [UInt8] = []
                for name in try server(req).union.listXattrs(ino) { list += Array(name.utf8) + [0] }
                if size == 0 { fuse_reply_xattr(req, list.count) }
                else if size < list.count { fuse_reply_err(req, ERANGE) }
                else { list.withUnsafeBytes { _ = fuse_reply_buf(req, $0.baseAddress?.assumingMemoryBound(to: CChar.self), list.count) } }
            }
        }

        ops.removexattr = { req, ino, name in
            guard let name else { fuse_reply_err(req, EINVAL); return }
            answer(req) { () throws(UnionError) in
                try server(req).union.removeXattr(ino, name: String(cString: name))
                fuse_reply_err(req, 0)
            }
        }

        return ops
    }
}

private let directoryModeForDots = 0o040755
