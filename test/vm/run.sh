#!/usr/bin/env bash
# Boots every kernel of test/vm/kernels.txt in qemu (TCG) with a small
# initramfs and runs the module's test binaries and `idend doctor` inside.
# Exits 0 only when every kernel passed: qemu's exit status (set by the
# guest through isa-debug-exit) and the guest's status record must both say
# so; a guest that crashes, hangs or says nothing has failed.
#
# Settings, from the environment:
#   VM_KERNELS       names from kernels.txt to boot (default: all)
#   VM_KERNELS_FILE  the kernel list (default: test/vm/kernels.txt)
#   VM_PACKAGES      Go packages whose tests run in the guests (default:
#                    every package with privileged tests, that is whose test
#                    files check for root with Geteuid() or check for a
#                    guest with IDEND_VMTEST, less VM_SKIP_PACKAGES; with the
#                    default, a package whose test binary does not build is
#                    reported and left out, since `make test` catches it)
#   VM_SKIP_PACKAGES packages left out of the default, each for a reason
#                    given below
#   VM_MODULES       kernel modules loaded in the guests, with dependencies
#   VM_TOOLS         host programs copied into the guests, with libraries
#   VM_TEST_ARGS     extra arguments for every test binary, e.g.
#                    "-test.run=TestConnect"
#   VM_TIMEOUT       seconds one kernel may take, boot to poweroff (1800)
#   VM_JOBS          guests booted at a time (2); above 1, each console is
#                    printed whole when its guest is done
#   VM_TEST_TIMEOUT  -test.timeout of each test binary in the guest (15m)
#   VM_UPDATE_DOCS   1: rewrite docs/KERNELS.md from the doctor outputs
#   VM_CACHE         downloads, images and results (test/vm/.cache)
set -euo pipefail
shopt -s inherit_errexit

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
REPO=$(cd "$HERE/../.." && pwd)
cd "$REPO"

GO=${GO:-go}
MODULE=$($GO list -m)
CACHE=${VM_CACHE:-$HERE/.cache}
VM_TIMEOUT=${VM_TIMEOUT:-1800}
VM_JOBS=${VM_JOBS:-2}
VM_TEST_TIMEOUT=${VM_TEST_TIMEOUT:-15m}
VM_MODULES=${VM_MODULES:-veth inet_diag tcp_diag udp_diag raw_diag unix_diag}
VM_TOOLS=${VM_TOOLS:-sh dash bash sleep cat true false echo env id ls mkdir rm \
	ps kill python3 curl nc ip ss grep sed head tail wc sort uname stat readlink \
	chmod ln cp mv touch tee timeout xargs find busybox}
# The programs the privileged tests run; missing ones fail the run.
REQUIRED_TOOLS="sh python3 curl nc sleep cat true touch busybox"
# cmd/idend: its TestMain builds idend with the go command, which the
# guests do not have; the guests do have the binary at /usr/bin/idend and
# IDEND_BIN set to it.
VM_SKIP_PACKAGES=${VM_SKIP_PACKAGES-$MODULE/cmd/idend}
PYTHON=/usr/bin/python3

WORK=$CACHE/work
RESULTS=$CACHE/results

log() { printf 'test-vm: %s\n' "$*"; }
die() { printf 'test-vm: %s\n' "$*" >&2; exit 1; }

# --- host tools ------------------------------------------------------------

apt_install() {
	log "installing $*"
	if ! DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends "$@" >/dev/null; then
		apt-get update >/dev/null
		DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends "$@" >/dev/null
	fi
}

host_tools() {
	local -A pkg=(
		[qemu-system-x86_64]=qemu-system-x86 [cpio]=cpio [curl]=curl
		[nc]=netcat-openbsd [python3]=python3 [ip]=iproute2 [ps]=procps
		[depmod]=kmod [busybox]=busybox
	)
	local missing=() cmd
	for cmd in "${!pkg[@]}"; do
		PATH=/usr/sbin:/usr/bin:/sbin:/bin type -P "$cmd" >/dev/null || missing+=("${pkg[$cmd]}")
	done
	if ((${#missing[@]})); then
		apt_install "${missing[@]}"
	fi
}

# --- kernels ----------------------------------------------------------------

# read_kernels fills NAMES, and PKG, VER, APPEND keyed by name.
declare -a NAMES=()
declare -A PKG=() VER=() APPEND=()
read_kernels() {
	local name pkg ver rest
	while read -r name pkg ver rest; do
		[[ -z $name || $name == \#* ]] && continue
		if [[ -n ${VM_KERNELS:-} && " $VM_KERNELS " != *" $name "* ]]; then
			continue
		fi
		NAMES+=("$name")
		PKG[$name]=$pkg VER[$name]=$ver APPEND[$name]=$rest
	done <"${VM_KERNELS_FILE:-$HERE/kernels.txt}"
	((${#NAMES[@]})) || die "no kernel of kernels.txt matches VM_KERNELS=${VM_KERNELS:-}"
}

# fetch_kernel PKG VER: downloads and unpacks the package once; sets KDIR
# to the directory it is unpacked in.
fetch_kernel() {
	local pkg=$1 ver=$2 dir="$CACHE/kernels/${1}_${2}" debs="$CACHE/debs"
	KDIR=$dir
	if [[ -f $dir/.unpacked ]]; then
		return
	fi
	mkdir -p "$debs"
	local deb
	deb=$(find "$debs" -name "${pkg}_${ver//:/%3a}_*.deb" | head -n1)
	if [[ -z $deb ]]; then
		log "downloading $pkg=$ver"
		if ! (cd "$debs" && apt-get -q -o APT::Sandbox::User=root download "$pkg=$ver" >/dev/null); then
			apt-get update >/dev/null
			(cd "$debs" && apt-get -q -o APT::Sandbox::User=root download "$pkg=$ver" >/dev/null) ||
				die "cannot download $pkg=$ver; apt offers: $(apt-cache madison "$pkg" | awk '{print $3}' | xargs)"
		fi
		deb=$(find "$debs" -name "${pkg}_${ver//:/%3a}_*.deb" | head -n1)
	fi
	rm -rf "$dir"
	mkdir -p "$dir"
	dpkg -x "$deb" "$dir"
	# The package leaves modules.dep to depmod at install time.
	local kver
	kver=$(basename "$(find "$dir/lib/modules" -mindepth 1 -maxdepth 1 -type d | head -n1)")
	PATH=/usr/sbin:/sbin:$PATH depmod -b "$dir" "$kver"
	touch "$dir/.unpacked"
}

# module_closure MODDIR NAME...: prints the module files (relative to
# MODDIR) to load for NAMEs, dependencies first. Built-in modules need none.
module_closure() {
	local moddir=$1
	shift
	local -A deps=() seen=() byname=()
	local -a order=()
	local line path base name
	while IFS= read -r line; do
		path=${line%%:*}
		deps[$path]=${line#*:}
		base=${path##*/}
		base=${base%%.ko*}
		byname[${base//-/_}]=$path
	done <"$moddir/modules.dep"

	visit() {
		local p=$1 d
		[[ -n ${seen[$p]:-} ]] && return
		seen[$p]=1
		for d in ${deps[$p]}; do
			visit "$d"
		done
		order+=("$p")
	}
	for name in "$@"; do
		path=${byname[${name//-/_}]:-}
		if [[ -z $path ]]; then
			grep -qE "/${name}\.ko\$" "$moddir/modules.builtin" ||
				die "module $name: not in $moddir/modules.dep nor built in"
			continue
		fi
		visit "$path"
	done
	printf '%s\n' "${order[@]}"
}

# --- guest userland -----------------------------------------------------------

# add_file ROOT PATH: copies a host file to the same path under ROOT. A
# symbolic link is copied as its target and linked to it.
add_file() {
	local root=$1 src=$2 real
	real=$(readlink -f "$src")
	if [[ ! -e $root$real ]]; then
		mkdir -p "$root$(dirname "$real")"
		cp --preserve=mode "$real" "$root$real"
	fi
	if [[ $src != "$real" && ! -e $root$src && ! -L $root$src ]]; then
		mkdir -p "$root$(dirname "$src")"
		ln -s "$real" "$root$src"
	fi
}

# add_libs ROOT FILE...: copies the shared libraries the files need.
add_libs() {
	local root=$1 lib
	shift
	for lib in $(ldd "$@" 2>/dev/null | awk '$2 == "=>" && $3 ~ /^\// {print $3} $1 ~ /^\// && $1 !~ /:$/ {print $1}' | sort -u); do
		add_file "$root" "$lib"
	done
}

add_tools() {
	local root=$1 tool path bins=()
	for tool in $VM_TOOLS; do
		path=$(PATH=/usr/sbin:/usr/bin:/sbin:/bin type -P "$tool") || {
			[[ " $REQUIRED_TOOLS " == *" $tool "* ]] && die "$tool: not on the host"
			log "$tool: not on the host, left out of the guests"
			continue
		}
		[[ $tool == python3 ]] && path=$PYTHON
		add_file "$root" "$path"
		bins+=("$(readlink -f "$path")")
	done
	add_libs "$root" "${bins[@]}"
}

# add_python ROOT: the standard library without tests, GUI modules and the
# static libpython; the extension modules' libraries.
add_python() {
	local root=$1 stdlib
	stdlib=$("$PYTHON" -c 'import sysconfig; print(sysconfig.get_paths()["stdlib"])')
	tar -C / -cf - \
		--exclude='test' --exclude='tests' --exclude='idlelib' --exclude='tkinter' \
		--exclude='turtledemo' --exclude='ensurepip' --exclude='lib2to3' \
		--exclude='pydoc_data' --exclude='config-*' --exclude='site-packages' \
		--exclude='dist-packages' "${stdlib#/}" | tar -C "$root" -xf -
	add_libs "$root" "$stdlib"/lib-dynload/*.so
}

write_etc() {
	local root=$1
	mkdir -p "$root/etc/vmtest"
	cat >"$root/etc/passwd" <<-'EOF'
		root:x:0:0:root:/root:/bin/sh
		nobody:x:65534:65534:nobody:/nonexistent:/usr/sbin/nologin
	EOF
	cat >"$root/etc/group" <<-'EOF'
		root:x:0:
		nogroup:x:65534:
	EOF
	printf '127.0.0.1\tlocalhost\n::1\tlocalhost ip6-localhost ip6-loopback\n' >"$root/etc/hosts"
	printf 'passwd: files\ngroup: files\nhosts: files\n' >"$root/etc/nsswitch.conf"
	echo vmtest >"$root/etc/hostname"
}

# --- builds -------------------------------------------------------------------

# privileged_packages prints the packages whose tests check for root or for
# a test/vm guest, less VM_SKIP_PACKAGES.
privileged_packages() {
	local pkg dir files
	while read -r pkg dir files; do
		[[ -n $files ]] || continue
		[[ " $VM_SKIP_PACKAGES " == *" $pkg "* ]] && continue
		if (cd "$dir" && grep -qE 'Geteuid\(\) != 0|IDEND_VMTEST' $files); then
			echo "$pkg"
		fi
	done < <($GO list -e -f '{{.ImportPath}} {{.Dir}} {{join .TestGoFiles " "}} {{join .XTestGoFiles " "}}' ./...)
}

# build_tests ROOT: builds a static test binary per package into its
# directory under ROOT/src and writes the guest's test list.
build_tests() {
	local root=$1 pkgs pkg rel bin explicit=${VM_PACKAGES:+1}
	pkgs=${VM_PACKAGES:-$(privileged_packages)}
	: >"$root/etc/vmtest/tests"
	for pkg in $pkgs; do
		pkg=${pkg#./}
		rel=${pkg#"$MODULE"}
		rel=${rel#/}
		rel=${rel:-.}
		bin="$root/src/$rel/$(basename "$pkg").test"
		if ! CGO_ENABLED=0 $GO test -c -ldflags='-s -w' -o "$bin" "./$rel" >"$WORK/build.log" 2>&1; then
			cat "$WORK/build.log" >&2
			[[ -n $explicit ]] && die "$pkg: test binary does not build"
			log "$pkg: test binary does not build: left out"
			NOT_BUILT+=("$pkg")
			continue
		fi
		# Packages without test files produce no binary.
		[[ -f $bin ]] || continue
		printf '%s\t%s\n' "$rel" "/src/$rel/$(basename "$bin")" >>"$root/etc/vmtest/tests"
		TESTED+=("$pkg")
	done
	if [[ -n ${VM_TEST_ARGS:-} ]]; then
		printf '%s\n' $VM_TEST_ARGS >"$root/etc/vmtest/testargs"
	fi
}

# build_idend ROOT: bin/idend, once cmd/idend has a main package.
build_idend() {
	local root=$1
	if ! compgen -G "cmd/idend/*.go" >/dev/null; then
		log "cmd/idend has no Go files yet: guests run no idend doctor"
		return
	fi
	if ! make -s build >&2; then
		log "bin/idend does not build: guests run no idend doctor"
		NOT_BUILT+=("$MODULE/cmd/idend (bin/idend)")
		return
	fi
	install -D -m 0755 bin/idend "$root/usr/bin/idend"
}

# build_base: the userland every guest shares, as one cpio archive.
build_base() {
	local root=$WORK/base
	rm -rf "$root"
	mkdir -p "$root"/{usr/bin,usr/sbin,usr/lib,usr/lib64,dev,proc,sys,tmp,run,root,src}
	ln -s usr/bin "$root/bin"
	ln -s usr/sbin "$root/sbin"
	ln -s usr/lib "$root/lib"
	ln -s usr/lib64 "$root/lib64"
	mknod -m 600 "$root/dev/console" c 5 1
	mknod -m 600 "$root/dev/ttyS1" c 4 65
	write_etc "$root"

	CGO_ENABLED=0 $GO build -trimpath -o "$root/init" ./test/vm/init
	add_tools "$root"
	add_python "$root"
	# The module's files, so that tests find testdata in their package
	# directory as under `go test`.
	git ls-files -co --exclude-standard -z |
		tar --null -T - --ignore-failed-read -cf - 2>/dev/null | tar -C "$root/src" -xf -
	build_idend "$root"
	build_tests "$root"
	[[ -s $root/etc/vmtest/tests ]] || die "no test binaries to run"

	(cd "$root" && find . -print0 | cpio --null -o -H newc -R 0:0 --quiet) >"$WORK/base.cpio"
	log "guest userland: $(du -sh "$WORK/base.cpio" | cut -f1), tests: ${TESTED[*]}"
}

# build_initrd NAME KDIR: the shared archive followed by one with the
# entry's kernel modules; sets INITRD to its path.
build_initrd() {
	local name=$1 kdir=$2 kver moddir root=$WORK/k-$1 m mods
	kver=$(basename "$(find "$kdir/lib/modules" -mindepth 1 -maxdepth 1 -type d | head -n1)")
	moddir=$kdir/lib/modules/$kver
	rm -rf "$root"
	mkdir -p "$root/etc/vmtest"
	: >"$root/etc/vmtest/modules"
	mods=$(module_closure "$moddir" $VM_MODULES)
	for m in $mods; do
		mkdir -p "$root/lib/modules/$kver/$(dirname "$m")"
		cp "$moddir/$m" "$root/lib/modules/$kver/$m"
		echo "/lib/modules/$kver/$m" >>"$root/etc/vmtest/modules"
	done
	# lib is a link to usr/lib in the shared archive: put the files there.
	mkdir -p "$root/usr"
	mv "$root/lib" "$root/usr/lib"
	(cd "$root" && find . -print0 | cpio --null -o -H newc -R 0:0 --quiet) >"$WORK/k-$name.cpio"
	INITRD=$WORK/initrd-$name
	cat "$WORK/base.cpio" "$WORK/k-$name.cpio" >"$INITRD"
}

# --- runs ---------------------------------------------------------------------

# boot NAME KERNEL INITRD: runs one guest; its console goes to stdout and
# results/NAME/console.log, its records to results/NAME/records.txt. Sets
# BOOT_RC to the exit status of qemu.
boot() {
	local name=$1 kernel=$2 initrd=$3 out=$RESULTS/$1
	mkdir -p "$out"
	set +e
	timeout -k 10 "$VM_TIMEOUT" qemu-system-x86_64 \
		-accel tcg -cpu "${VM_CPU:-max}" -smp 2 -m 2G \
		-nodefaults -display none -no-reboot \
		-kernel "$kernel" -initrd "$initrd" \
		-append "console=ttyS0 panic=-1 loglevel=4 vmtest.name=$name vmtest.timeout=$VM_TEST_TIMEOUT ${APPEND[$name]}" \
		-serial stdio -serial "file:$out/records.txt" \
		-device isa-debug-exit,iobase=0xf4,iosize=0x04 \
		</dev/null 2>&1 | tr -d '\r' | tee "$out/console.log"
	BOOT_RC=${PIPESTATUS[0]}
	# The console may end mid-line.
	echo
	set -e
}

# verdict NAME RC: prints PASS or why the entry failed.
verdict() {
	local out=$RESULTS/$1 rc=$2 rec
	rec=$(tr -d '\r' <"$out/records.txt" | sed -n 's/^result //p' | tail -n1) || true
	[[ -n $rec ]] ||
		rec=$(sed -n 's/^VMTEST-RESULT: \([A-Z]*\).*/\1/p' "$out/console.log" | tail -n1) || true
	case $rc in
	1) [[ $rec == PASS ]] && echo PASS || echo "FAIL (exit status says pass, status line says '${rec:-nothing}')" ;;
	3) echo "FAIL (tests failed)" ;;
	124 | 137) echo "FAIL (timed out after ${VM_TIMEOUT}s)" ;;
	0) echo "FAIL (guest stopped without a status: crash or panic; status line: '${rec:-none}')" ;;
	*) echo "FAIL (qemu exit status $rc)" ;;
	esac
}

count() { grep -cE "^ *--- $1:" "$2" 2>/dev/null || true; }

# host_records: the kernel of the machine running the matrix, for the last
# column of the table.
host_records() {
	local out=$RESULTS/host
	rm -rf "$out"
	mkdir -p "$out"
	{
		echo "name host $(uname -r | cut -d. -f1-2)"
		echo "kernel $(uname -r)"
		echo "lsm $(cat /sys/kernel/security/lsm 2>/dev/null || echo unknown)"
		if [[ -x bin/idend && $(id -u) == 0 ]]; then
			bin/idend doctor --json 2>/dev/null | sed 's/^/doctor-json /'
		fi
	} >"$out/records.txt"
}

feature_table() {
	local dirs=() name
	for name in "${NAMES[@]}"; do
		dirs+=("$RESULTS/$name")
	done
	dirs+=("$RESULTS/host")
	$GO run ./test/vm/kerneltable "${dirs[@]}" >"$CACHE/KERNELS.md"
	if [[ ${VM_UPDATE_DOCS:-} == 1 ]]; then
		cp "$CACHE/KERNELS.md" docs/KERNELS.md
		log "docs/KERNELS.md updated"
	elif ! cmp -s "$CACHE/KERNELS.md" docs/KERNELS.md; then
		log "the feature table differs from docs/KERNELS.md: see $CACHE/KERNELS.md (VM_UPDATE_DOCS=1 rewrites it)"
	fi
}

# run_entry NAME KERNEL INITRD: boots one entry and leaves its qemu exit
# status and duration in results/NAME. With VM_JOBS > 1 the console goes
# only to the log, which is printed whole when the guest is done.
run_entry() {
	local name=$1 out=$RESULTS/$1 t0=$SECONDS
	mkdir -p "$out"
	log "booting $name: ${PKG[$name]} ${VER[$name]} ${APPEND[$name]}"
	if ((VM_JOBS > 1)); then
		boot "$@" >/dev/null
		flock "$WORK/print.lock" cat "$out/console.log"
	else
		boot "$@"
	fi
	rm -f "$3"
	echo "$BOOT_RC" >"$out/qemu-status"
	echo $((SECONDS - t0)) >"$out/seconds"
	log "$name: done in $((SECONDS - t0))s"
}

main() {
	local start=$SECONDS name kernel v n failed=0 npass=0 nfail=0 nskip=0
	local -A result=() kernels=() initrds=()
	declare -ga TESTED=() NOT_BUILT=()
	read_kernels
	host_tools
	mkdir -p "$WORK" "$RESULTS"

	build_base
	for name in "${NAMES[@]}"; do
		fetch_kernel "${PKG[$name]}" "${VER[$name]}"
		kernels[$name]=$(find "$KDIR/boot" -name 'vmlinuz-*' | head -n1)
		build_initrd "$name" "$KDIR"
		initrds[$name]=$INITRD
		rm -rf "${RESULTS:?}/$name"
	done
	log "built the guest userland, test binaries and initrds in $((SECONDS - start))s"

	for name in "${NAMES[@]}"; do
		while (($(jobs -rp | wc -l) >= VM_JOBS)); do
			wait -n || true
		done
		run_entry "$name" "${kernels[$name]}" "${initrds[$name]}" &
	done
	wait

	for name in "${NAMES[@]}"; do
		v=$(verdict "$name" "$(cat "$RESULTS/$name/qemu-status" 2>/dev/null || echo none)")
		result[$name]=$v
		[[ $v == PASS ]] || failed=$((failed + 1))
		npass=$((npass + $(count PASS "$RESULTS/$name/console.log")))
		n=$(count FAIL "$RESULTS/$name/console.log")
		# A guest that failed outside any test still counts as a failure.
		[[ $v == PASS || $n -gt 0 ]] || n=1
		nfail=$((nfail + n))
		nskip=$((nskip + $(count SKIP "$RESULTS/$name/console.log")))
	done

	host_records
	feature_table || log "feature table: generator failed"

	echo
	printf 'test-vm: %-14s %-44s %-6s %s\n' ENTRY PACKAGE SECS RESULT
	for name in "${NAMES[@]}"; do
		printf 'test-vm: %-14s %-44s %-6s %s\n' "$name" "${PKG[$name]}" \
			"$(cat "$RESULTS/$name/seconds" 2>/dev/null)" "${result[$name]}"
	done
	for name in "${NAMES[@]}"; do
		grep -E '^--- FAIL:' "$RESULTS/$name/console.log" | sed "s/^/test-vm: $name: /" || true
	done
	log "total $((SECONDS - start))s for ${#NAMES[@]} kernels, $VM_JOBS at a time; packages: ${TESTED[*]}"
	if [[ -z ${VM_PACKAGES:-} && -n $VM_SKIP_PACKAGES ]]; then
		log "left out by VM_SKIP_PACKAGES: $VM_SKIP_PACKAGES"
	fi
	if ((${#NOT_BUILT[@]})); then
		log "left out, test binary does not build: ${NOT_BUILT[*]}"
	fi
	echo "test-vm: $npass passed, $nfail failed, $nskip skipped"
	((failed == 0))
}

main "$@"
