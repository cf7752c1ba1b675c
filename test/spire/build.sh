#!/bin/sh
# Build spire-server and spire-agent at the version pinned in go.mod into a
# cache directory (default: test/spire/bin, gitignored). The build is skipped
# when both binaries are there and were built from the same go.mod; set
# IDEND_SPIRE_REBUILD=1 to force it. A cold build downloads ~1.4 GB of
# modules and takes several minutes.
set -eu

here=$(cd "$(dirname "$0")" && pwd)
out=${1:-${IDEND_SPIRE_BIN:-$here/bin}}
stamp=$(sha256sum "$here/go.mod" | cut -d' ' -f1)

if [ -z "${IDEND_SPIRE_REBUILD:-}" ] &&
	[ -x "$out/spire-server" ] && [ -x "$out/spire-agent" ] &&
	[ "$(cat "$out/.go.mod.sha256" 2>/dev/null)" = "$stamp" ]; then
	echo "spire binaries up to date in $out"
	exit 0
fi

mkdir -p "$out"
cd "$here"
go build -trimpath -ldflags="-s -w" -o "$out/" \
	github.com/spiffe/spire/cmd/spire-server \
	github.com/spiffe/spire/cmd/spire-agent
echo "$stamp" >"$out/.go.mod.sha256"
echo "built spire-server and spire-agent into $out"
