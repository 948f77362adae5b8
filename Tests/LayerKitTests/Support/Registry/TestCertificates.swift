import Foundation
import Testing
#if canImport(Glibc)
import Glibc
#endif

/// A test CA and certificates signed by it, made with openssl.
struct TestCertificates {
    let dir: String
    var caCert: String { dir + "/ca.crt" }
    var serverCert: String { dir + "/server.crt" }
    var serverKey: String { dir + "/server.key" }
    var clientCert: String { dir + "/client.cert" }
    var clientKey: String { dir + "/client.key" }

    init(in dir: String) throws {
        self.dir = dir
        let openssl = try requireTool("openssl")
        func ssl(_ args: [String]) throws {
            let r = try run(openssl, args)
            try #require(r.status == 0, "openssl \(args.first ?? ""): \(r.stderr)")
        }
        try ssl(["req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes", "-days", "2",
                 "-subj", "/CN=LayerKit test CA", "-keyout", dir + "/ca.key", "-out", caCert])
        try RegistryTools.write("subjectAltName=IP:127.0.0.1,DNS:localhost\nextendedKeyUsage=serverAuth\n", to: dir + "/server.ext")
        try ssl(["req", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes", "-subj", "/CN=127.0.0.1",
                 "-keyout", serverKey, "-out", dir + "/server.csr"])
        try ssl(["x509", "-req", "-in", dir + "/server.csr", "-CA", caCert, "-CAkey", dir + "/ca.key", "-CAcreateserial",
                 "-days", "2", "-extfile", dir + "/server.ext", "-out", serverCert])
        try RegistryTools.write("extendedKeyUsage=clientAuth\n", to: dir + "/client.ext")
        try ssl(["req", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes", "-subj", "/CN=layertool test client",
                 "-keyout", clientKey, "-out", dir + "/client.csr"])
        try ssl(["x509", "-req", "-in", dir + "/client.csr", "-CA", caCert, "-CAkey", dir + "/ca.key", "-CAcreateserial",
                 "-days", "2", "-extfile", dir + "/client.ext", "-out", clientCert])
    }
}
