import LayerKit
#if canImport(Glibc)
import Glibc
#endif

/// A two-layer OCI layout made of uncompressed tars (a file, a symlink, a whiteout, an opaque
/// dir), written by the harness for the store target to import.
public enum TinyImage {
    public static func write(at path: String) {
        TreeRemover.remove(path)
        mkdir(path, 0o755)
        mkdir(path + "/blobs", 0o755)
        mkdir(path + "/blobs/sha256", 0o755)
        var first = TarWriter()
        first.directory("etc")
        first.file("etc/hostname", Array("tiny\n".utf8))
        first.file("etc/gone", Array("gone\n".utf8))
        first.directory("bin")
        first.file("bin/tool", Array("#!/bin/sh\n".utf8), mode: 0o755)
        first.symlink("bin/sh", to: "tool")
        var second = TarWriter()
        second.directory("etc")
        second.file("etc/.wh.gone", [])
        second.directory("bin")
        second.file("bin/.wh..wh..opq", [])
        second.file("bin/new", Array("new\n".utf8))
        let layers = [first.finish(), second.finish()]
        var layerDescriptors = [String]()
        var diffIDs = [String]()
        for layer in layers {
            let digest = blob(layer, in: path)
            layerDescriptors.append(#"{"mediaType":"application/vnd.oci.image.layer.v1.tar","digest":"\#(digest)","size":\#(layer.count)}"#)
            diffIDs.append("\"\(digest)\"")
        }
        let config = Array(#"{"architecture":"amd64","os":"linux","rootfs":{"type":"layers","diff_ids":[\#(diffIDs.joined(separator: ","))]}}"#.utf8)
        let configDigest = blob(config, in: path)
        let manifest = Array(#"{"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json","config":{"mediaType":"application/vnd.oci.image.config.v1+json","digest":"\#(configDigest)","size":\#(config.count)},"layers":[\#(layerDescriptors.joined(separator: ","))]}"#.utf8)
        let manifestDigest = blob(manifest, in: path)
        let index = #"{"schemaVersion":2,"mediaType":"application/vnd.oci.image.index.v1+json","manifests":[{"mediaType":"application/vnd.oci.image.manifest.v1+json","digest":"\#(manifestDigest)","size":\#(manifest.count),"annotations":{"org.opencontainers.image.ref.name":"latest"}}]}"#
        Scratch.write(Array(index.utf8), to: path + "/index.json")
        Scratch.write(Array(#"{"imageLayoutVersion":"1.0.0"}"#.utf8), to: path + "/oci-layout")
    }

    private static func blob(_ bytes: [UInt8], in layout: String) -> Digest {
        let digest = Digest.sha256(of: bytes)
        Scratch.write(bytes, to: layout + "/blobs/sha256/" + digest.hex)
        return digest
    }
}
