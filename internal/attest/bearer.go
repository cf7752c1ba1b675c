package attest

import (
	"bytes"
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
)

// NodeKeySize is the size in bytes of the node key.
const NodeKeySize = 32

// NodeKeyFile is the name of the node key under the state directory.
const NodeKeyFile = "node.key"

// maxCredentialSize caps a credential file read by FingerprintFile.
const maxCredentialSize = 64 << 10

// Fingerprint returns "hmac-sha256:<hex>", the HMAC-SHA256 of secret keyed
// by the node key. The same secret yields the same fingerprint on one node
// and, without the key, cannot be recovered or tested from it.
func Fingerprint(key, secret []byte) string {
	m := hmac.New(sha256.New, key)
	m.Write(secret)
	return "hmac-sha256:" + hex.EncodeToString(m.Sum(nil))
}

// FingerprintFile returns the Fingerprint of the credential held in the
// file at path, without the trailing newline and spaces an editor or echo
// adds. The bytes read are cleared before it returns.
func FingerprintFile(key []byte, path string) (string, error) {
	f, err := os.Open(path)
	if err != nil {
		return "", fmt.Errorf("open credential: %w", err)
	}
	defer f.Close()

	b, err := io.ReadAll(io.LimitReader(f, maxCredentialSize+1))
	defer clear(b)
	if err != nil {
		return "", fmt.Errorf("read credential %s: %w", path, err)
	}
	if len(b) > maxCredentialSize {
		return "", fmt.Errorf("credential %s: larger than %d bytes", path, maxCredentialSize)
	}

	secret := bytes.TrimRight(b, " \t\r\n")
	if len(secret) == 0 {
		return "", fmt.Errorf("credential %s: empty", path)
	}
	return Fingerprint(key, secret), nil
}

// LoadOrCreateNodeKey returns the node key stored in stateDir/node.key,
// creating it with NodeKeySize random bytes and mode 0600 when absent.
// Concurrent callers on one state directory all get the same key.
func LoadOrCreateNodeKey(stateDir string) ([]byte, error) {
	path := filepath.Join(stateDir, NodeKeyFile)

	key, err := loadNodeKey(path)
	if !errors.Is(err, os.ErrNotExist) {
		return key, err
	}

	if err := createNodeKey(stateDir, path); err != nil {
		return nil, err
	}
	return loadNodeKey(path)
}

// loadNodeKey reads the node key at path and checks its size and mode.
func loadNodeKey(path string) ([]byte, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("open node key: %w", err)
	}
	defer f.Close()

	fi, err := f.Stat()
	if err != nil {
		return nil, fmt.Errorf("stat node key: %w", err)
	}
	if fi.Mode().Perm()&0o077 != 0 {
		return nil, fmt.Errorf("node key %s: mode %v, readable by others", path, fi.Mode().Perm())
	}

	key := make([]byte, NodeKeySize+1)
	n, err := io.ReadFull(f, key)
	if n != NodeKeySize || !errors.Is(err, io.ErrUnexpectedEOF) {
		return nil, fmt.Errorf("node key %s: want %d bytes", path, NodeKeySize)
	}
	return key[:NodeKeySize], nil
}

// createNodeKey writes a new key to a temporary file and links it to path,
// so that no reader sees a partial key and an existing key is kept.
func createNodeKey(dir, path string) error {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return fmt.Errorf("create state directory: %w", err)
	}

	tmp, err := os.CreateTemp(dir, ".node.key-*")
	if err != nil {
		return fmt.Errorf("create node key: %w", err)
	}
	defer os.Remove(tmp.Name())
	defer tmp.Close()

	key := make([]byte, NodeKeySize)
	rand.Read(key)
	if _, err := tmp.Write(key); err != nil {
		return fmt.Errorf("write node key: %w", err)
	}
	if err := tmp.Sync(); err != nil {
		return fmt.Errorf("sync node key: %w", err)
	}

	err = os.Link(tmp.Name(), path)
	if err != nil && !errors.Is(err, os.ErrExist) {
		return fmt.Errorf("install node key: %w", err)
	}
	return nil
}
