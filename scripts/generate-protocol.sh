#!/usr/bin/env bash
# Regenerates Sources/SyncProtocol/Generated/rapport.pb.swift from Protocol/rapport.proto.
# Needs protoc (Debian: protobuf-compiler) and builds protoc-gen-swift from the swift-protobuf
# dependency. The generated file is committed, so builds and CI never need either tool.
set -euo pipefail
cd "$(dirname "$0")/.."
command -v protoc >/dev/null || { echo "protoc not found: apt-get install protobuf-compiler" >&2; exit 1; }
swift build -c release --product protoc-gen-swift
plugin="$(swift build -c release --show-bin-path)/protoc-gen-swift"
mkdir -p Sources/SyncProtocol/Generated
protoc --plugin=protoc-gen-swift="$plugin" \
    --swift_out=Sources/SyncProtocol/Generated \
    --swift_opt=Visibility=Public \
    --proto_path=Protocol Protocol/rapport.proto
echo "generated Sources/SyncProtocol/Generated/rapport.pb.swift"
