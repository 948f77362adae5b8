import Foundation
import Testing
#if canImport(Glibc)
import Glibc
#endif

/// An HTTP proxy in front of a plain-HTTP registry that injects faults: each rule applies to
/// requests whose method and path match, a given number of times. Every request is logged.
final class FaultProxy: @unchecked Sendable {
    enum Fault: Sendable {
        /// Answer this status (no body) without asking the registry.
        case status(Int, headers: [(String, String)] = [])
        /// Answer this instead of the registry.
        case respond(Int, headers: [(String, String)], body: [UInt8])
        /// Forward the head and this many body bytes, then close the connection.
        case dropAfter(Int)
        /// Forward everything, with the body byte at this offset flipped.
        case corrupt(at: Int)
        /// Forward the head and this many body bytes, then send nothing more (until the client
        /// goes away, or 30 s).
        case stallAfter(Int)
        /// Forward without the request's Range header (a server that ignores Range).
        case ignoreRange
    }
    struct Rule: Sendable {
        var method: String
        var pathContains: String
        var fault: Fault
        var remaining: Int
    }
    struct Logged: Sendable {
        var method: String
        var target: String
        var range: String?
        var authorization: Bool
    }

    let upstreamPort: Int
    private var server: LoopbackServer!
    private let lock = NSLock()
    private var rules = [Rule]()
    private var log = [Logged]()
    private var stalls = 0
    var port: Int { server.port }

    /// Whether a `stallAfter` fault has started holding a response back.
    var stalled: Bool {
        lock.lock()
        defer { lock.unlock() }
        return stalls > 0
    }
    var host: String { "127.0.0.1:\(port)" }

    init(upstreamPort: Int) throws {
        self.upstreamPort = upstreamPort
        server = try LoopbackServer { [unowned self] fd in self.serve(fd) }
    }

    func add(_ method: String, _ pathContains: String, _ fault: Fault, times: Int = 1) {
        lock.lock()
        rules.append(Rule(method: method, pathContains: pathContains, fault: fault, remaining: times))
        lock.unlock()
    }

    func reset() {
        lock.lock()
        rules = []
        log = []
        stalls = 0
        lock.unlock()
    }

    var requests: [Logged] {
        lock.lock()
        defer { lock.unlock() }
        return log
    }

    func stop() { server.stop() }

    private func takeFault(for request: LoopbackServer.Request) -> Fault? {
        lock.lock()
        defer { lock.unlock() }
        log.append(Logged(method: request.method, target: request.target, range: request.header("Range"),
                          authorization: request.header("Authorization") != nil))
        guard let i = rules.firstIndex(where: { $0.method == request.method && request.path.contains($0.pathContains) && $0.remaining > 0 }) else { return nil }
        rules[i].remaining -= 1
        return rules[i].fault
    }

    private func serve(_ client: Int32) {
        while let request = LoopbackServer.readRequest(client) {
            let fault = takeFault(for: request)
            switch fault {
            case .status(let code, let headers):
                LoopbackServer.respond(client, status: code, headers: headers)
                return
            case .respond(let code, let headers, let body):
                LoopbackServer.respond(client, status: code, headers: headers, body: request.method == "HEAD" ? [] : body)
                return
            default:
                forward(request, to: client, fault: fault)
                return
            }
        }
    }

    private func forward(_ request: LoopbackServer.Request, to client: Int32, fault: Fault?) {
        let upstream = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
        defer { close(upstream) }
        var address = sockaddr_in()
        address.sin_family = sa_family_t(AF_INET)
        address.sin_addr.s_addr = inet_addr("127.0.0.1")
        address.sin_port = UInt16(upstreamPort).bigEndian
        guard withUnsafePointer(to: &address, { $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { connect(upstream, $0, socklen_t(MemoryLayout<sockaddr_in>.size)) } }) == 0 else {
            LoopbackServer.respond(client, status: 502)
            return
        }
        var head = "\(request.method) \(request.target) HTTP/1.1\r\n"
        var dropped: Set<String> = ["connection"]
        if case .ignoreRange = fault { dropped.insert("range") }
        for (k, v) in request.headers where !dropped.contains(k.lowercased()) { head += "\(k): \(v)\r\n" }
        head += "Connection: close\r\n\r\n"
        LoopbackServer.sendAll(upstream, Array(head.utf8) + request.body)
        guard let (responseHead, firstBody) = LoopbackServer.readHead(upstream) else { return }
        var responseHeadText = responseHead.split(separator: "\r\n", omittingEmptySubsequences: false)
            .filter { !$0.lowercased().hasPrefix("connection:") }.joined(separator: "\r\n")
        responseHeadText += "\r\nConnection: close\r\n\r\n"
        LoopbackServer.sendAll(client, Array(responseHeadText.utf8))
        var sent = 0
        var pending = firstBody
        var buffer = [UInt8](repeating: 0, count: 65536)
        while true {
            if !pending.isEmpty {
                var chunk = pending
                pending = []
                if case .corrupt(let offset) = fault, offset >= sent, offset < sent + chunk.count { chunk[offset - sent] ^= 0xFF }
                if case .stallAfter(let limit) = fault, sent + chunk.count >= limit {
                    LoopbackServer.sendAll(client, Array(chunk[0..<(limit - sent)]))
                    lock.lock()
                    stalls += 1
                    lock.unlock()
                    var descriptor = pollfd(fd: client, events: Int16(POLLIN), revents: 0)
                    _ = poll(&descriptor, 1, 30_000)
                    return
                }
                if case .dropAfter(let limit) = fault, sent + chunk.count >= limit {
                    // The connection ends mid-body (closed in order, so exactly `limit` bytes arrive).
                    LoopbackServer.sendAll(client, Array(chunk[0..<(limit - sent)]))
                    return
                }
                guard LoopbackServer.sendAll(client, chunk) else { return }
                sent += chunk.count
            }
            let n = recv(upstream, &buffer, buffer.count, 0)
            if n <= 0 { return }
            pending = Array(buffer[0..<n])
        }
    }
}
