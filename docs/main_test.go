package docs

import (
	"os"
	"testing"
)

// TestMain points the client directory (internal/clientconf) at an empty directory for
// every test and every process a test starts: the credentials that make cluster wrote
// for this machine's user must not change what the tests' clients do.
func TestMain(m *testing.M) {
	dir, err := os.MkdirTemp("", "runbox-clientdir-")
	if err != nil {
		panic(err)
	}
	os.Setenv("RUNBOX_CONFIG_DIR", dir)
	code := m.Run()
	os.RemoveAll(dir)
	os.Exit(code)
}
