//go:build unix

package docker

import (
	"fmt"
	"os"
	"syscall"
)

// SocketGroup returns the group that owns the Docker socket at path, as seen from this
// process (a master in a container sees the host's socket where it is mounted). A slave
// runs as SlaveUser with this group added: the socket is mode 0660, owned by root and
// this group (the `docker` group, or root's own).
func SocketGroup(path string) (int, error) {
	fi, err := os.Stat(path)
	if err != nil {
		return -1, fmt.Errorf("docker socket: %w", err)
	}
	st, ok := fi.Sys().(*syscall.Stat_t)
	if !ok {
		return -1, fmt.Errorf("docker socket %s: no owner to read", path)
	}
	if fi.Mode().Perm()&0o060 != 0o060 {
		return -1, fmt.Errorf("docker socket %s: mode %v does not let its group read and write it", path, fi.Mode().Perm())
	}
	return int(st.Gid), nil
}
