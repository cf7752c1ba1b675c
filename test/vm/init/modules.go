package main

import (
	"bufio"
	"errors"
	"fmt"
	"os"
	"strings"

	"golang.org/x/sys/unix"
)

// moduleList names the kernel modules to load, one path a line,
// dependencies first: run.sh resolves them from modules.dep, since the
// guest has no modprobe.
const moduleList = "/etc/vmtest/modules"

// loadModules loads every module of the list and returns the failures.
func loadModules() []error {
	f, err := os.Open(moduleList)
	if errors.Is(err, os.ErrNotExist) {
		return nil
	}
	if err != nil {
		return []error{fmt.Errorf("read module list: %w", err)}
	}
	defer f.Close()

	var errs []error
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		path := strings.TrimSpace(sc.Text())
		if path == "" {
			continue
		}
		if err := loadModule(path); err != nil {
			errs = append(errs, err)
			continue
		}
		logf("module %s loaded", path)
	}
	if err := sc.Err(); err != nil {
		errs = append(errs, fmt.Errorf("read module list: %w", err))
	}
	return errs
}

// loadModule loads one module file. Compressed files (the 6.12 packages
// ship .ko.xz) are handed to the kernel to decompress
// (CONFIG_MODULE_DECOMPRESS).
func loadModule(path string) error {
	fd, err := unix.Open(path, unix.O_RDONLY|unix.O_CLOEXEC, 0)
	if err != nil {
		return fmt.Errorf("open module %s: %w", path, err)
	}
	defer unix.Close(fd)

	flags := 0
	if strings.HasSuffix(path, ".xz") || strings.HasSuffix(path, ".zst") ||
		strings.HasSuffix(path, ".gz") {
		flags |= unix.MODULE_INIT_COMPRESSED_FILE
	}
	err = unix.FinitModule(fd, "", flags)
	if errors.Is(err, unix.EEXIST) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("load module %s: %w", path, err)
	}
	return nil
}
