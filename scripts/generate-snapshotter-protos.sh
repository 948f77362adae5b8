#!/usr/bin/env bash
# Regenerates Sources/LayerKitSnapshotter/Generated/ from Sources/LayerKitSnapshotter/Protos/:
# containerd 1.6's snapshots service and containerd.types.Mount, as Swift messages (apple/swift-protobuf's
# protoc-gen-swift) and grpc-swift-2 service code (grpc-swift-protobuf's protoc-gen-grpc-swift-2).
#
# The plugins are built from the package's own dependencies (the versions Package.swift names) in a
# scratch dir of their own, .build-protoc (slow the first time: about 10 minutes on 2 cores);
# protoc and the well-known types (google/protobuf/*.proto) come from Debian's protobuf-compiler
# and libprotobuf-dev. The output is committed: the build never runs this.
set -euo pipefail
cd "$(dirname "$0")/.."
command -v protoc >/dev/null || { echo "protoc not found: apt-get install protobuf-compiler libprotobuf-dev" >&2; exit 1; }
WELL_KNOWN=${WELL_KNOWN:-/usr/include}
[ -f "$WELL_KNOWN/google/protobuf/timestamp.proto" ] || { echo "no $WELL_KNOWN/google/protobuf/timestamp.proto: apt-get install libprotobuf-dev" >&2; exit 1; }

swift build --scratch-path .build-protoc --product protoc-gen-swift
swift build --scratch-path .build-protoc --product protoc-gen-grpc-swift-2
BIN=$(swift build --scratch-path .build-protoc --show-bin-path)

PROTOS=Sources/LayerKitSnapshotter/Protos
OUT=Sources/LayerKitSnapshotter/Generated
rm -rf "$OUT"
mkdir -p "$OUT"
FILES=(containerd/types/mount.proto containerd/services/snapshots/v1/snapshots.proto)
protoc --proto_path="$PROTOS" --proto_path="$WELL_KNOWN" \
  --plugin=protoc-gen-swift="$BIN/protoc-gen-swift" \
  --swift_out="$OUT" --swift_opt=Visibility=Public --swift_opt=FileNaming=PathToUnderscores \
  "${FILES[@]}"
protoc --proto_path="$PROTOS" --proto_path="$WELL_KNOWN" \
  --plugin=protoc-gen-grpc-swift-2="$BIN/protoc-gen-grpc-swift-2" \
  --grpc-swift-2_out="$OUT" --grpc-swift-2_opt=Visibility=Public,Server=true,Client=true,FileNaming=PathToUnderscores \
  containerd/services/snapshots/v1/snapshots.proto
echo "generated: $(ls "$OUT" | tr '\n' ' ')"
