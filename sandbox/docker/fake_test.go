package docker

import (
	"bufio"
	"context"
	"errors"
	"net"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/containerd/errdefs"
	"github.com/docker/docker/api/types"
	"github.com/docker/docker/api/types/container"
	"github.com/docker/docker/api/types/image"
	"github.com/docker/docker/api/types/network"
	"github.com/docker/docker/api/types/system"
	"github.com/docker/docker/client"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
)

// fakeEngine is a dockerAPI that keeps containers in a map. createGate, when set, holds
// every ContainerCreate until it is closed, whatever the request's context says: an
// engine that goes on creating after the client gave up.
type fakeEngine struct {
	createGate  chan struct{}
	created     chan string // receives each created id, when set
	attachBlock bool        // ContainerAttach waits for its context to end

	// serve, when set, makes attach and start work: a container's attach stream is one
	// end of a net.Pipe, and serve plays the container on the other end (its runbox-init
	// writes stdcopy-framed output). wrap, when set, wraps the Runner's end.
	serve func(c net.Conn)
	wrap  func(net.Conn) net.Conn
	// panicCreate and panicAttach make that many ContainerCreate or ContainerAttach calls
	// panic, the first ones: an SDK or engine bug.
	panicCreate, panicAttach atomic.Int32

	// The engine's answers about itself.
	info    system.Info
	infoErr error
	version types.Version

	// removeHook, when set, is asked before each ContainerRemove: an error it returns is
	// the removal's, and the container stays.
	removeHook func(id string) error

	serving    sync.WaitGroup // serve goroutines
	mu         sync.Mutex
	containers map[string]bool
	memory     map[string][]int64 // each container's memory limits: at create, then each update
	shares     map[string][]int64 // each container's CPU weight: at create, then each update
	n          int
}

var _ dockerAPI = (*fakeEngine)(nil)

func newFakeEngine() *fakeEngine {
	return &fakeEngine{
		containers: map[string]bool{},
		memory:     map[string][]int64{},
		shares:     map[string][]int64{},
		info:       system.Info{DefaultRuntime: "runc", SecurityOptions: []string{"name=seccomp,profile=builtin"}},
		version:    types.Version{Components: []types.ComponentVersion{{Name: "runc", Version: "1.2.5"}}},
	}
}

func (f *fakeEngine) Ping(context.Context) (types.Ping, error) { return types.Ping{}, nil }

func (f *fakeEngine) Info(context.Context) (system.Info, error) { return f.info, f.infoErr }

func (f *fakeEngine) ServerVersion(context.Context) (types.Version, error) { return f.version, nil }

func (f *fakeEngine) ImageInspect(context.Context, string, ...client.ImageInspectOption) (image.InspectResponse, error) {
	return image.InspectResponse{}, nil
}

func (f *fakeEngine) ContainerCreate(ctx context.Context, cfg *container.Config, host *container.HostConfig, net *network.NetworkingConfig, platform *ocispec.Platform, name string) (container.CreateResponse, error) {
	if f.createGate != nil {
		<-f.createGate
	}
	if f.panicCreate.Add(-1) >= 0 {
		panic("fake: create panics")
	}
	f.mu.Lock()
	f.n++
	id := name + "-id"
	f.containers[id] = true
	f.memory[id] = []int64{host.Resources.Memory}
	f.shares[id] = []int64{host.Resources.CPUShares}
	f.mu.Unlock()
	if f.created != nil {
		f.created <- id
	}
	return container.CreateResponse{ID: id}, nil
}

func (f *fakeEngine) ContainerAttach(ctx context.Context, _ string, _ container.AttachOptions) (types.HijackedResponse, error) {
	if f.attachBlock {
		<-ctx.Done()
		return types.HijackedResponse{}, ctx.Err()
	}
	if f.panicAttach.Add(-1) >= 0 {
		panic("fake: attach panics")
	}
	f.mu.Lock()
	serve, wrap := f.serve, f.wrap
	f.mu.Unlock()
	if serve == nil {
		return types.HijackedResponse{}, errors.New("fake: no attach")
	}
	runner, box := net.Pipe()
	f.serving.Add(1)
	go func() {
		defer f.serving.Done()
		defer box.Close()
		serve(box)
	}()
	var c net.Conn = runner
	if wrap != nil {
		c = wrap(runner)
	}
	return types.HijackedResponse{Conn: c, Reader: bufio.NewReader(c)}, nil
}

// setServe changes how the next containers behave (see serve and wrap).
func (f *fakeEngine) setServe(serve func(net.Conn), wrap func(net.Conn) net.Conn) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.serve, f.wrap = serve, wrap
}

func (f *fakeEngine) serves() bool {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.serve != nil
}

func (f *fakeEngine) ContainerStart(context.Context, string, container.StartOptions) error {
	if !f.serves() {
		return errors.New("fake: no start")
	}
	return nil
}

func (f *fakeEngine) ContainerInspect(context.Context, string) (container.InspectResponse, error) {
	if f.serves() {
		return container.InspectResponse{ContainerJSONBase: &container.ContainerJSONBase{State: &container.State{}}}, nil
	}
	return container.InspectResponse{}, errors.New("fake: no inspect")
}

func (f *fakeEngine) ContainerWait(context.Context, string, container.WaitCondition) (<-chan container.WaitResponse, <-chan error) {
	errC := make(chan error, 1)
	errC <- errors.New("fake: no wait")
	return nil, errC
}

func (f *fakeEngine) ContainerUpdate(_ context.Context, id string, cfg container.UpdateConfig) (container.UpdateResponse, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if !f.containers[id] {
		return container.UpdateResponse{}, errdefs.ErrNotFound
	}
	if cfg.Memory != cfg.MemorySwap {
		return container.UpdateResponse{}, errors.New("fake: memory and memory+swap differ")
	}
	if cfg.Memory != 0 { // the engine leaves the fields an update does not set
		f.memory[id] = append(f.memory[id], cfg.Memory)
	}
	if cfg.CPUShares != 0 {
		f.shares[id] = append(f.shares[id], cfg.CPUShares)
	}
	return container.UpdateResponse{}, nil
}

// sharesOf returns the CPU weights a container had: at create, then each update.
func (f *fakeEngine) sharesOf(id string) []int64 {
	f.mu.Lock()
	defer f.mu.Unlock()
	return slices.Clone(f.shares[id])
}

// memoryOf returns the memory limits a container had: at create, then each update.
func (f *fakeEngine) memoryOf(id string) []int64 {
	f.mu.Lock()
	defer f.mu.Unlock()
	return slices.Clone(f.memory[id])
}

func (f *fakeEngine) ContainerRemove(_ context.Context, id string, _ container.RemoveOptions) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.removeHook != nil {
		if err := f.removeHook(id); err != nil {
			return err
		}
	}
	if !f.containers[id] {
		return errdefs.ErrNotFound
	}
	delete(f.containers, id)
	return nil
}

func (f *fakeEngine) ContainerList(context.Context, container.ListOptions) ([]container.Summary, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	var out []container.Summary
	for id := range f.containers {
		out = append(out, container.Summary{ID: id})
	}
	return out, nil
}

func (f *fakeEngine) Close() error { return nil }

// has reports whether the container id exists.
func (f *fakeEngine) has(id string) bool {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.containers[id]
}

// add creates a container without the Runner.
func (f *fakeEngine) add(id string) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.containers[id] = true
}

func (f *fakeEngine) count() int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return len(f.containers)
}

// A create that the engine completes after the caller gave up must not leave a container
// behind, even when it completes after Close's reap would have run.
func TestCreateAfterCancelIsRemoved(t *testing.T) {
	t.Parallel()
	f := newFakeEngine()
	f.createGate = make(chan struct{})
	f.created = make(chan string, 1)
	cfg := DefaultConfig()
	cfg.PoolSize = 0
	r, err := newRunner(context.Background(), f, cfg)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	errC := make(chan error, 1)
	go func() {
		_, err := r.startBox(ctx, r.langs["python"], boxLimitsOf(cfg.Defaults, false), false)
		errC <- err
	}()
	time.Sleep(20 * time.Millisecond)
	cancel()
	select {
	case err := <-errC:
		if !errors.Is(err, context.Canceled) {
			t.Errorf("startBox: %v, want context.Canceled", err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("startBox did not return when its context ended")
	}
	closed := make(chan error, 1)
	go func() { closed <- r.Close() }()
	select {
	case <-closed:
		t.Fatal("Close returned while a create was still in flight")
	case <-time.After(50 * time.Millisecond):
	}
	close(f.createGate) // the engine answers at last
	<-f.created
	if err := <-closed; err != nil {
		t.Fatal(err)
	}
	if n := f.count(); n != 0 {
		t.Errorf("%d containers left", n)
	}
}

// At start the pools' first containers come one language at a time, PoolStagger apart:
// a round of every language, then the next round.
func TestPoolsStartStaggered(t *testing.T) {
	t.Parallel()
	f := newFakeEngine()
	f.attachBlock = true // each filler holds its one create: no retries to interleave
	f.created = make(chan string, 16)
	cfg := DefaultConfig()
	cfg.Languages = []string{"python", "c", "cpp"}
	cfg.PoolSize, cfg.PoolStart, cfg.PoolStarts = 2, 2, 6
	cfg.PoolStagger = 100 * time.Millisecond
	r, err := newRunner(context.Background(), f, cfg)
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	var got []string
	for range 6 {
		select {
		case id := <-f.created:
			for _, l := range []string{"python", "cpp", "c"} { // cpp before c: "-c-" is in neither
				if strings.Contains(id, "-"+l+"-") {
					got = append(got, l)
					break
				}
			}
		case <-time.After(10 * time.Second):
			t.Fatalf("only %d creates: %v", len(got), got)
		}
	}
	if want := []string{"c", "cpp", "python", "c", "cpp", "python"}; !slices.Equal(got, want) {
		t.Errorf("creates in the order %v, want %v", got, want)
	}
}
