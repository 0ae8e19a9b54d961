// Package swarm is the autoscaler's Provisioner on a Docker Swarm: each slave is a Swarm
// service of the server image running `runbox slave`, with one replica, which Swarm
// places on any node of the swarm (its spread strategy puts it on the node with the fewest
// tasks). The master's engine must be a swarm manager; every node needs the server and
// runtime images (a registry, or `docker save | docker load` on each node).
//
// Why a service per slave and not one service whose replica count goes up and down: the
// autoscaler drains one particular slave (the one idle longest) and must then stop that
// one, but Swarm alone chooses which task goes when replicas drop. Its choice (swarmkit's
// replicated orchestrator) first balances nodes, then prefers non-running tasks, and only
// then the highest slot (older engines: any slot). On one node that is the highest slot,
// on several it can be a busy slave on a crowded node, while the drained one stays. With
// one service per slave, scaling one service to 0 stops exactly the slave it names, on
// whichever node it runs, and new slaves still spread over the nodes.
//
// Stop scales the service to 0 replicas, waits until its task has ended (the slave got
// SIGTERM, finished what it ran and removed its sandboxes, within StopGrace) and Swarm has
// deleted it, then removes the service (never earlier: see retire). Services and their
// containers carry the scheduler's labels, as scheduler/docker's slave containers do
// (runbox.cluster, runbox.role=slave, runbox.node), so `docker service ls --filter
// label=runbox.cluster=NAME` and `docker ps --filter ...` find them.
//
// Credentials: the master's join token and the cluster's CA certificate reach the slaves
// as Docker secrets (files under /run/secrets, named by $RUNBOX_TOKEN_FILE and
// $RUNBOX_TLS_CA), never in their arguments or environment. A secret's name carries a
// hash of its content (secrets cannot change), so a new token makes a new secret; New
// creates the current ones and removes the cluster's older ones that no service uses.
//
// Hardening: as scheduler/docker's slave containers (no capability, read-only root with a
// tmpfs /tmp, no-new-privileges on engines that take it in a service (API 1.46), a pids
// and a memory limit), except the user: a Swarm slave runs as root, because the Docker
// socket's group differs from node to node and a service has one list of groups for all.
// Root owns the socket, so it reaches it without any capability.
package swarm

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"regexp"
	"strings"
	"time"

	"github.com/containerd/errdefs"
	"github.com/docker/docker/api/types/container"
	"github.com/docker/docker/api/types/filters"
	"github.com/docker/docker/api/types/mount"
	"github.com/docker/docker/api/types/swarm"
	"github.com/docker/docker/api/types/system"
	"github.com/docker/docker/client"

	"runbox/scheduler"
)

// Labels on slave services and their containers: the scheduler's, as on scheduler/docker's
// slave containers.
const (
	LabelCluster = scheduler.LabelCluster
	LabelRole    = scheduler.LabelRole
	LabelNode    = scheduler.LabelNode
	labelOwner   = scheduler.LabelOwner
)

// The slaves' secrets, as files in their containers.
const (
	TokenSecretFile = "/run/secrets/runbox-join-token"
	CASecretFile    = "/run/secrets/runbox-ca.crt"
	// roleSecret labels the secrets the provisioner makes (runbox.role).
	roleSecret = "slave-credential"
)

// Config configures a Provisioner: the slaves as the scheduler's SlaveTemplate describes
// them, where Image is each node's local copy when the registry has none (Swarm logs that
// the pull failed, then runs it), Network "host" (slaves reach a master on 127.0.0.1 or
// the node's address) or an overlay network the master is on, and DockerSocket the engine
// socket on every node; the swarm manager's engine; and where Swarm may place them.
type Config struct {
	scheduler.SlaveTemplate
	// Host is a swarm manager's engine address; empty takes DOCKER_HOST or the local
	// socket.
	Host string
	// Constraints are Swarm placement constraints for slaves ("node.role==worker").
	Constraints []string
	// RestartDelay is how long Swarm waits before it restarts a slave that died.
	RestartDelay time.Duration
	// StopPoll is how often Stop looks at the stopping slave's task; StopMargin how much
	// longer than StopGrace it waits for the task to end (its node may be gone) before it
	// leaves the service at 0 replicas for a later List to remove.
	StopPoll   time.Duration
	StopMargin time.Duration
}

// DefaultConfig returns a Config for a swarm whose manager is the local engine.
func DefaultConfig() Config {
	return Config{SlaveTemplate: scheduler.DefaultSlaveTemplate(), RestartDelay: 2 * time.Second,
		StopPoll: 250 * time.Millisecond, StopMargin: 30 * time.Second}
}

// Validate reports the first invalid field.
func (c Config) Validate() error {
	if err := c.SlaveTemplate.Validate(); err != nil {
		return fmt.Errorf("swarm %w", err)
	}
	switch {
	case c.RestartDelay < 0 || c.StopMargin < 0:
		return errors.New("swarm provisioner: the restart delay and the stop margin must not be negative")
	case c.StopPoll <= 0:
		return errors.New("swarm provisioner: the stop poll interval must be positive")
	}
	return nil
}

// swarmAPI is the part of the Docker client the provisioner uses.
type swarmAPI interface {
	Info(ctx context.Context) (system.Info, error)
	ServiceCreate(ctx context.Context, spec swarm.ServiceSpec, opts swarm.ServiceCreateOptions) (swarm.ServiceCreateResponse, error)
	ServiceUpdate(ctx context.Context, id string, version swarm.Version, spec swarm.ServiceSpec, opts swarm.ServiceUpdateOptions) (swarm.ServiceUpdateResponse, error)
	ServiceList(ctx context.Context, opts swarm.ServiceListOptions) ([]swarm.Service, error)
	ServiceRemove(ctx context.Context, id string) error
	SecretCreate(ctx context.Context, spec swarm.SecretSpec) (swarm.SecretCreateResponse, error)
	SecretList(ctx context.Context, opts swarm.SecretListOptions) ([]swarm.Secret, error)
	SecretRemove(ctx context.Context, id string) error
	TaskList(ctx context.Context, opts swarm.TaskListOptions) ([]swarm.Task, error)
	ContainerList(ctx context.Context, opts container.ListOptions) ([]container.Summary, error)
	ContainerRemove(ctx context.Context, id string, opts container.RemoveOptions) error
	Close() error
}

// Provisioner starts and stops slaves as Swarm services.
type Provisioner struct {
	cfg     Config
	api     swarmAPI
	secrets []*swarm.SecretReference // the slaves' credentials, made by New
}

var _ scheduler.Provisioner = (*Provisioner)(nil)

// New connects to the engine and checks that it is a swarm manager.
func New(ctx context.Context, cfg Config) (*Provisioner, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	opts := []client.Opt{client.FromEnv, client.WithAPIVersionNegotiation()}
	if cfg.Host != "" {
		opts = append(opts, client.WithHost(cfg.Host))
	}
	cli, err := client.NewClientWithOpts(opts...)
	if err != nil {
		return nil, fmt.Errorf("swarm provisioner: %w", err)
	}
	p, err := newProvisioner(ctx, cfg, cli)
	if err != nil {
		cli.Close()
		return nil, err
	}
	return p, nil
}

func newProvisioner(ctx context.Context, cfg Config, api swarmAPI) (*Provisioner, error) {
	info, err := api.Info(ctx)
	if err != nil {
		return nil, fmt.Errorf("swarm provisioner: engine info: %w", err)
	}
	if info.Swarm.LocalNodeState != swarm.LocalNodeStateActive || !info.Swarm.ControlAvailable {
		return nil, fmt.Errorf("swarm provisioner: the engine is not a swarm manager (swarm state %q): run `docker swarm init` or point --docker-host at a manager",
			info.Swarm.LocalNodeState)
	}
	p := &Provisioner{cfg: cfg, api: api}
	if p.secrets, err = p.ensureSecrets(ctx); err != nil {
		return nil, err
	}
	return p, nil
}

// ensureSecrets makes the secrets of the slaves' credentials (or finds them, made by an
// earlier run) and removes the cluster's other credential secrets that no service uses.
func (p *Provisioner) ensureSecrets(ctx context.Context) ([]*swarm.SecretReference, error) {
	var refs []*swarm.SecretReference
	keep := map[string]bool{}
	for _, c := range []struct {
		kind, file string
		data       []byte
	}{
		{"join", TokenSecretFile, []byte(p.cfg.JoinToken)},
		{"ca", CASecretFile, p.cfg.CA},
	} {
		if len(c.data) == 0 {
			continue
		}
		sum := sha256.Sum256(c.data)
		name := secretName(p.cfg.Cluster, c.kind, hex.EncodeToString(sum[:6]))
		id, err := p.ensureSecret(ctx, name, c.data)
		if err != nil {
			return nil, err
		}
		keep[id] = true
		refs = append(refs, &swarm.SecretReference{SecretID: id, SecretName: name, File: &swarm.SecretReferenceFileTarget{
			Name: strings.TrimPrefix(c.file, "/run/secrets/"), UID: "0", GID: "0", Mode: 0o400}})
	}
	old, err := p.clusterSecrets(ctx)
	if err != nil {
		return nil, err
	}
	for _, s := range old {
		if !keep[s.ID] {
			p.api.SecretRemove(ctx, s.ID) // in use by a leftover service: removed another time
		}
	}
	return refs, nil
}

// secretName is a credential secret's name: the kind, a hash of its content and the
// cluster, within Swarm's 64 characters.
func secretName(cluster, kind, hash string) string {
	return serviceName("runbox-" + kind + "-" + hash + "-" + cluster)
}

func (p *Provisioner) ensureSecret(ctx context.Context, name string, data []byte) (string, error) {
	find := func() (string, error) {
		list, err := p.api.SecretList(ctx, swarm.SecretListOptions{Filters: filters.NewArgs(filters.Arg("name", name))})
		if err != nil {
			return "", fmt.Errorf("list secrets: %w", err)
		}
		for _, s := range list {
			if s.Spec.Name == name {
				return s.ID, nil
			}
		}
		return "", nil
	}
	if id, err := find(); id != "" || err != nil {
		return id, err
	}
	resp, err := p.api.SecretCreate(ctx, swarm.SecretSpec{Annotations: swarm.Annotations{Name: name,
		Labels: map[string]string{LabelCluster: p.cfg.Cluster, LabelRole: roleSecret}}, Data: data})
	if errdefs.IsConflict(err) { // made meanwhile
		return find()
	}
	if err != nil {
		return "", fmt.Errorf("create the slaves' secret: %w", err)
	}
	return resp.ID, nil
}

// clusterSecrets are the credential secrets of the cluster.
func (p *Provisioner) clusterSecrets(ctx context.Context) ([]swarm.Secret, error) {
	list, err := p.api.SecretList(ctx, swarm.SecretListOptions{Filters: filters.NewArgs(
		filters.Arg("label", LabelCluster+"="+p.cfg.Cluster), filters.Arg("label", LabelRole+"="+roleSecret))})
	if err != nil {
		return nil, fmt.Errorf("list secrets: %w", err)
	}
	return list, nil
}

// Close releases the engine connection.
func (p *Provisioner) Close() error { return p.api.Close() }

var badServiceChars = regexp.MustCompile(`[^a-zA-Z0-9-]+`)

// serviceName is the slave's service name: the node name, reduced to what Swarm accepts
// (letters, digits, '-', at most 63). Services are found by their labels, not by it.
func serviceName(node string) string {
	s := strings.Trim(badServiceChars.ReplaceAllString(node, "-"), "-")
	if len(s) > 63 {
		s = strings.TrimRight(s[:63], "-")
	}
	if s == "" {
		s = "runbox-slave"
	}
	return s
}

// serviceSpec is the one place that decides how a slave service is built; secrets are the
// slaves' credentials. TestServiceSpec pins it.
func serviceSpec(cfg Config, name string, secrets []*swarm.SecretReference) swarm.ServiceSpec {
	labels := cfg.SlaveLabels(name)
	args := cfg.SlaveArgs(name)
	grace := cfg.StopGrace
	delay := cfg.RestartDelay
	var placement *swarm.Placement
	if len(cfg.Constraints) > 0 {
		placement = &swarm.Placement{Constraints: cfg.Constraints}
	}
	env := []string{"RUNBOX_NODE=" + name}
	for _, s := range secrets {
		switch "/run/secrets/" + s.File.Name {
		case TokenSecretFile:
			env = append(env, "RUNBOX_TOKEN_FILE="+TokenSecretFile)
		case CASecretFile:
			env = append(env, "RUNBOX_TLS_CA="+CASecretFile)
		}
	}
	return swarm.ServiceSpec{
		Annotations: swarm.Annotations{Name: serviceName(name), Labels: labels},
		TaskTemplate: swarm.TaskSpec{
			ContainerSpec: &swarm.ContainerSpec{
				Image:   cfg.Image,
				Args:    args,
				Env:     env,
				Labels:  labels,
				Secrets: secrets,
				Mounts: []mount.Mount{
					{Type: mount.TypeBind, Source: cfg.DockerSocket, Target: "/var/run/docker.sock"},
					{Type: mount.TypeTmpfs, Target: "/tmp", TmpfsOptions: &mount.TmpfsOptions{SizeBytes: 16 << 20, Mode: 0o1777}},
				},
				ReadOnly:       true,
				CapabilityDrop: []string{"ALL"},
				Privileges:     &swarm.Privileges{NoNewPrivileges: true},
				// A stopping slave tells the master it drains and finishes what it runs.
				StopSignal:      "SIGTERM",
				StopGracePeriod: &grace,
			},
			Resources: &swarm.ResourceRequirements{Limits: &swarm.Limit{
				NanoCPUs: int64(cfg.CPUs * 1e9), MemoryBytes: cfg.Memory, Pids: cfg.Pids}},
			// A slave that dies, or whose node goes, comes back (on another node) under the
			// same name; one that never registers is stopped by the autoscaler.
			RestartPolicy: &swarm.RestartPolicy{Condition: swarm.RestartPolicyConditionAny, Delay: &delay},
			Placement:     placement,
			Networks:      []swarm.NetworkAttachmentConfig{{Target: cfg.Network}},
			LogDriver:     &swarm.Driver{Name: "json-file", Options: map[string]string{"max-size": "10m", "max-file": "2"}},
		},
		Mode: swarm.ServiceMode{Replicated: &swarm.ReplicatedService{Replicas: ptr(uint64(1))}},
		// Slaves dial out and are never dialled: no virtual IP, so no IPVS load balancer
		// (kernels without ip_vs cannot run one).
		EndpointSpec: &swarm.EndpointSpec{Mode: swarm.ResolutionModeDNSRR},
	}
}

func ptr[T any](v T) *T { return &v }

// Start implements scheduler.Provisioner: it creates the slave's service with one replica.
// A leftover service of the same name is retired first.
func (p *Provisioner) Start(ctx context.Context, name string) error {
	spec := serviceSpec(p.cfg, name, p.secrets)
	// QueryRegistry false: no digest lookup, so an image that exists only on the nodes
	// (no registry) works.
	opts := swarm.ServiceCreateOptions{QueryRegistry: false}
	_, err := p.api.ServiceCreate(ctx, spec, opts)
	if errdefs.IsConflict(err) {
		old, ok, ferr := p.find(ctx, name)
		if ferr != nil {
			return ferr
		}
		if !ok {
			return fmt.Errorf("create slave service: %q is taken by a service that is not this cluster's: %w", spec.Name, err)
		}
		removed, rerr := p.retire(ctx, old)
		if rerr != nil {
			return rerr
		}
		if !removed {
			return fmt.Errorf("create slave service: the leftover service %q is still stopping", spec.Name)
		}
		_, err = p.api.ServiceCreate(ctx, spec, opts)
	}
	if err != nil {
		return fmt.Errorf("create slave service: %w", err)
	}
	return nil
}

// Stop implements scheduler.Provisioner: the service goes to 0 replicas, its task gets
// SIGTERM (the slave finishes what it runs and removes its sandboxes), and once Swarm has
// deleted the ended task the service is removed, with any sandbox the slave left on this
// engine. A task that does not end within StopGrace and StopMargin (its node is gone) leaves
// the service at 0 replicas: Swarm stops it when the node returns, List removes it later.
func (p *Provisioner) Stop(ctx context.Context, name string) error {
	svc, ok, err := p.find(ctx, name)
	if err != nil {
		return err
	}
	if ok {
		if _, err := p.retire(ctx, svc); err != nil {
			return err
		}
	}
	return p.removeSandboxes(ctx, name)
}

// find returns the cluster's service of the named slave.
func (p *Provisioner) find(ctx context.Context, name string) (swarm.Service, bool, error) {
	list, err := p.api.ServiceList(ctx, swarm.ServiceListOptions{Filters: filters.NewArgs(
		filters.Arg("label", LabelCluster+"="+p.cfg.Cluster), filters.Arg("label", LabelNode+"="+name))})
	if err != nil {
		return swarm.Service{}, false, fmt.Errorf("list slave services: %w", err)
	}
	for _, s := range list {
		if s.Spec.Labels[LabelNode] == name && s.Spec.Labels[LabelCluster] == p.cfg.Cluster {
			return s, true, nil
		}
	}
	return swarm.Service{}, false, nil
}

// retire scales the service to 0, waits until Swarm has stopped its task and deleted it,
// then removes the service; removed is false when the task outlived the wait.
//
// A service is removed only once it has no task left: Docker 20.10's swarm manager
// panics, and the whole engine with it, when a service is removed while its task reaper
// deletes one of the service's tasks (swarmkit's SetServiceTasksRemove reads the deleted
// task back as nil; later releases check). Removing right after the task has ended is
// exactly that moment; removing a service without tasks never is.
func (p *Provisioner) retire(ctx context.Context, svc swarm.Service) (removed bool, err error) {
	if err := p.scaleToZero(ctx, svc); err != nil {
		return false, err
	}
	gone, err := p.waitNoTasks(ctx, svc.ID, p.cfg.StopGrace+p.cfg.StopMargin)
	if err != nil || !gone {
		return false, err
	}
	if err := p.api.ServiceRemove(ctx, svc.ID); err != nil && !errdefs.IsNotFound(err) {
		return false, fmt.Errorf("remove slave service: %w", err)
	}
	return true, nil
}

func (p *Provisioner) scaleToZero(ctx context.Context, svc swarm.Service) error {
	for attempt := 0; ; attempt++ {
		if r := svc.Spec.Mode.Replicated; r == nil || r.Replicas == nil || *r.Replicas == 0 {
			return nil
		}
		spec := svc.Spec
		spec.Mode = swarm.ServiceMode{Replicated: &swarm.ReplicatedService{Replicas: ptr(uint64(0))}}
		_, err := p.api.ServiceUpdate(ctx, svc.ID, svc.Version, spec, swarm.ServiceUpdateOptions{})
		switch {
		case err == nil:
			return nil
		case errdefs.IsNotFound(err):
			return nil
		case attempt == 2:
			return fmt.Errorf("scale slave service to 0: %w", err)
		}
		// Most likely "update out of sequence": someone changed it meanwhile; read it again.
		fresh, ok, ferr := p.find(ctx, svc.Spec.Labels[LabelNode])
		if ferr != nil || !ok {
			return ferr
		}
		svc = fresh
	}
}

// tasks returns the service's tasks (ended ones too, until Swarm deletes them).
func (p *Provisioner) tasks(ctx context.Context, id string) ([]swarm.Task, error) {
	tasks, err := p.api.TaskList(ctx, swarm.TaskListOptions{Filters: filters.NewArgs(filters.Arg("service", id))})
	if errdefs.IsNotFound(err) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("list slave tasks: %w", err)
	}
	return tasks, nil
}

// waitNoTasks waits until a service scaled to 0 has no task left: its slave ended and
// Swarm's task reaper deleted the task. It reports false after wait.
func (p *Provisioner) waitNoTasks(ctx context.Context, id string, wait time.Duration) (bool, error) {
	deadline := time.Now().Add(wait)
	for {
		tasks, err := p.tasks(ctx, id)
		if err != nil {
			return false, err
		}
		if len(tasks) == 0 {
			return true, nil
		}
		if time.Now().After(deadline) {
			return false, nil
		}
		select {
		case <-ctx.Done():
			return false, ctx.Err()
		case <-time.After(p.cfg.StopPoll):
		}
	}
}

// removeSandboxes removes sandboxes the slave left on this engine (it removes its own
// when it stops; this is for one that was killed). Other nodes' slaves reap theirs when a
// slave of the same name starts there again.
func (p *Provisioner) removeSandboxes(ctx context.Context, name string) error {
	list, err := p.api.ContainerList(ctx, container.ListOptions{All: true, Filters: filters.NewArgs(filters.Arg("label", labelOwner+"=runbox-"+name))})
	if err != nil {
		return fmt.Errorf("list sandboxes: %w", err)
	}
	for _, c := range list {
		if err := p.api.ContainerRemove(ctx, c.ID, container.RemoveOptions{Force: true}); err != nil && !errdefs.IsNotFound(err) && !errdefs.IsConflict(err) {
			return fmt.Errorf("remove sandbox: %w", err)
		}
	}
	return nil
}

// List implements scheduler.Provisioner: the slave services of the cluster. A service
// already at 0 replicas (a Stop that a master crash interrupted, or whose task outlived
// it) is not a slave: it is removed once its task is gone.
func (p *Provisioner) List(ctx context.Context) ([]string, error) {
	list, err := p.api.ServiceList(ctx, swarm.ServiceListOptions{Filters: filters.NewArgs(
		filters.Arg("label", LabelCluster+"="+p.cfg.Cluster), filters.Arg("label", LabelRole+"=slave"))})
	if err != nil {
		return nil, fmt.Errorf("list slave services: %w", err)
	}
	var names []string
	for _, s := range list {
		if r := s.Spec.Mode.Replicated; r != nil && r.Replicas != nil && *r.Replicas == 0 {
			tasks, err := p.tasks(ctx, s.ID)
			if err != nil {
				return nil, err
			}
			if len(tasks) == 0 {
				if err := p.api.ServiceRemove(ctx, s.ID); err != nil && !errdefs.IsNotFound(err) {
					return nil, fmt.Errorf("remove slave service: %w", err)
				}
			}
			continue
		}
		names = append(names, s.Spec.Labels[LabelNode])
	}
	return names, nil
}

// RemoveAll stops and removes every slave of the cluster, then the slaves' secrets
// (cluster teardown).
func (p *Provisioner) RemoveAll(ctx context.Context) error {
	names, err := p.List(ctx)
	if err != nil {
		return err
	}
	var errs []error
	for _, n := range names {
		errs = append(errs, p.Stop(ctx, n))
	}
	secrets, err := p.clusterSecrets(ctx)
	if err != nil {
		return errors.Join(append(errs, err)...)
	}
	for _, s := range secrets {
		if err := p.api.SecretRemove(ctx, s.ID); err != nil && !errdefs.IsNotFound(err) {
			errs = append(errs, fmt.Errorf("remove secret %s: %w", s.Spec.Name, err))
		}
	}
	return errors.Join(errs...)
}
