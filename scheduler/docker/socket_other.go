//go:build !unix

package docker

import "errors"

// SocketGroup is unknown outside Unix: slaves then run as root.
func SocketGroup(string) (int, error) { return -1, errors.New("docker socket: no group outside unix") }
