package attest

import (
	"strings"
	"testing"
)

func TestContainerID(t *testing.T) {
	const (
		id1 = "488864a0fd9861ad9d4a1b536658d1fc39f88f00d53bab95ce634f21ba8cff39"
		id2 = "c744682ccecb2434c8ff4d8b6e24c9d2aab518ebd6cdc53cb9fb3a55ffd5118d"
		pod = "pod0f8e4a47-3c55-4c2b-9d8e-2a6f1b7c9d10"
	)

	tests := []struct {
		name, path, want string
	}{
		{"docker systemd driver",
			"/system.slice/docker-" + id1 + ".scope", id1},
		{"docker cgroupfs driver",
			"/docker/" + id1, id1},
		{"docker in docker",
			"/docker/" + id1 + "/docker/" + id2, id2},
		{"kubernetes containerd systemd driver",
			"/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-" +
				"pod0f8e4a47_3c55_4c2b_9d8e_2a6f1b7c9d10.slice/cri-containerd-" + id1 + ".scope",
			id1},
		{"kubernetes containerd cgroupfs driver",
			"/kubepods/besteffort/" + pod + "/" + id1, id1},
		{"kubernetes guaranteed pod, cgroupfs",
			"/kubepods/" + pod + "/" + id2, id2},
		{"cri-o systemd driver",
			"/kubepods.slice/kubepods-besteffort.slice/kubepods-besteffort-" +
				"pod0f8e4a47_3c55_4c2b_9d8e_2a6f1b7c9d10.slice/crio-" + id1 + ".scope",
			id1},
		{"cri-o container with its own sub-cgroup",
			"/kubepods.slice/kubepods-pod1.slice/crio-" + id2 + ".scope/container", id2},
		{"cri-o conmon is not the container",
			"/kubepods.slice/kubepods-pod1.slice/crio-conmon-" + id1 + ".scope", ""},
		{"podman rootful",
			"/machine.slice/libpod-" + id1 + ".scope", id1},
		{"podman with its own sub-cgroup",
			"/machine.slice/libpod-" + id1 + ".scope/container", id1},
		{"podman rootless",
			"/user.slice/user-1000.slice/user@1000.service/user.slice/libpod-" + id2 + ".scope",
			id2},
		{"podman cgroupfs driver",
			"/libpod_parent/libpod-" + id1, id1},
		{"podman conmon is not the container",
			"/machine.slice/libpod-conmon-" + id1 + ".scope", ""},
		{"ecs task",
			"/ecs/5d2a9f0e8a9a4c0c9f2b2c5d5e7f8a9b/" + id1, id1},
		{"host service", "/system.slice/sshd.service", ""},
		{"user session", "/user.slice/user-1000.slice/session-3.scope", ""},
		{"idend session", "/idend/s-0123", ""},
		{"root", "/", ""},
		{"63 hex digits", "/docker/" + id1[:63], ""},
		{"uppercase hex", "/docker/" + strings.ToUpper(id1), ""},
		{"unknown runtime prefix", "/system.slice/rkt-" + id1 + ".scope", ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := ContainerID(tt.path); got != tt.want {
				t.Errorf("ContainerID(%q) = %q, want %q", tt.path, got, tt.want)
			}
		})
	}
}
