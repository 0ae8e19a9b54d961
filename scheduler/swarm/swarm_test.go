package swarm

import (
	"context"
	"errors"
	"fmt"
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

	dockerprov "runbox/scheduler/docker"
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
}

func newFake() *fakeSwarm {
	return &fakeSwarm{
		info:     system.Info{Swarm: swarm.Info{LocalNodeState: swarm.LocalNodeStateActive, ControlAvailable: true}},
		services: map[string]*swarm.Service{}, tasks: map[string][]swarm.Task{},
	}
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
	p.poll = time.Millisecond
	return p
}

func TestServiceSpec(t *testing.T) {
	t.Parallel()
	cfg := testConfig()
	cfg.CPUs, cfg.Memory, cfg.Pool = 1.5, 512<<20, 2
	cfg.Network = "runbox-swarm"
	cfg.Constraints = []string{"node.role==worker"}
	s := serviceSpec(cfg, "c1-slave-3")
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
	case !slices.Equal(c.Env, []string{"RUNBOX_NODE=c1-slave-3"}):
		t.Errorf("env %q", c.Env)
	case len(c.Mounts) != 1 || c.Mounts[0] != (mount.Mount{Type: mount.TypeBind, Source: "/var/run/docker.sock", Target: "/var/run/docker.sock"}):
		t.Errorf("mounts %+v", c.Mounts)
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
	if s := serviceSpec(testConfig(), "x"); s.TaskTemplate.Placement != nil {
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
	f.ServiceCreate(ctx, serviceSpec(Config{Config: dockerprov.Config{Cluster: "other", Image: "i", Network: "host", Master: "m", Capacity: 1}}, "other-slave-1"), swarm.ServiceCreateOptions{})
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
	f.ServiceCreate(ctx, serviceSpec(Config{Config: dockerprov.Config{Cluster: "other", Image: "i", Network: "host", Master: "m", Capacity: 1}}, "c1-slave-2"), swarm.ServiceCreateOptions{})
	if err := p.Start(ctx, "c1-slave-2"); err == nil || !strings.Contains(err.Error(), "not this cluster's") {
		t.Errorf("err %v", err)
	}
}

func TestStopLeavesATaskThatOutlivesTheWait(t *testing.T) {
	t.Parallel()
	f := newFake()
	p := newTestProvisioner(t, f)
	p.cfg.StopGrace, p.margin = 20*time.Millisecond, 0
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
