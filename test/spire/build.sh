#!/bin/sh
# Build spire-server and spire-agent at the version pinned in go.mod into a
# cache directory (default: test/spire/bin, gitignored). The build is skipped
# when both binaries are already there; set IDEND_SPIRE_REBUILD=1 to force it.
# A cold build downloads ~1.4 GB of modules and takes several minutes.
set -eu

here=$(cd "$(dirname "$0")" && pwd)
out=${1:-${IDEND_SPIRE_BIN:-$here/bin}}

if [ -z "${IDEND_SPIRE_REBUILD:-}" ] &&
	[ -x "$out/spire-server" ] && [ -x "$out/spire-agent" ]; then
	echo "spire binaries present in $out"
	exit 0
fi

mkdir -p "$out"
cd "$here"
go build -trimpath -ldflags="-s -w" -o "$out/" \
	github.com/spiffe/spire/cmd/spire-server \
	github.com/spiffe/spire/cmd/spire-agent
echo "built spire-server and spire-agent into $out"
