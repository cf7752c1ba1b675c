package attest

import "strings"

// scopePrefixes are the prefixes container runtimes give the systemd scope
// or cgroupfs directory of a container: docker, containerd's CRI plugin,
// cri-o and podman. A conmon (container monitor) scope of cri-o or podman
// is not the container and is not listed.
var scopePrefixes = []string{
	"docker-",
	"cri-containerd-",
	"crio-",
	"libpod-",
}

// ContainerID returns the id of the container whose cgroup is cgroupPath, or
// "" when the path shows none. It recognises the layouts of docker,
// containerd (Kubernetes CRI), cri-o and podman under both the systemd and
// the cgroupfs drivers: a "<runtime>-<id>.scope" or "<runtime>-<id>"
// component, or a bare 64-hex component. With nested containers the
// innermost id is returned.
func ContainerID(cgroupPath string) string {
	parts := strings.Split(cgroupPath, "/")
	for i := len(parts) - 1; i >= 0; i-- {
		if id := componentID(parts[i]); id != "" {
			return id
		}
	}
	return ""
}

// componentID returns the container id held by one cgroup path component.
func componentID(c string) string {
	c = strings.TrimSuffix(c, ".scope")
	for _, p := range scopePrefixes {
		if rest, ok := strings.CutPrefix(c, p); ok {
			c = rest
			break
		}
	}

	if !isContainerID(c) {
		return ""
	}
	return c
}

// isContainerID reports whether s has the form runtimes give ids: 64
// lowercase hex digits.
func isContainerID(s string) bool {
	if len(s) != 64 {
		return false
	}
	for _, r := range s {
		if !('0' <= r && r <= '9' || 'a' <= r && r <= 'f') {
			return false
		}
	}
	return true
}
