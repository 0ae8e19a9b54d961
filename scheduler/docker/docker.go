// Package docker is the autoscaler's Provisioner on a Docker Engine: each slave is a
// container of the server image running `runbox slave`, labelled with its cluster and
// node name, with CPU, memory and process limits, the Docker socket it needs for its own
// sandbox containers, and the master's address. DOCKER_HOST pointing at another engine
// works.
//
// A slave joins a secured master with the master's join token, which reaches it in its
// environment ($RUNBOX_TOKEN), and with the cluster's CA certificate, copied into its
// container before it starts (the file $RUNBOX_TLS_CA names): never in its arguments,
// which `ps` shows to every user of the machine. The slave container is hardened (see
// slaveConfig): no capability, read-only root, no-new-privileges, a pids and a memory
// limit, and a non-root user in the socket's group. The socket itself is the engine:
// whoever controls a slave controls that engine, which is root on its machine.
package docker

import (
	"archive/tar"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"strconv"
	"sync"
	"time"

	"github.com/containerd/errdefs"
	"github.com/docker/docker/api/types/container"
	"github.com/docker/docker/api/types/filters"
	"github.com/docker/docker/api/types/network"
	"github.com/docker/docker/client"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"

	"runbox/scheduler"
)

// Config configures a Provisioner: the slaves as the scheduler's SlaveTemplate describes
// them, and the engine that runs them.
type Config struct {
	scheduler.SlaveTemplate
	// Host is the Docker engine address; empty takes DOCKER_HOST or the local socket.
	Host string
	// SocketGID is the group that owns DockerSocket on the engine's machine (SocketGroup
	// finds it): slaves run as the unprivileged SlaveUser with this group added, which is
	// what lets them use the socket. Negative: unknown, and slaves run as root (still with
	// every capability dropped: root owns the socket, so it needs none).
	SocketGID int
}

// Where the CA certificate is in a slave container, and the user a slave runs as.
const (
	CADir     = "/run/runbox"
	CAPath    = CADir + "/ca.crt"
	SlaveUser = "65534" // nobody
)

// DefaultConfig returns a Config for the local engine.
func DefaultConfig() Config {
	return Config{SlaveTemplate: scheduler.DefaultSlaveTemplate(), SocketGID: -1}
}

// Validate reports the first invalid field.
func (c Config) Validate() error { return c.SlaveTemplate.Validate() }

// stopSeconds is StopGrace in the engine's unit, whole seconds (rounded up).
func (c Config) stopSeconds() int { return int((c.StopGrace + time.Second - 1) / time.Second) }

type dockerAPI interface {
	ContainerCreate(ctx context.Context, cfg *container.Config, host *container.HostConfig, net *network.NetworkingConfig, platform *ocispec.Platform, name string) (container.CreateResponse, error)
	ContainerStart(ctx context.Context, id string, opts container.StartOptions) error
	ContainerStop(ctx context.Context, id string, opts container.StopOptions) error
	ContainerRemove(ctx context.Context, id string, opts container.RemoveOptions) error
	ContainerList(ctx context.Context, opts container.ListOptions) ([]container.Summary, error)
	CopyToContainer(ctx context.Context, id, dstPath string, content io.Reader, opts container.CopyToContainerOptions) error
	Close() error
}

// Provisioner starts and stops slave containers. It also keeps the autoscaler's next
// slave created ahead of time (scheduler.Preparer), so that a scale-up only starts it.
type Provisioner struct {
	cfg Config
	api dockerAPI

	mu      sync.Mutex
	standby *standby // the prepared slave, if any
}

// standby is a slave container created ahead of its Start.
type standby struct {
	name string
	id   string        // set, when the create succeeded, before done is closed
	done chan struct{} // closed when the create has ended
}

var (
	_ scheduler.Provisioner = (*Provisioner)(nil)
	_ scheduler.Preparer    = (*Provisioner)(nil)
)

// New connects to the engine.
func New(cfg Config) (*Provisioner, error) {
	if err := cfg.Validate(); err != nil {
		return nil, fmt.Errorf("docker %w", err)
	}
	opts := []client.Opt{client.FromEnv, client.WithAPIVersionNegotiation()}
	if cfg.Host != "" {
		opts = append(opts, client.WithHost(cfg.Host))
	}
	cli, err := client.NewClientWithOpts(opts...)
	if err != nil {
		return nil, fmt.Errorf("docker provisioner: %w", err)
	}
	return &Provisioner{cfg: cfg, api: cli}, nil
}

// Close releases the engine connection.
func (p *Provisioner) Close() error { return p.api.Close() }

// containerName is the slave container's name for node name.
func (p *Provisioner) containerName(name string) string { return "runbox-" + name }

// slaveConfig is the one place that decides how a slave container is built. A slave needs
// the network (it dials the master), the Docker socket (its sandboxes) and nothing else:
// no capability (the socket's group, or root as its owner, opens it), no write to its
// root (a small tmpfs /tmp for what a library may want to write), no new privileges, at
// most cfg.Pids processes and threads, no swap. TestSlaveConfigHardening pins it.
func slaveConfig(cfg Config, name string) (*container.Config, *container.HostConfig) {
	var env []string
	if cfg.JoinToken != "" {
		env = append(env, "RUNBOX_TOKEN="+cfg.JoinToken)
	}
	c := &container.Config{
		Image:       cfg.Image,
		Cmd:         cfg.SlaveArgs(name),
		Env:         env,
		Labels:      cfg.SlaveLabels(name),
		StopTimeout: ptr(cfg.stopSeconds()), // a stopping slave finishes what it runs
	}
	h := &container.HostConfig{
		NetworkMode:    container.NetworkMode(cfg.Network),
		Binds:          []string{cfg.DockerSocket + ":/var/run/docker.sock"},
		ReadonlyRootfs: true,
		Tmpfs:          map[string]string{"/tmp": "rw,noexec,nosuid,nodev,size=16m"},
		CapDrop:        []string{"ALL"},
		SecurityOpt:    []string{"no-new-privileges"},
		Resources: container.Resources{
			NanoCPUs:   int64(cfg.CPUs * 1e9),
			Memory:     cfg.Memory,
			MemorySwap: cfg.Memory, // memory+swap: no swap (0 when there is no limit)
		},
		LogConfig: container.LogConfig{Type: "json-file", Config: map[string]string{"max-size": "10m", "max-file": "2"}},
	}
	if cfg.Pids > 0 {
		h.PidsLimit = ptr(cfg.Pids)
	}
	if cfg.SocketGID >= 0 {
		c.User = SlaveUser + ":" + SlaveUser
		h.GroupAdd = []string{strconv.Itoa(cfg.SocketGID)}
	}
	if len(cfg.CA) > 0 {
		// The root is read-only and the engine copies into a created container only on a
		// volume: an anonymous one, removed with the container.
		c.Volumes = map[string]struct{}{CADir: {}}
		c.Env = append(c.Env, "RUNBOX_TLS_CA="+CAPath)
	}
	return c, h
}

// caArchive is the tar archive of the CA certificate that create copies to CADir.
func caArchive(ca []byte) (io.Reader, error) {
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	if err := tw.WriteHeader(&tar.Header{Name: "ca.crt", Mode: 0o644, Size: int64(len(ca)), Typeflag: tar.TypeReg}); err != nil {
		return nil, err
	}
	if _, err := tw.Write(ca); err != nil {
		return nil, err
	}
	if err := tw.Close(); err != nil {
		return nil, err
	}
	return &buf, nil
}

func ptr[T any](v T) *T { return &v }

// Start implements scheduler.Provisioner. A slave prepared under this name only needs
// starting; otherwise its container is created first.
func (p *Provisioner) Start(ctx context.Context, name string) error {
	p.mu.Lock()
	sb := p.standby
	if sb != nil && sb.name == name {
		p.standby = nil
	} else {
		sb = nil
	}
	p.mu.Unlock()
	if sb != nil {
		<-sb.done
		if sb.id != "" {
			if err := p.api.ContainerStart(ctx, sb.id, container.StartOptions{}); err == nil {
				return nil
			}
			p.remove(ctx, sb.id) // start afresh below
		}
	}
	id, err := p.create(ctx, name)
	if err != nil {
		return err
	}
	if err := p.api.ContainerStart(ctx, id, container.StartOptions{}); err != nil {
		p.remove(ctx, id)
		return fmt.Errorf("start slave container: %w", err)
	}
	return nil
}

// create creates the slave container of name, replacing a leftover of the same name.
func (p *Provisioner) create(ctx context.Context, name string) (string, error) {
	cfg, host := slaveConfig(p.cfg, name)
	created, err := p.api.ContainerCreate(ctx, cfg, host, nil, nil, p.containerName(name))
	if errdefs.IsConflict(err) { // a leftover of the same name: replace it
		p.remove(ctx, p.containerName(name))
		created, err = p.api.ContainerCreate(ctx, cfg, host, nil, nil, p.containerName(name))
	}
	if err != nil {
		return "", fmt.Errorf("create slave container: %w", err)
	}
	if len(p.cfg.CA) > 0 {
		ar, err := caArchive(p.cfg.CA)
		if err == nil {
			err = p.api.CopyToContainer(ctx, created.ID, CADir, ar, container.CopyToContainerOptions{})
		}
		if err != nil {
			p.remove(ctx, created.ID)
			return "", fmt.Errorf("copy the CA certificate into the slave container: %w", err)
		}
	}
	return created.ID, nil
}

// Prepare implements scheduler.Preparer: it creates the container of the slave that will
// be started next, and removes the one prepared before under another name. A prepared
// container is not running: List and a master restart remove it.
func (p *Provisioner) Prepare(ctx context.Context, name string) error {
	p.mu.Lock()
	old := p.standby
	if old != nil && old.name == name {
		p.mu.Unlock()
		return nil
	}
	sb := &standby{name: name, done: make(chan struct{})}
	p.standby = sb
	p.mu.Unlock()
	// Not cancelled with ctx (the autoscaler's, which its stop cancels): an engine that got
	// the create may make the container anyway, and Discard can only remove a container
	// whose id the create returned.
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), prepareTimeout)
	defer cancel()
	if old != nil {
		<-old.done
		if old.id != "" {
			p.remove(ctx, old.id)
		}
	}
	id, err := p.create(ctx, name)
	if err != nil {
		p.mu.Lock()
		if p.standby == sb {
			p.standby = nil
		}
		p.mu.Unlock()
	}
	sb.id = id
	close(sb.done)
	if err != nil {
		return fmt.Errorf("prepare slave: %w", err)
	}
	return nil
}

// prepareTimeout bounds Prepare's engine calls, which its caller's cancel does not end.
const prepareTimeout = 2 * time.Minute

// Discard implements scheduler.Preparer: it removes the prepared container, if any.
func (p *Provisioner) Discard(ctx context.Context) error {
	p.mu.Lock()
	sb := p.standby
	p.standby = nil
	p.mu.Unlock()
	if sb == nil {
		return nil
	}
	<-sb.done
	if sb.id == "" {
		return nil
	}
	return p.remove(ctx, sb.id)
}

// Stop implements scheduler.Provisioner: the slave gets SIGTERM (it finishes what it
// runs and removes its sandboxes), then its container is removed, and any sandbox it left
// behind with it.
func (p *Provisioner) Stop(ctx context.Context, name string) error {
	id := p.containerName(name)
	timeout := p.cfg.stopSeconds()
	if err := p.api.ContainerStop(ctx, id, container.StopOptions{Timeout: &timeout}); err != nil && !errdefs.IsNotFound(err) {
		return fmt.Errorf("stop slave container: %w", err)
	}
	if err := p.remove(ctx, id); err != nil {
		return err
	}
	return p.removeSandboxes(ctx, name)
}

func (p *Provisioner) remove(ctx context.Context, id string) error {
	// RemoveVolumes: the anonymous volume of the CA certificate goes with it.
	err := p.api.ContainerRemove(ctx, id, container.RemoveOptions{Force: true, RemoveVolumes: true})
	if err == nil || errdefs.IsNotFound(err) || errdefs.IsConflict(err) {
		return nil
	}
	return fmt.Errorf("remove slave container: %w", err)
}

func (p *Provisioner) removeSandboxes(ctx context.Context, name string) error {
	list, err := p.api.ContainerList(ctx, container.ListOptions{All: true, Filters: filters.NewArgs(filters.Arg("label", scheduler.LabelOwner+"=runbox-"+name))})
	if err != nil {
		return fmt.Errorf("list sandboxes: %w", err)
	}
	for _, c := range list {
		p.remove(ctx, c.ID)
	}
	return nil
}

// List implements scheduler.Provisioner: the running slaves of the cluster. Exited ones
// (crashed, or killed with the machine) are removed on the way.
func (p *Provisioner) List(ctx context.Context) ([]string, error) {
	list, err := p.api.ContainerList(ctx, container.ListOptions{All: true, Filters: filters.NewArgs(
		filters.Arg("label", scheduler.LabelCluster+"="+p.cfg.Cluster), filters.Arg("label", scheduler.LabelRole+"=slave"))})
	if err != nil {
		return nil, fmt.Errorf("list slave containers: %w", err)
	}
	var names []string
	for _, c := range list {
		name := c.Labels[scheduler.LabelNode]
		if c.State != "running" {
			p.remove(ctx, c.ID)
			p.removeSandboxes(ctx, name)
			continue
		}
		names = append(names, name)
	}
	return names, nil
}

// RemoveAll stops and removes every slave of the cluster (cluster teardown).
func (p *Provisioner) RemoveAll(ctx context.Context) error {
	names, err := p.List(ctx)
	if err != nil {
		return err
	}
	var errs []error
	for _, n := range names {
		errs = append(errs, p.Stop(ctx, n))
	}
	return errors.Join(errs...)
}
