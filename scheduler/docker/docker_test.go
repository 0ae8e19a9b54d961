package docker

import (
	"archive/tar"
	"context"
	"errors"
	"fmt"
	"io"
	"path/filepath"
	"reflect"
	"slices"
	"strings"
	"sync"
	"testing"

	"github.com/containerd/errdefs"
	"github.com/docker/docker/api/types/container"
	"github.com/docker/docker/api/types/network"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
)

// fakeAPI records the engine calls and keeps containers by name.
type fakeAPI struct {
	mu     sync.Mutex
	calls  []string
	byName map[string]string // name -> id
	state  map[string]string // id -> created|running
	seq    int

	configs map[string]*container.Config     // by name, as created
	hosts   map[string]*container.HostConfig // by name, as created
	copied  map[string]map[string][]byte     // id -> path in the container -> content
	copyErr error
	// lateCreate makes a create whose context has ended create the container anyway and
	// answer the context's error: an engine that got the request after the caller gave up.
	lateCreate bool
}

func newFakeAPI() *fakeAPI {
	return &fakeAPI{byName: map[string]string{}, state: map[string]string{}, configs: map[string]*container.Config{},
		hosts: map[string]*container.HostConfig{}, copied: map[string]map[string][]byte{}}
}

func (f *fakeAPI) ContainerCreate(ctx context.Context, cfg *container.Config, host *container.HostConfig, _ *network.NetworkingConfig, _ *ocispec.Platform, name string) (container.CreateResponse, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.calls = append(f.calls, "create "+name)
	if _, ok := f.byName[name]; ok {
		return container.CreateResponse{}, errdefs.ErrConflict
	}
	f.configs[name], f.hosts[name] = cfg, host
	f.seq++
	id := fmt.Sprint("id", f.seq)
	f.byName[name], f.state[id] = id, "created"
	if f.lateCreate && ctx.Err() != nil {
		return container.CreateResponse{}, ctx.Err()
	}
	return container.CreateResponse{ID: id}, nil
}

func (f *fakeAPI) ContainerStart(_ context.Context, id string, _ container.StartOptions) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.calls = append(f.calls, "start "+id)
	if _, ok := f.state[id]; !ok {
		return errdefs.ErrNotFound
	}
	f.state[id] = "running"
	return nil
}

func (f *fakeAPI) ContainerStop(context.Context, string, container.StopOptions) error { return nil }

func (f *fakeAPI) ContainerRemove(_ context.Context, id string, _ container.RemoveOptions) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.calls = append(f.calls, "remove "+id)
	for n, i := range f.byName {
		if i == id || n == id {
			delete(f.byName, n)
			delete(f.state, i)
		}
	}
	return nil
}

func (f *fakeAPI) ContainerList(context.Context, container.ListOptions) ([]container.Summary, error) {
	return nil, nil
}

// CopyToContainer extracts the archive as the engine would, into copied[id].
func (f *fakeAPI) CopyToContainer(_ context.Context, id, dst string, content io.Reader, _ container.CopyToContainerOptions) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.calls = append(f.calls, "copy "+id+" "+dst)
	if f.copyErr != nil {
		return f.copyErr
	}
	if f.state[id] != "created" {
		return fmt.Errorf("copy into %s: state %q, want created (before start)", id, f.state[id])
	}
	tr := tar.NewReader(content)
	for {
		h, err := tr.Next()
		if err == io.EOF {
			return nil
		}
		if err != nil {
			return err
		}
		b, err := io.ReadAll(tr)
		if err != nil {
			return err
		}
		if f.copied[id] == nil {
			f.copied[id] = map[string][]byte{}
		}
		f.copied[id][filepath.Join(dst, h.Name)] = b
	}
}

func (f *fakeAPI) Close() error { return nil }

func (f *fakeAPI) took() []string {
	f.mu.Lock()
	defer f.mu.Unlock()
	c := f.calls
	f.calls = nil
	return c
}

// A prepared slave is created ahead of time and its Start only starts it; Start of
// another name creates its own; preparing anew replaces the prepared container; Discard
// removes it.
func TestPrepareThenStart(t *testing.T) {
	t.Parallel()
	api := newFakeAPI()
	cfg := DefaultConfig()
	cfg.Master = "127.0.0.1:7700"
	p := &Provisioner{cfg: cfg, api: api}
	ctx := context.Background()

	if err := p.Prepare(ctx, "c-slave-1"); err != nil {
		t.Fatal(err)
	}
	if got := api.took(); !slices.Equal(got, []string{"create runbox-c-slave-1"}) {
		t.Fatalf("prepare: %q", got)
	}
	if err := p.Prepare(ctx, "c-slave-1"); err != nil || len(api.took()) != 0 {
		t.Fatal("preparing the same name again did something")
	}
	if err := p.Start(ctx, "c-slave-1"); err != nil {
		t.Fatal(err)
	}
	if got := api.took(); !slices.Equal(got, []string{"start id1"}) {
		t.Fatalf("start of the prepared slave: %q, want only a start", got)
	}
	if err := p.Start(ctx, "c-slave-2"); err != nil {
		t.Fatal(err)
	}
	if got := api.took(); !slices.Equal(got, []string{"create runbox-c-slave-2", "start id2"}) {
		t.Fatalf("start of an unprepared slave: %q", got)
	}
	p.Prepare(ctx, "c-slave-3")
	p.Prepare(ctx, "c-slave-4")
	if got := api.took(); !slices.Equal(got, []string{"create runbox-c-slave-3", "remove id3", "create runbox-c-slave-4"}) {
		t.Fatalf("preparing another name: %q", got)
	}
	if err := p.Discard(ctx); err != nil {
		t.Fatal(err)
	}
	if got := api.took(); !slices.Equal(got, []string{"remove id4"}) {
		t.Fatalf("discard: %q", got)
	}
	// A prepared container that vanished (removed by hand): Start creates a new one.
	p.Prepare(ctx, "c-slave-5")
	api.ContainerRemove(ctx, "id5", container.RemoveOptions{})
	api.took()
	if err := p.Start(ctx, "c-slave-5"); err != nil {
		t.Fatal(err)
	}
	if got := api.took(); !slices.Equal(got, []string{"start id5", "remove id5", "create runbox-c-slave-5", "start id6"}) {
		t.Fatalf("start after the prepared container vanished: %q", got)
	}
}

// A Prepare whose context ends (the master stopping) while the engine creates the
// container still learns its id, so that Discard removes it: TestAutoscaleSecured once
// found such a prepared slave left after its master stopped.
func TestPrepareCancelledLeavesNothing(t *testing.T) {
	t.Parallel()
	api := newFakeAPI()
	api.lateCreate = true
	cfg := DefaultConfig()
	cfg.Master = "127.0.0.1:7700"
	p := &Provisioner{cfg: cfg, api: api}
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	p.Prepare(ctx, "c-slave-1")
	if err := p.Discard(context.Background()); err != nil {
		t.Fatal(err)
	}
	api.mu.Lock()
	defer api.mu.Unlock()
	if len(api.byName) != 0 {
		t.Errorf("containers left: %v (calls %q)", api.byName, api.calls)
	}
}

// TestSlaveConfigHardening pins every hardening field of a slave container: a slave needs
// the network, the Docker socket, and nothing more.
func TestSlaveConfigHardening(t *testing.T) {
	t.Parallel()
	cfg := DefaultConfig()
	cfg.Master, cfg.Network, cfg.SocketGID = "runbox-master:7700", "runbox", 998
	c, h := slaveConfig(cfg, "runbox-slave-1")

	if c.User != "65534:65534" || !reflect.DeepEqual(h.GroupAdd, []string{"998"}) {
		t.Errorf("User %q GroupAdd %v: want the unprivileged 65534 with the socket's group 998", c.User, h.GroupAdd)
	}
	if !reflect.DeepEqual([]string(h.CapDrop), []string{"ALL"}) || len(h.CapAdd) != 0 {
		t.Errorf("CapDrop %v CapAdd %v: want every capability dropped, none added", h.CapDrop, h.CapAdd)
	}
	if !h.ReadonlyRootfs {
		t.Error("the slave's root filesystem is writable")
	}
	if want := map[string]string{"/tmp": "rw,noexec,nosuid,nodev,size=16m"}; !reflect.DeepEqual(h.Tmpfs, want) {
		t.Errorf("Tmpfs %v, want %v", h.Tmpfs, want)
	}
	if !reflect.DeepEqual(h.SecurityOpt, []string{"no-new-privileges"}) {
		t.Errorf("SecurityOpt %v: want no-new-privileges and the default seccomp profile", h.SecurityOpt)
	}
	if h.Privileged || h.PidMode != "" || h.IpcMode != "" || h.UsernsMode != "" || len(h.Devices) != 0 {
		t.Errorf("privileged=%v pid=%q ipc=%q userns=%q devices=%v", h.Privileged, h.PidMode, h.IpcMode, h.UsernsMode, h.Devices)
	}
	if !reflect.DeepEqual(h.Binds, []string{"/var/run/docker.sock:/var/run/docker.sock"}) || len(h.Mounts) != 0 || len(c.Volumes) != 0 {
		t.Errorf("binds %v mounts %v volumes %v: want the Docker socket alone", h.Binds, h.Mounts, c.Volumes)
	}
	r := h.Resources
	if r.PidsLimit == nil || *r.PidsLimit != 512 || r.Memory != 1<<30 || r.MemorySwap != 1<<30 || r.NanoCPUs != 1e9 {
		t.Errorf("pids %v memory %d swap %d cpus %d: want 512 pids, 1 GiB without swap, 1 CPU", r.PidsLimit, r.Memory, r.MemorySwap, r.NanoCPUs)
	}
	if string(h.NetworkMode) != "runbox" || h.LogConfig.Config["max-size"] == "" {
		t.Errorf("network %q log %v", h.NetworkMode, h.LogConfig)
	}
	if len(c.Env) != 0 {
		t.Errorf("Env %v without credentials", c.Env)
	}
	if c.StopTimeout == nil || *c.StopTimeout != 60 {
		t.Errorf("StopTimeout %v: want the template's StopGrace, 60 s", c.StopTimeout)
	}

	// The socket's group unknown: root, still without any capability.
	cfg.SocketGID = -1
	c, h = slaveConfig(cfg, "runbox-slave-1")
	if c.User != "" || len(h.GroupAdd) != 0 || !reflect.DeepEqual([]string(h.CapDrop), []string{"ALL"}) || !h.ReadonlyRootfs {
		t.Errorf("without the socket's group: User %q GroupAdd %v CapDrop %v", c.User, h.GroupAdd, h.CapDrop)
	}
}

// TestSlaveCredentials: the join token reaches the slave in its environment and the CA
// certificate as a file copied into its container before it starts; neither is in its
// command line (which ps shows) nor in its labels.
func TestSlaveCredentials(t *testing.T) {
	t.Parallel()
	const token = "rbx_secret-join-token"
	ca := []byte("-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n")
	api := newFakeAPI()
	cfg := DefaultConfig()
	cfg.Master, cfg.JoinToken, cfg.CA = "127.0.0.1:7700", token, ca
	cfg.Args = []string{"--image-tag", "latest"}
	p := &Provisioner{cfg: cfg, api: api}
	ctx := context.Background()
	if err := p.Start(ctx, "c-slave-1"); err != nil {
		t.Fatal(err)
	}
	if got := api.took(); !slices.Equal(got, []string{"create runbox-c-slave-1", "copy id1 /run/runbox", "start id1"}) {
		t.Fatalf("calls %q: want the CA copied between create and start", got)
	}
	c := api.configs["runbox-c-slave-1"]
	argv := strings.Join(append(append([]string{}, c.Entrypoint...), c.Cmd...), " ")
	for _, secret := range []string{token, "MIIB"} {
		if strings.Contains(argv, secret) {
			t.Errorf("the command line holds a credential: %q", argv)
		}
		for k, v := range c.Labels {
			if strings.Contains(k+v, secret) {
				t.Errorf("label %s=%s holds a credential", k, v)
			}
		}
	}
	if !slices.Contains(c.Env, "RUNBOX_TOKEN="+token) || !slices.Contains(c.Env, "RUNBOX_TLS_CA=/run/runbox/ca.crt") {
		t.Errorf("Env %q: want RUNBOX_TOKEN and RUNBOX_TLS_CA", c.Env)
	}
	if got := api.copied["id1"]["/run/runbox/ca.crt"]; string(got) != string(ca) {
		t.Errorf("copied CA %q, want %q", got, ca)
	}
	if _, ok := c.Volumes["/run/runbox"]; !ok {
		t.Errorf("Volumes %v: the CA's directory must be a volume (the root is read-only)", c.Volumes)
	}

	// A copy that fails: the container is removed and Start says why.
	api.copyErr = errors.New("disk full")
	err := p.Start(ctx, "c-slave-2")
	if err == nil || !strings.Contains(err.Error(), "CA certificate") {
		t.Fatalf("start with a failing copy: %v", err)
	}
	if got := api.took(); !slices.Equal(got, []string{"create runbox-c-slave-2", "copy id2 /run/runbox", "remove id2"}) {
		t.Errorf("calls %q: want the container removed", got)
	}
}
