//go:build !amd64

package main

import "errors"

// exitQEMU is amd64 only: test/vm boots x86-64 guests.
func exitQEMU(code uint32) error {
	return errors.New("isa-debug-exit: not on amd64")
}
