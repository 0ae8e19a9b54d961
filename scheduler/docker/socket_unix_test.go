//go:build unix

package docker

import (
	"os"
	"path/filepath"
	"testing"
)

func TestSocketGroup(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	sock := filepath.Join(dir, "docker.sock")
	if err := os.WriteFile(sock, nil, 0o660); err != nil {
		t.Fatal(err)
	}
	os.Chmod(sock, 0o660)
	gid, err := SocketGroup(sock)
	if err != nil || gid != os.Getgid() {
		t.Errorf("SocketGroup = %d, %v; want %d", gid, err, os.Getgid())
	}
	os.Chmod(sock, 0o600)
	if _, err := SocketGroup(sock); err == nil {
		t.Error("a socket its group cannot write: no error")
	}
	if _, err := SocketGroup(filepath.Join(dir, "none")); err == nil {
		t.Error("a missing socket: no error")
	}
}
