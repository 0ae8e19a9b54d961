package scheduler

import (
	"errors"
	"strconv"
	"time"
)

// Labels on the slaves a Provisioner starts (containers, Swarm services and their
// containers): `docker ps --filter label=runbox.cluster=NAME` finds a cluster's slaves.
const (
	LabelCluster = "runbox.cluster"
	LabelRole    = "runbox.role"
	LabelNode    = "runbox.node"
	// LabelOwner is the label the sandbox runner (sandbox/docker) puts on a node's
	// sandbox containers, "runbox-" and the node's name: a provisioner that stops a slave
	// removes the sandboxes it left with it.
	LabelOwner = "runbox.owner"
)

// SlaveTemplate is what every slave the autoscaler starts is, whichever Provisioner starts
// it (scheduler/docker as a container, scheduler/swarm as a service): the server image
// running `runbox slave`, where it dials, its capacity and limits, and its credentials.
// The provisioners' Configs embed it.
type SlaveTemplate struct {
	// Cluster labels every slave (LabelCluster); a provisioner finds its slaves by it
	// after a master restart.
	Cluster string
	// Image is the server image ("runbox/server:latest").
	Image string
	// Network is the network slaves join: "host", or a network where Master resolves.
	Network string
	// Master is the address slaves dial.
	Master string
	// Capacity is each slave's --max-programs; Pool its warm containers per language.
	Capacity, Pool int
	// CPUs and Memory limit each slave (0: no limit).
	CPUs   float64
	Memory int64
	// DockerSocket is the engine socket mounted into slaves for their sandboxes.
	DockerSocket string
	// Pids caps the processes and threads of each slave (0: no limit).
	Pids int64
	// JoinToken is the master's join token for its slaves. It reaches them out of their
	// arguments (the environment, or a secret file); never in them. Empty: none.
	JoinToken string
	// CA is the cluster's CA certificate (PEM) when the master speaks TLS; it reaches the
	// slaves as a file. Empty: none.
	CA []byte
	// Args are extra arguments for `runbox slave` (the image tag); never a secret.
	Args []string
	// StopGrace is how long a stopping slave has, after SIGTERM, to finish what it runs
	// and remove its sandboxes before it is killed.
	StopGrace time.Duration
}

// DefaultSlaveTemplate returns the template of `runbox master --autoscale`: slaves of
// capacity 2 on the host network, one core, 1 GiB and 512 processes each, a minute to
// stop.
func DefaultSlaveTemplate() SlaveTemplate {
	return SlaveTemplate{Cluster: "runbox", Image: "runbox/server:latest", Network: "host", Capacity: 2, Pool: 1,
		CPUs: 1, Memory: 1 << 30, DockerSocket: "/var/run/docker.sock", Pids: 512, StopGrace: 60 * time.Second}
}

// Validate reports the first invalid field.
func (t SlaveTemplate) Validate() error {
	switch {
	case t.Cluster == "" || t.Image == "" || t.Network == "" || t.DockerSocket == "":
		return errors.New("provisioner: cluster, image, network and docker socket are needed")
	case t.Master == "":
		return errors.New("provisioner: the address slaves dial (--advertise) is needed")
	case t.Capacity < 1:
		return errors.New("provisioner: slave capacity must be at least 1")
	case t.Pool < 0:
		return errors.New("provisioner: slave pool must not be negative")
	case t.CPUs < 0 || t.Memory < 0 || t.Pids < 0:
		return errors.New("provisioner: slave limits must not be negative")
	case t.StopGrace < 0:
		return errors.New("provisioner: the stop grace must not be negative")
	}
	return nil
}

// SlaveArgs are the arguments of the server image for the slave named name: `runbox
// slave` dialling Master, with the template's capacity, pool and extra arguments. They
// never hold a credential.
func (t SlaveTemplate) SlaveArgs(name string) []string {
	return append([]string{"slave", "--master", t.Master, "--node", name,
		"--max-programs", strconv.Itoa(t.Capacity), "--pool", strconv.Itoa(t.Pool)}, t.Args...)
}

// SlaveLabels are the labels of the slave named name: its cluster, its role, its name.
func (t SlaveTemplate) SlaveLabels(name string) map[string]string {
	return map[string]string{LabelCluster: t.Cluster, LabelRole: "slave", LabelNode: name}
}
