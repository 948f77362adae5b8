import Foundation
import Testing
#if canImport(Glibc)
import Glibc
#endif

/// A tiny threaded TCP server on 127.0.0.1 for the test's own HTTP endpoints (the fault proxy and
/// the token server): one thread accepts, one thread per connection runs `handle`.
final class LoopbackServer: @unchecked Sendable {
    let port: Int
    private let listener: Int32
    private let handle: @Sendable (Int32) -> Void
    private let stopped = DispatchSemaphore(value: 0)

    init(handle: @escaping @Sendable (Int32) -> Void) throws {
        self.handle = handle
        let listener = socket(AF_INET, Int32(SOCK_STREAM.rawValue) | Int32(SOCK_CLOEXEC.rawValue), 0)
        self.listener = listener
        var one: Int32 = 1
        setsockopt(listener, SOL_SOCKET, SO_REUSEADDR, &one, socklen_t(MemoryLayout<Int32>.size))
        var address = sockaddr_in()
        address.sin_family = sa_family_t(AF_INET)
        address.sin_addr.s_addr = inet_addr("127.0.0.1")
        address.sin_port = 0
        let bound = withUnsafePointer(to: &address) { $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { bind(listener, $0, socklen_t(MemoryLayout<sockaddr_in>.size)) } }
        guard bound == 0, listen(listener, 64) == 0 else { close(listener); throw RegistryTestError("cannot listen") }
        let stopped = self.stopped
        var length = socklen_t(MemoryLayout<sockaddr_in>.size)
        _ = withUnsafeMutablePointer(to: &address) { $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { getsockname(listener, $0, &length) } }
        port = Int(UInt16(bigEndian: address.sin_port))
        let thread = Thread {
            while true {
                let connection = accept(listener, nil, nil)
                if connection < 0 {
                    if errno == EINTR { continue }
                    break
                }
                let worker = Thread {
                    handle(connection)
                    close(connection)
                }
                worker.start()
            }
            stopped.signal()
        }
        thread.start()
    }

    func stop() {
        shutdown(listener, Int32(SHUT_RDWR))
        close(listener)
        stopped.wait()
    }

    // MARK: HTTP/1.1 bits

    struct Request {
        var method: String
        var target: String
        var headers: [(String, String)]
        var body: [UInt8]
        func header(_ name: String) -> String? { headers.first { $0.0.lowercased() == name.lowercased() }?.1 }
        var path: String { String(target.prefix { $0 != "?" }) }
        var query: [(String, String)] {
            guard let q = target.firstIndex(of: "?") else { return [] }
            return target[target.index(after: q)...].split(separator: "&").map { pair in
                let parts = pair.split(separator: "=", maxSplits: 1).map { String($0).removingPercentEncoding ?? String($0) }
                return (parts[0], parts.count > 1 ? parts[1] : "")
            }
        }
    }

    /// Reads one request (head and Content-Length body); nil at EOF or on garbage.
    static func readRequest(_ fd: Int32) -> Request? {
        guard let (head, rest) = readHead(fd) else { return nil }
        let lines = head.split(separator: "\r\n", omittingEmptySubsequences: false).map(String.init)
        let first = lines[0].split(separator: " ")
        guard first.count >= 2 else { return nil }
        var headers = [(String, String)]()
        for line in lines.dropFirst() where !line.isEmpty {
            guard let colon = line.firstIndex(of: ":") else { continue }
            headers.append((String(line[..<colon]), line[line.index(after: colon)...].trimmingCharacters(in: .whitespaces)))
        }
        var request = Request(method: String(first[0]), target: String(first[1]), headers: headers, body: rest)
        let length = Int(request.header("Content-Length") ?? "0") ?? 0
        while request.body.count < length {
            var buffer = [UInt8](repeating: 0, count: 65536)
            let n = recv(fd, &buffer, buffer.count, 0)
            if n <= 0 { return nil }
            request.body += buffer[0..<n]
        }
        return request
    }

    /// Reads up to the end of an HTTP head; returns the head text and the bytes after it.
    static func readHead(_ fd: Int32) -> (String, [UInt8])? {
        var data = [UInt8]()
        var buffer = [UInt8](repeating: 0, count: 65536)
        while true {
            if let end = find([13, 10, 13, 10], in: data) {
                return (String(decoding: data[..<end], as: UTF8.self), Array(data[(end + 4)...]))
            }
            guard data.count < 1 << 20 else { return nil }
            let n = recv(fd, &buffer, buffer.count, 0)
            if n <= 0 { return nil }
            data += buffer[0..<n]
        }
    }

    static func find(_ needle: [UInt8], in haystack: [UInt8]) -> Int? {
        guard haystack.count >= needle.count else { return nil }
        for i in 0...(haystack.count - needle.count) where haystack[i] == needle[0] && Array(haystack[i..<(i + needle.count)]) == needle { return i }
        return nil
    }

    @discardableResult
    static func sendAll(_ fd: Int32, _ bytes: [UInt8]) -> Bool {
        var done = 0
        while done < bytes.count {
            let n = bytes.withUnsafeBytes { send(fd, $0.baseAddress! + done, bytes.count - done, Int32(MSG_NOSIGNAL)) }
            if n <= 0 { return false }
            done += n
        }
        return true
    }

    static func respond(_ fd: Int32, status: Int, reason: String = "", headers: [(String, String)] = [], body: [UInt8] = []) {
        var head = "HTTP/1.1 \(status) \(reason.isEmpty ? "Status" : reason)\r\n"
        for (k, v) in headers { head += "\(k): \(v)\r\n" }
        head += "Content-Length: \(body.count)\r\nConnection: close\r\n\r\n"
        sendAll(fd, Array(head.utf8) + body)
    }
}
