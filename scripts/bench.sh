#!/bin/sh
# Runs idend's benchmarks and prints a table of their figures: what idend
# costs a workload against a baseline measured in the same run, and how
# much the daemon carries. docs/BENCHMARKS.md gives the method and the
# targets. The kernel benchmarks need root; without it they skip.
#
# BENCH_OUT names the file that keeps the raw `go test -bench` output
# (default: a temporary file, printed at the end).
set -eu
cd "$(dirname "$0")/.."
GO=${GO:-go}
out=${BENCH_OUT:-$(mktemp -t idend-bench.XXXXXX)}

machine() {
	model=$(sed -n 's/^model name[[:space:]]*: //p' /proc/cpuinfo | head -n 1)
	echo "machine: $(nproc) CPUs, ${model:-unknown CPU}, Linux $(uname -r)"
}

# bench PACKAGE PATTERN BENCHTIME: one `go test -bench` run, appended to $out.
bench() {
	echo "== $1 $2 ($3)" >&2
	$GO test -run '^$' -bench "$2" -benchtime "$3" -count 1 "$1" 2>&1 | tee -a "$out" |
		grep -E '^(Benchmark|FAIL|---|panic|ok)' >&2 || true
}

: >"$out"
start=$(date +%s)
load0=$(cut -d' ' -f1-3 /proc/loadavg)
machine | tee -a "$out" >&2
echo "load average before: $load0" | tee -a "$out" >&2
if [ "$(id -u)" -ne 0 ]; then
	echo "not root: the kernel and daemon benchmarks will skip" >&2
fi

# Iteration counts are chosen so that each round of the alternating
# comparisons lasts tens of milliseconds and the whole run stays well
# under ten minutes on two cores.
bench ./internal/loader/ '^BenchmarkConnect$' 50000x
bench ./internal/loader/ '^BenchmarkSendto$' 500000x
bench ./internal/loader/ '^BenchmarkExec$' 3000x
bench ./internal/loader/ '^BenchmarkProgramRunTime$' 20000x
bench ./internal/daemon/ '^BenchmarkRingToRecording$' 1000000x
bench ./internal/daemon/ '^BenchmarkFlood$' 1x
bench ./internal/daemon/ '^BenchmarkDaemonMemory$' 1x
bench ./internal/events/ '^Benchmark(DecodeKernel|RecorderAppend|Replay|ReplayFromDisk)$' 2s
load1=$(cut -d' ' -f1-3 /proc/loadavg)
echo "load average after: $load1" | tee -a "$out" >&2

echo
machine
echo "load average: $load0 before, $load1 after (other work on the machine adds noise)"
echo "run took $(($(date +%s) - start))s; raw output: $out"
echo
awk -f - "$out" <<'EOF'
# Collect "BenchmarkName/sub-N  iterations  value unit  value unit ...".
/^Benchmark/ {
	name = $1
	sub(/^Benchmark/, "", name)
	sub(/-[0-9]+$/, "", name)
	for (i = 3; i < NF; i += 2)
		v[name, $(i + 1)] = $i
}

function has(key, unit) { return ((key, unit) in v) }

function num(x) {
	if (x == int(x) || x >= 100) return sprintf("%.0f", x)
	if (x >= 10) return sprintf("%.1f", x)
	return sprintf("%.2f", x)
}

# row prints one line: the figure with idend, the baseline, the ratio, the
# target and whether the figure meets it. op is "<=" or ">=".
function row(label, key, unit, baseunit, ratiounit, target, op, limit, suffix,   val, base, ratio, check, met) {
	if (!has(key, unit)) {
		printf "%-36s %14s\n", label, "(not run)"
		return
	}
	val = num(v[key, unit]) suffix
	base = has(key, baseunit) ? num(v[key, baseunit]) suffix : ""
	ratio = has(key, ratiounit) ? sprintf("%.3fx", v[key, ratiounit]) : ""
	check = ratiounit != "" && has(key, ratiounit) ? v[key, ratiounit] : v[key, unit]
	met = ""
	if (op == "<=") met = check <= limit ? "yes" : "NO"
	if (op == ">=") met = check >= limit ? "yes" : "NO"
	printf "%-36s %14s %14s %9s  %-16s %s\n", label, val, base, ratio, target, met
}

function head(title) {
	printf "\n%-36s %14s %14s %9s  %-16s %s\n", title, "idend", "baseline", "ratio", "target", "met"
}

END {
	head("connect() loopback, CPU per call")
	row("1 rule", "Connect/rules=1", "ns/connect", "base-ns/connect", "x-base", "<= 1.05x", "<=", 1.05, " ns")
	row("1,000 rules", "Connect/rules=1000", "ns/connect", "base-ns/connect", "x-base", "<= 1.05x", "<=", 1.05, " ns")
	row("100,000 rules", "Connect/rules=100000", "ns/connect", "base-ns/connect", "x-base", "<= 1.05x", "<=", 1.05, " ns")
	row("100,000 adjacent rules", "Connect/rules=100000-adjacent", "ns/connect", "base-ns/connect", "x-base", "<= 1.05x", "<=", 1.05, " ns")
	row("100,000 rules vs 1 rule", "Connect/rules=100000", "ns/connect", "", "x-rules1", "<= 1.05x", "<=", 1.05, " ns")
	row("100,000 adjacent vs 1 rule", "Connect/rules=100000-adjacent", "ns/connect", "", "x-rules1", "<= 1.05x", "<=", 1.05, " ns")
	row("denied", "Connect/deny", "ns/connect", "base-ns/connect", "x-base", "(refused)", "", 0, " ns")

	head("sendto() UDP loopback, CPU per call")
	row("1 rule", "Sendto/rules=1", "ns/sendto", "base-ns/sendto", "x-base", "<= 1.05x", "<=", 1.05, " ns")
	row("1,000 rules", "Sendto/rules=1000", "ns/sendto", "base-ns/sendto", "x-base", "<= 1.05x", "<=", 1.05, " ns")
	row("100,000 rules", "Sendto/rules=100000", "ns/sendto", "base-ns/sendto", "x-base", "<= 1.05x", "<=", 1.05, " ns")
	row("100,000 adjacent rules", "Sendto/rules=100000-adjacent", "ns/sendto", "base-ns/sendto", "x-base", "<= 1.05x", "<=", 1.05, " ns")
	row("denied", "Sendto/deny", "ns/sendto", "base-ns/sendto", "x-base", "(refused)", "", 0, " ns")

	head("fork+exec+wait /bin/true, CPU per run")
	row("session with exec allow list", "Exec/allowlist", "ns/exec", "base-ns/exec", "x-base", "<= 1.05x", "<=", 1.05, " ns")
	row("session tracking, no allow list", "Exec/any", "ns/exec", "base-ns/exec", "x-base", "<= 1.05x", "<=", 1.05, " ns")
	row("outside any session", "Exec/outside", "ns/exec", "base-ns/exec", "x-base", "<= 1.05x", "<=", 1.05, " ns")

	head("ring buffer to recording, one core")
	row("Append per record, per CPU-second", "RingToRecording/append", "records/cpu-s", "", "", ">= 1000000", ">=", 1000000, "")
	row("Append per record, per second", "RingToRecording/append", "records/s", "", "", "", "", 0, "")
	row("AppendBatch of 64, per CPU-second", "RingToRecording/batch", "records/cpu-s", "", "", ">= 1000000", ">=", 1000000, "")
	row("flood 100,000/s for 3s: lost", "Flood/rate=100000", "lost", "", "", "0", "<=", 0, "")
	row("flood 100,000/s: recorded", "Flood/rate=100000", "recorded", "", "", "", "", 0, "")
	row("flood 100,000/s: rate reached", "Flood/rate=100000", "sent/s", "", "", "", "", 0, "")
	row("flood at full speed: lost", "Flood/rate=0", "lost", "", "", "(no target)", "", 0, "")
	row("flood at full speed: rate", "Flood/rate=0", "sent/s", "", "", "", "", 0, "")

	head("recording and replay")
	row("DecodeKernel sendmsg, records/s", "DecodeKernel/sendmsg", "records/s", "", "", "", "", 0, "")
	row("DecodeKernel exec, records/s", "DecodeKernel/exec", "records/s", "", "", "", "", 0, "")
	row("Recorder.Append, records/s", "RecorderAppend", "records/s", "", "", "", "", 0, "")
	row("Replay, records/s", "Replay", "records/s", "", "", ">= 2000000", ">=", 2000000, "")
	row("Replay from disk, records/s", "ReplayFromDisk", "records/s", "", "", "", "", 0, "")

	head("daemon resident set (MiB)")
	row("idle", "DaemonMemory", "idle-MiB", "", "", "< 64", "<=", 64, "")
	row("100 sessions", "DaemonMemory", "sessions100-MiB", "", "", "< 64", "<=", 64, "")
	row("after 10,000 processes", "DaemonMemory", "procs10k-MiB", "", "", "< 64", "<=", 64, "")
	row("after 20,000 processes", "DaemonMemory", "procs20k-MiB", "", "", "bounded", "", 0, "")
	row("sessions closed", "DaemonMemory", "closed-MiB", "", "", "", "", 0, "")
	row("peak", "DaemonMemory", "peak-MiB", "", "", "", "", 0, "")
	row("  of it, event rings mapped (twice)", "DaemonMemory", "rings-MiB", "", "", "", "", 0, "")
	row("  the daemon's own (rss - rings)", "DaemonMemory", "own-MiB", "", "", "< 64", "<=", 64, "")
	row("  anonymous", "DaemonMemory", "anon-MiB", "", "", "", "", 0, "")

	head("BPF program run time (ns/run)")
	row("connect4, 1 rule", "ProgramRunTime/connect", "connect4-ns/run", "", "", "", "", 0, "")
	row("sock_create", "ProgramRunTime/connect", "sock_create-ns/run", "", "", "", "", 0, "")
	row("connect4, 100,000 adjacent rules", "ProgramRunTime/connect-rules=100000-adjacent", "connect4-ns/run", "", "", "", "", 0, "")
	row("connect4, denied", "ProgramRunTime/connect-deny", "connect4-ns/run", "", "", "", "", 0, "")
	row("sendmsg4", "ProgramRunTime/sendto", "sendmsg4-ns/run", "", "", "", "", 0, "")
	row("sched_fork", "ProgramRunTime/exec", "sched_fork-ns/run", "", "", "", "", 0, "")
	row("sched_exec", "ProgramRunTime/exec", "sched_exec-ns/run", "", "", "", "", 0, "")
	row("sched_exit", "ProgramRunTime/exec", "sched_exit-ns/run", "", "", "", "", 0, "")
}
EOF
