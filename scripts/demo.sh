#!/bin/bash
# The demo: idend's main job, end to end, on real processes.
#
# Starts a daemon in a temporary directory, two local services ("payments
# logs" and "customer database"), and an agent in a session whose intent is
# to analyse payment retries. The agent reads the logs, tries to export the
# customers, tries to run a tool outside its intent, and starts a sub-agent
# on a narrower slice. Then the session's timeline, the audit chain and a
# replay against a stricter intent, all read from the running system.
# Needs root. Leaves nothing behind.
set -euo pipefail

here=$(cd "$(dirname "$0")/.." && pwd)
idend="${IDEND_BIN:-$here/bin/idend}"
demo="$here/examples/demo"
tmp=$(mktemp -d /tmp/idend-demo.XXXXXX)
chmod 755 "$tmp"
name="idend-demo-$$"
sock="$tmp/idend.sock"
state="$tmp/state"
flags=(--state-dir "$state" --bpffs-dir "/sys/fs/bpf/$name" --cgroup-root "$name")
python=$(readlink -f /usr/bin/python3)
pids=()

say() { printf '\n\033[1m== %s\033[0m\n' "$*"; }

cleanup() {
	for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
	wait 2>/dev/null || true
	"$idend" daemon --cleanup "${flags[@]}" --socket "$sock" >/dev/null 2>&1 || true
	rm -rf "$tmp"
}
trap cleanup EXIT

[ "$(id -u)" = 0 ] || { echo "demo: run as root (make demo)" >&2; exit 1; }

say "local services: payments logs on 127.0.0.2:8080, customer database on 127.0.0.3:5432"
mkdir -p "$tmp/logs" "$tmp/db"
for i in $(seq 1 40); do
	echo "2026-12-03T10:$((i % 60)):00Z payment p$i status=$([ $((i % 3)) = 0 ] && echo retry || echo ok)"
done >"$tmp/logs/payments.log"
printf 'id,name,card\n1,Ada,4111-xxxx\n2,Grace,5500-xxxx\n' >"$tmp/db/customers.csv"
"$python" -m http.server --bind 127.0.0.2 --directory "$tmp/logs" 8080 >/dev/null 2>&1 &
pids+=($!)
"$python" -m http.server --bind 127.0.0.3 --directory "$tmp/db" 5432 >/dev/null 2>&1 &
pids+=($!)

cat >"$tmp/config.yaml" <<CONF
registrations:
  - spiffe_id: spiffe://demo.idend.example/launcher
    selectors: ["unix:uid:0"]
CONF

cat >"$tmp/intent.yaml" <<INTENT
name: payments-retry-analysis
purpose: analyze retry patterns in the payments service
ttl: 30m
on_violation: block
network:
  egress:
    - to: 127.0.0.2
      ports: [8080]
      protocol: tcp
  unix: [$sock]
exec:
  allow: [$python, /usr/bin/python3, $idend]
INTENT
sed "/127.0.0.2/,+2d" "$tmp/intent.yaml" | sed 's/^  egress:$/  egress: []/' >"$tmp/stricter.yaml"

say "idend daemon"
"$idend" daemon --config "$tmp/config.yaml" "${flags[@]}" --socket "$sock" 2>"$tmp/daemon.log" &
daemon=$!
pids+=($daemon)
for _ in $(seq 50); do [ -S "$sock" ] && break; sleep 0.1; done
[ -S "$sock" ] || { cat "$tmp/daemon.log" >&2; exit 1; }
export IDEND_SOCKET="$sock" IDEND_BIN="$idend"
sed 's/^/  /' "$tmp/daemon.log"

say "the intent"
cat "$tmp/intent.yaml"

say "the agent, in a session, as user nobody"
session=$("$idend" session open --intent "$tmp/intent.yaml" --principal alice@example.com)
echo "session $session"
"$idend" run --session "$session" --user nobody -- "$python" "$demo/agent.py" || true

say "sessions"
"$idend" session list

say "what the session did (idend events --session $session)"
kill -TERM "$daemon"
wait "$daemon" || true
"$idend" events --state-dir "$state"

say "is the record intact? (idend audit verify)"
"$idend" audit verify "$state/recordings"

say "what would a stricter intent have blocked? (idend replay --intent stricter.yaml)"
"$idend" replay --state-dir "$state" --intent "$tmp/stricter.yaml" --session "$session"
