// Package selftest checks, inside a test/vm guest, that the environment
// the privileged tests rely on is there: file systems, kernel modules,
// loopback, kernel BTF, the userland programs, and a BPF program that
// loads and runs. Outside a guest its tests skip.
package selftest
