package attest

import (
	"bytes"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
)

func TestFingerprint(t *testing.T) {
	key := bytes.Repeat([]byte{7}, NodeKeySize)
	secret := []byte("sk-live-0123456789abcdef")

	fp := Fingerprint(key, secret)
	if !strings.HasPrefix(fp, "hmac-sha256:") || len(fp) != len("hmac-sha256:")+64 {
		t.Fatalf("fingerprint %q", fp)
	}
	if strings.Contains(fp, string(secret)) {
		t.Fatal("fingerprint holds the secret")
	}
	if Fingerprint(key, secret) != fp {
		t.Error("fingerprint not stable")
	}
	if Fingerprint(bytes.Repeat([]byte{8}, NodeKeySize), secret) == fp {
		t.Error("fingerprint does not depend on the node key")
	}
	if Fingerprint(key, []byte("sk-live-0123456789abcdeg")) == fp {
		t.Error("fingerprint does not depend on the secret")
	}
}

func TestFingerprintFile(t *testing.T) {
	key := bytes.Repeat([]byte{7}, NodeKeySize)
	dir := t.TempDir()

	write := func(name, content string) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, []byte(content), 0o600); err != nil {
			t.Fatal(err)
		}
		return p
	}

	want := Fingerprint(key, []byte("tok-123"))
	for _, content := range []string{"tok-123", "tok-123\n", "tok-123 \r\n"} {
		got, err := FingerprintFile(key, write("cred", content))
		if err != nil || got != want {
			t.Errorf("file %q: %q, %v; want %q", content, got, err, want)
		}
	}

	if _, err := FingerprintFile(key, write("empty", "\n")); err == nil {
		t.Error("empty credential accepted")
	}
	big := strings.Repeat("x", maxCredentialSize+1)
	if _, err := FingerprintFile(key, write("big", big)); err == nil {
		t.Error("oversized credential accepted")
	}
	if _, err := FingerprintFile(key, filepath.Join(dir, "absent")); err == nil {
		t.Error("absent credential accepted")
	}
}

func TestLoadOrCreateNodeKey(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "state")

	key, err := LoadOrCreateNodeKey(dir)
	if err != nil {
		t.Fatal(err)
	}
	if len(key) != NodeKeySize || bytes.Equal(key, make([]byte, NodeKeySize)) {
		t.Fatalf("key %x", key)
	}

	fi, err := os.Stat(filepath.Join(dir, NodeKeyFile))
	if err != nil {
		t.Fatal(err)
	}
	if fi.Mode().Perm() != 0o600 {
		t.Errorf("mode %v, want 0600", fi.Mode().Perm())
	}

	again, err := LoadOrCreateNodeKey(dir)
	if err != nil || !bytes.Equal(again, key) {
		t.Errorf("reload: %x, %v; want %x", again, err, key)
	}

	entries, _ := os.ReadDir(dir)
	if len(entries) != 1 {
		t.Errorf("state directory holds %d files, want only %s", len(entries), NodeKeyFile)
	}
}

func TestNodeKeyConcurrentCreate(t *testing.T) {
	dir := t.TempDir()
	keys := make([][]byte, 8)
	errs := make([]error, 8)

	var wg sync.WaitGroup
	for i := range keys {
		wg.Go(func() { keys[i], errs[i] = LoadOrCreateNodeKey(dir) })
	}
	wg.Wait()

	for i := range keys {
		if errs[i] != nil || !bytes.Equal(keys[i], keys[0]) {
			t.Errorf("caller %d: %x, %v; want %x", i, keys[i], errs[i], keys[0])
		}
	}
}

func TestNodeKeyRefused(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, NodeKeyFile)

	if err := os.WriteFile(path, bytes.Repeat([]byte{1}, NodeKeySize), 0o644); err != nil {
		t.Fatal(err)
	}
	if _, err := LoadOrCreateNodeKey(dir); err == nil {
		t.Error("world-readable key accepted")
	}

	if err := os.Chmod(path, 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(path, []byte("short"), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := LoadOrCreateNodeKey(dir); err == nil {
		t.Error("short key accepted")
	}
}
