#!/bin/bash
# Builds, offline and against Debian's containerd 1.6 Go sources (golang-go,
# golang-github-containerd-containerd-dev, golang-github-gotestyourself-gotest.tools-dev):
#   $OUT/conformance.test   containerd's snapshotter conformance suite against `layertool snapshotter`
#   $OUT/snapshotter-tool   a containerd client: pull with containerd's unpacker, stress, crash sequences
#   GOCODE  Debian's Go source tree (default /usr/share/gocode)
#   OUT     output dir (default: a new temp dir, printed)
set -euo pipefail
HERE=$(cd "$(dirname "$0")" && pwd)
GOCODE=${GOCODE:-/usr/share/gocode}
OUT=${OUT:-$(mktemp -d)}
mkdir -p "$OUT"
TMPGOPATH=$(mktemp -d)
trap 'rm -rf "$TMPGOPATH"' EXIT
mkdir -p "$TMPGOPATH/src"
ln -s "$HERE" "$TMPGOPATH/src/layertoolconformance"
export GO111MODULE=off GOPATH="$TMPGOPATH:$GOCODE" GOFLAGS= GOPROXY=off CGO_ENABLED=0
export GOCACHE="${GOCACHE:-$TMPGOPATH/cache}"
cd "$TMPGOPATH/src/layertoolconformance"
go test -c -o "$OUT/conformance.test" .
go build -o "$OUT/snapshotter-tool" ./tool
echo "$OUT"
