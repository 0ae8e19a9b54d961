package swarm

import (
	"context"
	"errors"
	"fmt"
	"reflect"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/containerd/errdefs"
	"github.com/docker/docker/api/types/container"
	"github.com/docker/docker/api/types/mount"
	"github.com/docker/docker/api/types/swarm"
	"github.com/docker/docker/api/types/system"

	"runbox/scheduler"
)

// fakeSwarm is a swarm manager in memory: services by ID, each with the tasks its
// replica count asks for; a task scaled away ends after stopAfter TaskList calls.
type fakeSwarm struct {
	mu         sync.Mutex
	info       system.Info
	services   map[string]*swarm.Service
	tasks      map[string][]swarm.Task // service ID → tasks
	containers []container.Summary
	stopAfter  int // TaskList calls a stopping task stays running
	calls      []string
	seq        int
	updateErrs []error // returned by the next ServiceUpdate calls
	secrets    map[string]swarm.Secret
	secretData map[string][]byte // by secret ID
}

func newFake() *fakeSwarm {
	return &fakeSwarm{
		info:     system.Info{Swarm: swarm.Info{LocalNodeState: swarm.LocalNodeStateActive, ControlAvailable: true}},
		services: map[string]*swarm.Service{}, tasks: map[string][]swarm.Task{},
		secrets: map[string]swarm.Secret{}, secretData: map[string][]byte{},
	}
}

func (f *fakeSwarm) SecretCreate(_ context.Context, spec swarm.SecretSpec) (swarm.SecretCreateResponse, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.note("create secret %s", spec.Name)
	for _, s := range f.secrets {
		if s.Spec.Name == spec.Name {
			return swarm.SecretCreateResponse{}, errdefs.ErrConflict
		}
	}
	f.seq++
	id := fmt.Sprint("sec", f.seq)
	f.secretData[id] = spec.Data
	spec.Data = nil // never returned
	f.secrets[id] = swarm.Secret{ID: id, Spec: spec}
	return swarm.SecretCreateResponse{ID: id}, nil
}

// SecretList filters by name prefix (as swarmkit does) and by labels.
func (f *fakeSwarm) SecretList(_ context.Context, opts swarm.SecretListOptions) ([]swarm.Secret, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	var out []swarm.Secret
	for _, s := range f.secrets {
		match := true
		for _, n := range opts.Filters.Get("name") {
			match = match && strings.HasPrefix(s.Spec.Name, n)
		}
		for _, l := range opts.Filters.Get("label") {
			k, v, _ := strings.Cut(l, "=")
			match = match && s.Spec.Labels[k] == v
		}
		if match {
			out = append(out, s)
		}
	}
	slices.SortFunc(out, func(a, b swarm.Secret) int { return strings.Compare(a.ID, b.ID) })
	return out, nil
}

// SecretRemove refuses a secret a service uses, as Swarm does.
func (f *fakeSwarm) SecretRemove(_ context.Context, id string) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	s, ok := f.secrets[id]
	if !ok {
		return errdefs.ErrNotFound
	}
	for _, svc := range f.services {
		for _, r := range svc.Spec.TaskTemplate.ContainerSpec.Secrets {
			if r.SecretID == id {
				return errdefs.ErrInvalidArgument.WithMessage("secret is in use")
			}
		}
	}
	f.note("remove secret %s", s.Spec.Name)
	delete(f.secrets, id)
	return nil
}

func (f *fakeSwarm) note(format string, a ...any) {
	f.calls = append(f.calls, fmt.Sprintf(format, a...))
}

func (f *fakeSwarm) Info(context.Context) (system.Info, error) { return f.info, nil }

func (f *fakeSwarm) ServiceCreate(_ context.Context, spec swarm.ServiceSpec, _ swarm.ServiceCreateOptions) (swarm.ServiceCreateResponse, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.note("create %s", spec.Name)
	for _, s := range f.services {
		if s.Spec.Name == spec.Name {
			return swarm.ServiceCreateResponse{}, errdefs.ErrConflict.WithMessage("name conflicts with an existing object")
		}
	}
	f.seq++
	id := fmt.Sprint("svc", f.seq)
	f.services[id] = &swarm.Service{ID: id, Spec: spec, Meta: swarm.Meta{Version: swarm.Version{Index: 1}}}
	f.tasks[id] = []swarm.Task{{ID: id + ".1", ServiceID: id, Slot: 1, Status: swarm.TaskStatus{State: swarm.TaskStateRunning}}}
	return swarm.ServiceCreateResponse{ID: id}, nil
}

func (f *fakeSwarm) lookupLocked(idOrName string) *swarm.Service {
	if s, ok := f.services[idOrName]; ok {
		return s
	}
	for _, s := range f.services {
		if s.Spec.Name == idOrName {
			return s
		}
	}
	return nil
}

func (f *fakeSwarm) ServiceUpdate(_ context.Context, id string, v swarm.Version, spec swarm.ServiceSpec, _ swarm.ServiceUpdateOptions) (swarm.ServiceUpdateResponse, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	s := f.lookupLocked(id)
	if s == nil {
		return swarm.ServiceUpdateResponse{}, errdefs.ErrNotFound
	}
	f.note("update %s replicas=%d", s.Spec.Name, *spec.Mode.Replicated.Replicas)
	if len(f.updateErrs) > 0 {
		err := f.updateErrs[0]
		f.updateErrs = f.updateErrs[1:]
		s.Version.Index++ // someone else changed it
		return swarm.ServiceUpdateResponse{}, err
	}
	if v != s.Version {
		return swarm.ServiceUpdateResponse{}, errors.New("update out of sequence")
	}
	s.Spec = spec
	s.Version.Index++
	return swarm.ServiceUpdateResponse{}, nil
}

func (f *fakeSwarm) ServiceList(_ context.Context, opts swarm.ServiceListOptions) ([]swarm.Service, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	var out []swarm.Service
	for _, s := range f.services {
		match := true
		for _, l := range opts.Filters.Get("label") {
			k, v, _ := strings.Cut(l, "=")
			match = match && s.Spec.Labels[k] == v
		}
		if match {
			out = append(out, *s)
		}
	}
	slices.SortFunc(out, func(a, b swarm.Service) int { return strings.Compare(a.ID, b.ID) })
	return out, nil
}

// ServiceRemove refuses a service that still has tasks: Docker 20.10's manager panics
// when the task reaper deletes one of them meanwhile (see retire).
func (f *fakeSwarm) ServiceRemove(_ context.Context, id string) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	s := f.lookupLocked(id)
	if s == nil {
		return errdefs.ErrNotFound.WithMessage("service not found")
	}
	if len(f.tasks[s.ID]) > 0 {
		f.note("REMOVED WITH TASKS %s", s.Spec.Name)
		return errors.New("removing a service with tasks: the engine could crash")
	}
	f.note("remove %s", s.Spec.Name)
	delete(f.services, s.ID)
	delete(f.tasks, s.ID)
	return nil
}

// TaskList plays the agent and the task reaper of a service at 0 replicas: a running
// task ends after stopAfter calls, an ended one is deleted at the next call.
func (f *fakeSwarm) TaskList(_ context.Context, opts swarm.TaskListOptions) ([]swarm.Task, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	id := opts.Filters.Get("service")[0]
	s := f.lookupLocked(id)
	if s == nil {
		return nil, errdefs.ErrNotFound.WithMessage("service not found")
	}
	f.note("tasks %s", s.Spec.Name)
	if *s.Spec.Mode.Replicated.Replicas == 0 {
		ts := slices.DeleteFunc(f.tasks[s.ID], func(t swarm.Task) bool { return t.Status.State == swarm.TaskStateShutdown })
		for i := range ts {
			if f.stopAfter > 0 {
				f.stopAfter--
			} else {
				ts[i].Status.State = swarm.TaskStateShutdown
			}
		}
		f.tasks[s.ID] = ts
	}
	return slices.Clone(f.tasks[s.ID]), nil
}

func (f *fakeSwarm) ContainerList(_ context.Context, opts container.ListOptions) ([]container.Summary, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	var out []container.Summary
	for _, c := range f.containers {
		match := true
		for _, l := range opts.Filters.Get("label") {
			k, v, _ := strings.Cut(l, "=")
			match = match && c.Labels[k] == v
		}
		if match {
			out = append(out, c)
		}
	}
	return out, nil
}

func (f *fakeSwarm) ContainerRemove(_ context.Context, id string, _ container.RemoveOptions) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.note("rm container %s", id)
	f.containers = slices.DeleteFunc(f.containers, func(c container.Summary) bool { return c.ID == id })
	return nil
}

func (f *fakeSwarm) Close() error { return nil }

func (f *fakeSwarm) log() []string {
	f.mu.Lock()
	defer f.mu.Unlock()
	return slices.Clone(f.calls)
}

func testConfig() Config {
	c := DefaultConfig()
	c.Cluster = "c1"
	c.Master = "master:7700"
	c.Args = []string{"--image-tag", "v1"}
	return c
}

func newTestProvisioner(t *testing.T, f *fakeSwarm) *Provisioner {
	t.Helper()
	p, err := newProvisioner(context.Background(), testConfig(), f)
	if err != nil {
		t.Fatal(err)
	}
	p.cfg.StopPoll = time.Millisecond
	return p
}

func TestServiceSpec(t *testing.T) {
	t.Parallel()
	cfg := testConfig()
	cfg.CPUs, cfg.Memory, cfg.Pool = 1.5, 512<<20, 2
	cfg.Network = "runbox-swarm"
	cfg.Constraints = []string{"node.role==worker"}
	cfg.Pids = 256
	secrets := []*swarm.SecretReference{{SecretID: "sec1", SecretName: "runbox-join-x-c1", File: &swarm.SecretReferenceFileTarget{Name: "runbox-join-token", UID: "0", GID: "0", Mode: 0o400}}}
	s := serviceSpec(cfg, "c1-slave-3", secrets)
	labels := map[string]string{LabelCluster: "c1", LabelRole: "slave", LabelNode: "c1-slave-3"}
	c := s.TaskTemplate.ContainerSpec
	wantArgs := []string{"slave", "--master", "master:7700", "--node", "c1-slave-3", "--max-programs", "2", "--pool", "2", "--image-tag", "v1"}
	switch {
	case s.Name != "c1-slave-3":
		t.Errorf("name %q", s.Name)
	case s.Mode.Replicated == nil || *s.Mode.Replicated.Replicas != 1:
		t.Errorf("mode %+v: want one replica", s.Mode)
	case s.EndpointSpec == nil || s.EndpointSpec.Mode != swarm.ResolutionModeDNSRR || len(s.EndpointSpec.Ports) != 0:
		t.Errorf("endpoint %+v: want DNS round robin, no ports", s.EndpointSpec)
	case fmt.Sprint(s.Labels) != fmt.Sprint(labels) || fmt.Sprint(c.Labels) != fmt.Sprint(labels):
		t.Errorf("labels %v / %v", s.Labels, c.Labels)
	case c.Image != "runbox/server:latest" || !slices.Equal(c.Args, wantArgs) || len(c.Command) != 0:
		t.Errorf("image %q command %q args %q", c.Image, c.Command, c.Args)
	case !slices.Equal(c.Env, []string{"RUNBOX_NODE=c1-slave-3", "RUNBOX_TOKEN_FILE=/run/secrets/runbox-join-token"}):
		t.Errorf("env %q", c.Env)
	case len(c.Secrets) != 1 || c.Secrets[0] != secrets[0]:
		t.Errorf("secrets %+v", c.Secrets)
	case len(c.Mounts) != 2 || c.Mounts[0] != (mount.Mount{Type: mount.TypeBind, Source: "/var/run/docker.sock", Target: "/var/run/docker.sock"}) ||
		c.Mounts[1].Type != mount.TypeTmpfs || c.Mounts[1].Target != "/tmp" || !reflect.DeepEqual(c.Mounts[1].TmpfsOptions, &mount.TmpfsOptions{SizeBytes: 16 << 20, Mode: 0o1777}):
		t.Errorf("mounts %+v: want the Docker socket and a tmpfs /tmp", c.Mounts)
	// Hardening, as scheduler/docker's TestSlaveConfigHardening, but root (see the package comment).
	case !c.ReadOnly || !slices.Equal(c.CapabilityDrop, []string{"ALL"}) || len(c.CapabilityAdd) != 0:
		t.Errorf("read-only %v cap-drop %v cap-add %v", c.ReadOnly, c.CapabilityDrop, c.CapabilityAdd)
	case c.Privileges == nil || !c.Privileges.NoNewPrivileges || c.Privileges.Seccomp != nil || c.Privileges.AppArmor != nil:
		t.Errorf("privileges %+v: want no-new-privileges and the default seccomp and AppArmor profiles", c.Privileges)
	case c.User != "" || len(c.Groups) != 0 || len(c.Sysctls) != 0:
		t.Errorf("user %q groups %v sysctls %v", c.User, c.Groups, c.Sysctls)
	case s.TaskTemplate.Resources.Limits.Pids != 256:
		t.Errorf("pids limit %d", s.TaskTemplate.Resources.Limits.Pids)
	case c.StopGracePeriod == nil || *c.StopGracePeriod != 60*time.Second || c.StopSignal != "SIGTERM":
		t.Errorf("stop %v %q", c.StopGracePeriod, c.StopSignal)
	case s.TaskTemplate.Resources.Limits.NanoCPUs != 1.5e9 || s.TaskTemplate.Resources.Limits.MemoryBytes != 512<<20:
		t.Errorf("limits %+v", s.TaskTemplate.Resources.Limits)
	case s.TaskTemplate.RestartPolicy.Condition != swarm.RestartPolicyConditionAny:
		t.Errorf("restart %+v", s.TaskTemplate.RestartPolicy)
	case len(s.TaskTemplate.Networks) != 1 || s.TaskTemplate.Networks[0].Target != "runbox-swarm":
		t.Errorf("networks %+v", s.TaskTemplate.Networks)
	case !slices.Equal(s.TaskTemplate.Placement.Constraints, cfg.Constraints):
		t.Errorf("placement %+v", s.TaskTemplate.Placement)
	}
	if s := serviceSpec(testConfig(), "x", nil); s.TaskTemplate.Placement != nil {
		t.Errorf("placement without constraints: %+v", s.TaskTemplate.Placement)
	}
}

func TestServiceName(t *testing.T) {
	t.Parallel()
	for in, want := range map[string]string{
		"runbox-slave-1":               "runbox-slave-1",
		"host.example.com-slave-2":     "host-example-com-slave-2",
		"_x_":                          "x",
		"...":                          "runbox-slave",
		strings.Repeat("a", 62) + "-b": strings.Repeat("a", 62),
	} {
		if got := serviceName(in); got != want {
			t.Errorf("serviceName(%q) = %q, want %q", in, got, want)
		}
	}
}

func TestNewNeedsAManager(t *testing.T) {
	t.Parallel()
	for _, st := range []swarm.Info{
		{LocalNodeState: swarm.LocalNodeStateInactive},
		{LocalNodeState: swarm.LocalNodeStateActive, ControlAvailable: false}, // a worker
	} {
		f := newFake()
		f.info.Swarm = st
		if _, err := newProvisioner(context.Background(), testConfig(), f); err == nil || !strings.Contains(err.Error(), "not a swarm manager") {
			t.Errorf("%+v: err %v", st, err)
		}
	}
	if err := (Config{}).Validate(); err == nil {
		t.Error("empty config valid")
	}
	if err := testConfig().Validate(); err != nil {
		t.Errorf("test config: %v", err)
	}
	for name, mod := range map[string]func(*Config){
		"no stop poll":         func(c *Config) { c.StopPoll = 0 },
		"negative margin":      func(c *Config) { c.StopMargin = -time.Second },
		"negative delay":       func(c *Config) { c.RestartDelay = -time.Second },
		"negative stop grace":  func(c *Config) { c.StopGrace = -time.Second },
		"template without one": func(c *Config) { c.Master = "" },
	} {
		c := testConfig()
		mod(&c)
		if _, err := New(context.Background(), c); err == nil || c.Validate() == nil {
			t.Errorf("%s: valid", name)
		}
	}
}

func TestStartStopList(t *testing.T) {
	t.Parallel()
	f := newFake()
	f.stopAfter = 3
	p := newTestProvisioner(t, f)
	ctx := context.Background()
	for _, n := range []string{"c1-slave-1", "c1-slave-2"} {
		if err := p.Start(ctx, n); err != nil {
			t.Fatal(err)
		}
	}
	// Another cluster's slave on the same swarm is not ours.
	f.ServiceCreate(ctx, serviceSpec(Config{SlaveTemplate: scheduler.SlaveTemplate{Cluster: "other", Image: "i", Network: "host", Master: "m", Capacity: 1}}, "other-slave-1", nil), swarm.ServiceCreateOptions{})
	names, err := p.List(ctx)
	if err != nil || !slices.Equal(names, []string{"c1-slave-1", "c1-slave-2"}) {
		t.Fatalf("List = %v, %v", names, err)
	}
	f.containers = []container.Summary{
		{ID: "sb1", Labels: map[string]string{labelOwner: "runbox-c1-slave-1"}},
		{ID: "sb2", Labels: map[string]string{labelOwner: "runbox-c1-slave-2"}},
	}
	f.calls = nil
	if err := p.Stop(ctx, "c1-slave-1"); err != nil {
		t.Fatal(err)
	}
	// Scaled to 0, waited until its task ended and was deleted, then removed; its
	// sandboxes too.
	want := []string{"update c1-slave-1 replicas=0", "tasks c1-slave-1", "tasks c1-slave-1", "tasks c1-slave-1",
		"tasks c1-slave-1", "tasks c1-slave-1", "remove c1-slave-1", "rm container sb1"}
	if got := f.log(); !slices.Equal(got, want) {
		t.Errorf("Stop calls:\n got %q\nwant %q", got, want)
	}
	if names, _ := p.List(ctx); !slices.Equal(names, []string{"c1-slave-2"}) {
		t.Errorf("after Stop, List = %v", names)
	}
	if err := p.Stop(ctx, "c1-slave-1"); err != nil {
		t.Errorf("stopping a slave that is gone: %v", err)
	}
	if err := p.RemoveAll(ctx); err != nil {
		t.Fatal(err)
	}
	if names, _ := p.List(ctx); len(names) != 0 {
		t.Errorf("after RemoveAll, List = %v", names)
	}
	if len(f.services) != 1 {
		t.Errorf("services left: %v (want the other cluster's)", f.services)
	}
}

func TestStartReplacesALeftover(t *testing.T) {
	t.Parallel()
	f := newFake()
	p := newTestProvisioner(t, f)
	ctx := context.Background()
	if err := p.Start(ctx, "c1-slave-1"); err != nil {
		t.Fatal(err)
	}
	if err := p.Start(ctx, "c1-slave-1"); err != nil {
		t.Fatal(err)
	}
	want := []string{"create c1-slave-1", "create c1-slave-1", "update c1-slave-1 replicas=0", "tasks c1-slave-1",
		"tasks c1-slave-1", "remove c1-slave-1", "create c1-slave-1"}
	if got := f.log(); !slices.Equal(got, want) {
		t.Errorf("calls %q, want %q", got, want)
	}
	// A service of that name that is not this cluster's is left alone.
	f.ServiceCreate(ctx, serviceSpec(Config{SlaveTemplate: scheduler.SlaveTemplate{Cluster: "other", Image: "i", Network: "host", Master: "m", Capacity: 1}}, "c1-slave-2", nil), swarm.ServiceCreateOptions{})
	if err := p.Start(ctx, "c1-slave-2"); err == nil || !strings.Contains(err.Error(), "not this cluster's") {
		t.Errorf("err %v", err)
	}
}

func TestStopLeavesATaskThatOutlivesTheWait(t *testing.T) {
	t.Parallel()
	f := newFake()
	p := newTestProvisioner(t, f)
	p.cfg.StopGrace, p.cfg.StopMargin = 20*time.Millisecond, 0
	ctx := context.Background()
	p.Start(ctx, "c1-slave-1")
	f.stopAfter = 1 << 30 // its node is gone: the task does not end
	if err := p.Stop(ctx, "c1-slave-1"); err != nil {
		t.Fatal(err)
	}
	for _, c := range f.log() {
		if strings.HasPrefix(c, "REMOVED") || strings.HasPrefix(c, "remove") {
			t.Fatalf("removed a service with a task: %q", f.log())
		}
	}
	// Not a slave any more, and not removed while its task is there.
	if names, err := p.List(ctx); err != nil || len(names) != 0 {
		t.Errorf("List = %v, %v", names, err)
	}
	if _, ok, _ := p.find(ctx, "c1-slave-1"); !ok {
		t.Error("removed with its task")
	}
	f.mu.Lock()
	f.stopAfter = 0 // the node is back
	f.mu.Unlock()
	p.List(ctx) // the task ends
	p.List(ctx) // deleted, then the service is removed
	if _, ok, _ := p.find(ctx, "c1-slave-1"); ok {
		t.Errorf("service left after its task went: %q", f.log())
	}
}

func TestStopRetriesAConcurrentUpdate(t *testing.T) {
	t.Parallel()
	f := newFake()
	p := newTestProvisioner(t, f)
	ctx := context.Background()
	p.Start(ctx, "c1-slave-1")
	f.updateErrs = []error{errors.New("update out of sequence")}
	if err := p.Stop(ctx, "c1-slave-1"); err != nil {
		t.Fatal(err)
	}
	if names, _ := p.List(ctx); len(names) != 0 {
		t.Errorf("List = %v", names)
	}
	f.updateErrs = []error{errors.New("boom"), errors.New("boom"), errors.New("boom")}
	p.Start(ctx, "c1-slave-2")
	if err := p.Stop(ctx, "c1-slave-2"); err == nil {
		t.Error("Stop hid a failing update")
	}
}

func TestListRemovesAnInterruptedStop(t *testing.T) {
	t.Parallel()
	f := newFake()
	p := newTestProvisioner(t, f)
	ctx := context.Background()
	p.Start(ctx, "c1-slave-1")
	p.Start(ctx, "c1-slave-2")
	s, _, _ := p.find(ctx, "c1-slave-1")
	if err := p.scaleToZero(ctx, s); err != nil { // the master died here
		t.Fatal(err)
	}
	for range 2 { // its task ends, then Swarm deletes it
		names, err := p.List(ctx)
		if err != nil || !slices.Equal(names, []string{"c1-slave-2"}) {
			t.Errorf("List = %v, %v", names, err)
		}
	}
	if _, ok, _ := p.find(ctx, "c1-slave-1"); ok {
		t.Error("the service scaled to 0 is still there")
	}
	for _, c := range f.log() {
		if strings.HasPrefix(c, "REMOVED") {
			t.Errorf("removed a service with a task: %q", f.log())
		}
	}
}

func TestStopGivesUpWaitingWithTheContext(t *testing.T) {
	t.Parallel()
	f := newFake()
	f.stopAfter = 1 << 30 // the task never ends
	p := newTestProvisioner(t, f)
	p.Start(context.Background(), "c1-slave-1")
	ctx, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
	defer cancel()
	if err := p.Stop(ctx, "c1-slave-1"); !errors.Is(err, context.DeadlineExceeded) {
		t.Errorf("err %v", err)
	}
}

// TestSlaveSecrets: the join token and the CA reach the slaves as Docker secrets, made
// once, named by a hash of their content, never in the service's arguments, environment
// or labels; a new token makes a new secret and the unused old one goes; RemoveAll
// removes them.
func TestSlaveSecrets(t *testing.T) {
	t.Parallel()
	const token = "rbx_the-join-token"
	ca := []byte("-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n")
	f := newFake()
	cfg := testConfig()
	cfg.JoinToken, cfg.CA = token, ca
	ctx := context.Background()
	p, err := newProvisioner(ctx, cfg, f)
	if err != nil {
		t.Fatal(err)
	}
	if len(f.secrets) != 2 {
		t.Fatalf("secrets %v: want the token's and the CA's", f.secrets)
	}
	data := map[string]string{}
	for id, s := range f.secrets {
		data[s.Spec.Name] = string(f.secretData[id])
		if strings.Contains(s.Spec.Name, token) || s.Spec.Labels[LabelCluster] != "c1" {
			t.Errorf("secret %+v", s.Spec)
		}
	}
	if err := p.Start(ctx, "c1-slave-1"); err != nil {
		t.Fatal(err)
	}
	svc, _, _ := p.find(ctx, "c1-slave-1")
	c := svc.Spec.TaskTemplate.ContainerSpec
	files := map[string]string{}
	for _, r := range c.Secrets {
		files["/run/secrets/"+r.File.Name] = data[r.SecretName]
		if r.File.Mode != 0o400 || r.SecretID == "" {
			t.Errorf("secret reference %+v", r)
		}
	}
	if files[TokenSecretFile] != token || files[CASecretFile] != string(ca) {
		t.Errorf("the slave's secret files %q", files)
	}
	if !slices.Contains(c.Env, "RUNBOX_TOKEN_FILE="+TokenSecretFile) || !slices.Contains(c.Env, "RUNBOX_TLS_CA="+CASecretFile) {
		t.Errorf("env %q", c.Env)
	}
	all := strings.Join(append(append(append([]string{}, c.Args...), c.Command...), c.Env...), " ") + fmt.Sprint(c.Labels, svc.Spec.Labels)
	if strings.Contains(all, token) || strings.Contains(all, "MIIB") {
		t.Errorf("a credential in the service's arguments, environment or labels: %s", all)
	}

	// A master restarted with the same credentials finds its secrets.
	n := len(f.log())
	if _, err := newProvisioner(ctx, cfg, f); err != nil {
		t.Fatal(err)
	}
	for _, call := range f.log()[n:] {
		if strings.Contains(call, "secret") {
			t.Errorf("the same credentials again: %q", call)
		}
	}
	// A new token: a new secret; the old one stays while the running slave uses it.
	cfg.JoinToken = "rbx_another"
	p2, err := newProvisioner(ctx, cfg, f)
	if err != nil {
		t.Fatal(err)
	}
	if len(f.secrets) != 3 {
		t.Errorf("secrets after a new token: %d, want 3 (the old token's in use)", len(f.secrets))
	}
	if err := p2.RemoveAll(ctx); err != nil {
		t.Fatal(err)
	}
	if len(f.secrets) != 0 || len(f.services) != 0 {
		t.Errorf("after RemoveAll: secrets %v services %v", f.secrets, f.services)
	}
	// Without credentials (an open cluster): no secret at all.
	if p3, _ := newProvisioner(ctx, testConfig(), f); len(p3.secrets) != 0 || len(f.secrets) != 0 {
		t.Errorf("secrets without credentials: %v", f.secrets)
	}
}
