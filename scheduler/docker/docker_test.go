package docker

import (
	"context"
	"fmt"
	"slices"
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
}

func newFakeAPI() *fakeAPI { return &fakeAPI{byName: map[string]string{}, state: map[string]string{}} }

func (f *fakeAPI) ContainerCreate(_ context.Context, cfg *container.Config, _ *container.HostConfig, _ *network.NetworkingConfig, _ *ocispec.Platform, name string) (container.CreateResponse, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.calls = append(f.calls, "create "+name)
	if _, ok := f.byName[name]; ok {
		return container.CreateResponse{}, errdefs.ErrConflict
	}
	f.seq++
	id := fmt.Sprint("id", f.seq)
	f.byName[name], f.state[id] = id, "created"
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
