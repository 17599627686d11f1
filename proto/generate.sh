#!/bin/sh
# Regenerate netkit/netkit_pb2.py from proto/netkit.proto (run from anywhere).
set -e
cd "$(dirname "$0")/.."
python -m grpc_tools.protoc -Iproto --python_out=netkit proto/netkit.proto
