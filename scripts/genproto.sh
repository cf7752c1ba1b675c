#!/bin/sh
# Regenerate the Go code for every .proto file in proto/ with the plugin
# versions pinned as tools in go.mod. Files that define a service also get
# gRPC stubs. Each file's go_package says where its code goes.
set -eu

cd "$(dirname "$0")/.."

go_plugin=$(go tool -n protoc-gen-go)
grpc_plugin=$(go tool -n protoc-gen-go-grpc)
module=$(go list -m)

for f in proto/*.proto; do
	set -- --plugin=protoc-gen-go="$go_plugin" \
		--go_out=. --go_opt=module="$module"
	if grep -q '^service ' "$f"; then
		set -- "$@" --plugin=protoc-gen-go-grpc="$grpc_plugin" \
			--go-grpc_out=. --go-grpc_opt=module="$module"
	fi
	protoc -I proto "$@" "$f"
done
