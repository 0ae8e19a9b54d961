// Package docker runs sandbox Specs in throwaway containers on a Docker Engine.
//
// Every program gets its own container, created from the language's runtime image with
// the hardening of design.md §4 (no network, read-only root, all capabilities dropped,
// no-new-privileges, an unprivileged user, cgroup caps on CPU, memory, pids, a size-capped
// tmpfs as the only writable place) and removed once the program ends. The container's
// PID 1 is runbox-init (package sandbox/boxinit), which receives the program over the
// attached stdin and answers with framed output and an in-band result.
//
// A warm pool keeps a few containers per language created, started and attached ahead of
// time, so a program does not wait for create+start; a pooled container still serves
// exactly one program.
package docker

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"slices"
	"sync"
	"time"

	"github.com/containerd/errdefs"
	"github.com/docker/docker/api/types"
	"github.com/docker/docker/api/types/container"
	"github.com/docker/docker/api/types/filters"
	"github.com/docker/docker/api/types/image"
	"github.com/docker/docker/api/types/network"
	"github.com/docker/docker/api/types/system"
	"github.com/docker/docker/client"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"

	"runbox/sandbox"
	"runbox/sandbox/boxinit"
)

// dockerAPI is the part of the Docker SDK the Runner calls.
type dockerAPI interface {
	Ping(ctx context.Context) (types.Ping, error)
	Info(ctx context.Context) (system.Info, error)
	ServerVersion(ctx context.Context) (types.Version, error)
	ImageInspect(ctx context.Context, ref string, opts ...client.ImageInspectOption) (image.InspectResponse, error)
	ContainerCreate(ctx context.Context, cfg *container.Config, host *container.HostConfig, net *network.NetworkingConfig, platform *ocispec.Platform, name string) (container.CreateResponse, error)
	ContainerAttach(ctx context.Context, id string, opts container.AttachOptions) (types.HijackedResponse, error)
	ContainerStart(ctx context.Context, id string, opts container.StartOptions) error
	ContainerInspect(ctx context.Context, id string) (container.InspectResponse, error)
	ContainerWait(ctx context.Context, id string, cond container.WaitCondition) (<-chan container.WaitResponse, <-chan error)
	ContainerUpdate(ctx context.Context, id string, cfg container.UpdateConfig) (container.UpdateResponse, error)
	ContainerRemove(ctx context.Context, id string, opts container.RemoveOptions) error
	ContainerList(ctx context.Context, opts container.ListOptions) ([]container.Summary, error)
	Close() error
}

var _ sandbox.Runner = (*Runner)(nil)

// Runner runs programs in Docker containers. It is safe for concurrent use.
type Runner struct {
	cfg   Config
	api   dockerAPI
	log   *slog.Logger
	langs map[string]*runtime // by canonical language name

	ctx     context.Context // cancelled by Close; background work stops with it
	cancel  context.CancelFunc
	fillers sync.WaitGroup // pool fillers
	runs    sync.WaitGroup // Runs in flight (added under mu while not closed)
	bg      sync.WaitGroup // container creations no caller waits for
	removal *remover       // removes containers in the background
	engine  EngineInfo     // what the engine said at start (set before New returns)
	// poolStarts holds a token per pooled container start in flight (Config.PoolStarts).
	poolStarts chan struct{}

	mu     sync.Mutex
	closed bool
}

// runtime is one served language: its image and its warm pool.
type runtime struct {
	lang    sandbox.Language
	image   string // repository:tag
	version string // the image's runbox.version label
	err     error  // why the language cannot run (image missing), if so
	pool    *pool
}

// New connects to the engine (negotiating the API version), warns (Config.Logger) when the
// engine weakens the sandbox (a runc older than 1.1.12, seccomp off), checks the runtime images,
// removes containers an earlier Runner with the same Owner left behind, and starts the
// warm pools. Languages whose image is missing answer ErrUnavailable; when no image at
// all is present New fails.
func New(ctx context.Context, cfg Config) (*Runner, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	opts := []client.Opt{client.FromEnv, client.WithAPIVersionNegotiation()}
	if cfg.Host != "" {
		opts = append(opts, client.WithHost(cfg.Host))
	}
	cli, err := client.NewClientWithOpts(opts...)
	if err != nil {
		return nil, fmt.Errorf("%w: docker client: %v", sandbox.ErrUnavailable, err)
	}
	r, err := newRunner(ctx, cli, cfg)
	if err != nil {
		cli.Close()
		return nil, err
	}
	return r, nil
}

func newRunner(ctx context.Context, api dockerAPI, cfg Config) (*Runner, error) {
	log := cfg.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	log = log.With("component", "sandbox", "owner", cfg.Owner)
	if _, err := api.Ping(ctx); err != nil {
		return nil, fmt.Errorf("%w: docker engine: %v", sandbox.ErrUnavailable, err)
	}
	r := &Runner{cfg: cfg, api: api, log: log, langs: map[string]*runtime{}}
	r.ctx, r.cancel = context.WithCancel(context.WithoutCancel(ctx))
	r.removal = newRemover(r)
	ok := false
	defer func() {
		if !ok {
			r.removal.close()
		}
	}()
	r.checkEngine(ctx)

	names := cfg.Languages
	if len(names) == 0 {
		for _, l := range sandbox.Languages() {
			names = append(names, l.Name)
		}
	}
	found := 0
	for _, name := range names {
		lang, _ := sandbox.Lookup(name)
		rt := &runtime{lang: lang, image: lang.Image + ":" + cfg.ImageTag}
		img, err := api.ImageInspect(ctx, rt.image)
		switch {
		case err == nil:
			found++
			if img.Config != nil {
				rt.version = img.Config.Labels[LabelVersion]
			}
		case errdefs.IsNotFound(err):
			rt.err = fmt.Errorf("%w: image %s is missing; build it with `make images`", sandbox.ErrUnavailable, rt.image)
		default:
			return nil, fmt.Errorf("%w: inspect image %s: %v", sandbox.ErrUnavailable, rt.image, err)
		}
		r.langs[lang.Name] = rt
	}
	if found == 0 {
		return nil, fmt.Errorf("%w: no runtime image found (%s:%s ...); build them with `make images`", sandbox.ErrUnavailable, "runbox/runtime-python", cfg.ImageTag)
	}
	if n, err := r.Reap(ctx); err != nil {
		return nil, err
	} else if n > 0 {
		log.Info("removed leftover containers", "count", n)
	}
	if cfg.PoolSize > 0 {
		var pools []*pool
		for _, name := range slices.Sorted(maps.Keys(r.langs)) {
			if rt := r.langs[name]; rt.err == nil {
				rt.pool = newPool(r, rt)
				pools = append(pools, rt.pool)
			}
		}
		// PoolSize fillers per pool, each waiting until its pool wants it. At start, the
		// first containers (PoolStart per language) come PoolStagger apart, a round of
		// languages at a time.
		r.poolStarts = make(chan struct{}, cfg.PoolStarts)
		next := time.Duration(0)
		for i := range cfg.PoolSize {
			for _, p := range pools {
				delay := time.Duration(0)
				if i < cfg.PoolStart {
					delay = next
					next += cfg.PoolStagger
				}
				r.fillers.Add(1)
				go func() { defer r.fillers.Done(); p.run(r.ctx, i, delay) }()
			}
		}
		r.fillers.Add(1)
		go func() { defer r.fillers.Done(); r.govern(r.ctx, pools) }()
	}
	ok = true
	return r, nil
}

// Images returns the runtime image version of each language that can run.
func (r *Runner) Images() map[string]string {
	out := map[string]string{}
	for name, rt := range r.langs {
		if rt.err == nil {
			out[name] = rt.version
		}
	}
	return out
}

// Reap removes every container labelled with this Runner's Owner (running or not) and
// returns how many it removed. New calls it; so does Close.
func (r *Runner) Reap(ctx context.Context) (int, error) {
	list, err := r.api.ContainerList(ctx, container.ListOptions{
		All: true,
		Filters: filters.NewArgs(
			filters.Arg("label", LabelSandbox+"=1"),
			filters.Arg("label", LabelOwner+"="+r.cfg.Owner),
		),
	})
	if err != nil {
		return 0, fmt.Errorf("%w: list containers: %v", sandbox.ErrUnavailable, err)
	}
	n := 0
	for _, c := range list {
		if err := removeRetrying(ctx, r.api, c.ID); err == nil {
			n++
		} else {
			r.log.Warn("reap container", "id", shortID(c.ID), "name", c.Names, "state", c.State, "err", err)
		}
	}
	return n, nil
}

// Close cancels the Runs in flight, stops the pools, removes every container the Runner
// still holds and waits for its background work. Later Runs return ErrClosed.
func (r *Runner) Close() error {
	r.mu.Lock()
	if r.closed {
		r.mu.Unlock()
		return nil
	}
	r.closed = true
	r.mu.Unlock()
	r.cancel()
	r.runs.Wait()
	r.fillers.Wait()
	for _, rt := range r.langs {
		if rt.pool != nil {
			rt.pool.drain()
		}
	}
	r.bg.Wait()
	r.removal.close()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	_, err := r.Reap(ctx)
	return errors.Join(err, r.api.Close())
}

// apiTimeout bounds a create or a remove that no caller waits for. An engine under heavy
// load can take tens of seconds for either.
const apiTimeout = 2 * time.Minute

// box is a started container with its attached stdin/stdout.
type box struct {
	id      string
	memory  int64 // the container's memory limit
	shares  int64 // its CPU weight while it waits (0: the engine's default)
	conn    types.HijackedResponse
	started time.Time
}

// startBox creates, attaches and starts a container. On error nothing is left behind.
// A pooled box waits as Config says: its warm-up or prestarted interpreter, its CPU weight.
func (r *Runner) startBox(ctx context.Context, rt *runtime, lim boxLimits, pooled bool) (*box, error) {
	idle := 2*r.cfg.PoolMaxAge + time.Minute
	var w waiting
	if pooled {
		w = waiting{warm: r.cfg.PoolWarm, prestart: r.cfg.PoolPrestart, shares: r.cfg.WaitShares}
	}
	cfg, host := containerConfig(rt.image, rt.lang, lim, r.cfg.Owner, r.cfg.Runtime, idle, w)
	name := fmt.Sprintf("runbox-%s-%s-%s", r.cfg.Owner, rt.lang.Name, randomHex(6))
	r.removal.startBegin() // removals yield to the create and start
	defer r.removal.startEnd()
	id, err := r.create(ctx, cfg, host, name)
	if err != nil {
		return nil, err
	}
	b := &box{id: id, memory: lim.Memory, shares: w.shares}
	ok := false
	defer func() {
		if !ok { // an error, or a panic on its way to the caller's recover
			r.remove(b)
		}
	}()
	b.conn, err = r.api.ContainerAttach(ctx, b.id, container.AttachOptions{Stream: true, Stdin: true, Stdout: true, Stderr: true})
	if err != nil {
		return nil, fmt.Errorf("%w: attach container: %v", sandbox.ErrUnavailable, err)
	}
	if err := r.api.ContainerStart(ctx, b.id, container.StartOptions{}); err != nil {
		return nil, fmt.Errorf("%w: start container: %v", sandbox.ErrUnavailable, err)
	}
	b.started = time.Now()
	ok = true
	return b, nil
}

// create creates a container and returns its id. The request is not cancelled with ctx:
// an engine that got it may create the container anyway, and the Runner would never learn
// its id (a leak that even Close's reap can miss, being earlier). When ctx ends first,
// create returns at once and a background goroutine, which Close waits for, removes the
// container once the engine answers.
func (r *Runner) create(ctx context.Context, cfg *container.Config, host *container.HostConfig, name string) (string, error) {
	type answer struct {
		id  string
		err error
	}
	done := make(chan answer, 1)
	r.bg.Add(1)
	go func() {
		defer r.bg.Done()
		defer func() {
			if p := recover(); p != nil { // the caller gets it as the create's error
				done <- answer{err: r.recovered("container create", p)}
			}
		}()
		cctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), apiTimeout)
		defer cancel()
		created, err := r.api.ContainerCreate(cctx, cfg, host, nil, nil, name)
		done <- answer{created.ID, err}
	}()
	select {
	case a := <-done:
		if pe := (*sandbox.PanicError)(nil); errors.As(a.err, &pe) {
			return "", pe
		}
		if a.err != nil {
			return "", fmt.Errorf("%w: create container: %v", sandbox.ErrUnavailable, a.err)
		}
		return a.id, nil
	case <-ctx.Done():
		r.bg.Add(1)
		go func() {
			defer r.bg.Done()
			defer r.logPanic("removal of a late container")
			if a := <-done; a.err == nil {
				r.remove(&box{id: a.id})
			}
		}()
		return "", ctx.Err()
	}
}

// remove closes the box's stream and hands its container to the remover, which removes
// it in the background when the engine is not busy starting containers; Close waits for
// it. The removal outlives the Run's context on purpose.
func (r *Runner) remove(b *box) {
	func() {
		defer r.logPanic("closing a container's stream")
		b.closeStream()
	}()
	r.removal.add(b.id)
}

// closeStream closes the box's attach stream, if it has one.
func (b *box) closeStream() {
	if b.conn.Conn != nil {
		b.conn.Close()
	}
}

// shortID is the engine's short form of a container id (any string the engine gave).
func shortID(id string) string { return id[:min(len(id), 12)] }

// recovered turns a recovered panic into the job's error and logs it with its stack.
func (r *Runner) recovered(where string, v any) *sandbox.PanicError {
	pe := sandbox.Recovered(where, v)
	r.log.Error("panic", "where", where, "panic", fmt.Sprint(v), "stack", string(pe.Stack))
	return pe
}

// logPanic, deferred, logs a panic of work no job waits for (a removal) and ends it.
func (r *Runner) logPanic(where string) {
	if p := recover(); p != nil {
		r.recovered(where, p)
	}
}

// Run implements sandbox.Runner. A panic while running the program (in Run's goroutine or
// in one it started for the run) fails the run with a *sandbox.PanicError, logged with its
// stack; the container is removed all the same.
func (r *Runner) Run(ctx context.Context, spec sandbox.Spec, streams *sandbox.Streams) (res sandbox.Result, err error) {
	defer func() {
		if p := recover(); p != nil {
			res, err = sandbox.Result{ExitCode: -1}, r.recovered("sandbox run", p)
		}
	}()
	ctx, rt, lim, end, err := r.admit(ctx, spec)
	if err != nil {
		return sandbox.Result{ExitCode: -1}, err
	}
	defer end()
	trace := &sandbox.Trace{}
	t0 := time.Now()
	b, pooled, err := r.acquire(ctx, rt, boxLimitsOf(lim, compiles(rt.lang, spec)), compiles(rt.lang, spec))
	if err != nil {
		if ctx.Err() != nil {
			return sandbox.Result{ExitCode: -1}, ctx.Err()
		}
		return sandbox.Result{ExitCode: -1}, err
	}
	trace.Acquire, trace.Pooled = time.Since(t0), pooled
	defer r.remove(b)
	if b.shares != 0 {
		defer r.boostLater(b)()
	}
	res, err = r.runIn(ctx, b, rt, spec, lim, streams, trace)
	res.Trace = trace
	return res, err
}

// admit checks spec and counts a Run in: it returns the Run's context (which Close
// cancels), the language's runtime, the limits with the defaults filled in, and end, to
// call when the Run is over.
func (r *Runner) admit(ctx context.Context, spec sandbox.Spec) (context.Context, *runtime, sandbox.Limits, func(), error) {
	var none sandbox.Limits
	if err := spec.Validate(); err != nil {
		return nil, nil, none, nil, err
	}
	if err := spec.Limits.Check(r.cfg.Max); err != nil {
		return nil, nil, none, nil, err
	}
	lang, _ := sandbox.Lookup(spec.Language)
	if len(spec.Tests) > 0 {
		return nil, nil, none, nil, fmt.Errorf("%w: test cases need a judging runner (sandbox/judge) around the sandbox", sandbox.ErrInvalidRequest)
	}
	if (spec.CompileOnly || len(spec.Artifact) > 0) && !lang.Compiled() {
		return nil, nil, none, nil, fmt.Errorf("%w: %s is not compiled: no compile-only run, no artefact", sandbox.ErrInvalidRequest, lang.Name)
	}
	if len(spec.Artifact) > boxinit.MaxArtifact {
		return nil, nil, none, nil, fmt.Errorf("%w: artefact of %d bytes, at most %d", sandbox.ErrTooLarge, len(spec.Artifact), boxinit.MaxArtifact)
	}
	rt, ok := r.langs[lang.Name]
	if !ok {
		return nil, nil, none, nil, fmt.Errorf("%w: %q is not served here", sandbox.ErrUnknownLanguage, lang.Name)
	}
	if rt.err != nil {
		return nil, nil, none, nil, rt.err
	}
	r.mu.Lock()
	if r.closed {
		r.mu.Unlock()
		return nil, nil, none, nil, sandbox.ErrClosed
	}
	r.runs.Add(1)
	r.mu.Unlock()
	ctx, cancel := context.WithCancel(ctx)
	stop := context.AfterFunc(r.ctx, cancel) // Close cancels the Runs in flight
	end := func() {
		stop()
		cancel()
		r.runs.Done()
	}
	return ctx, rt, limitsFor(spec.Limits, lang, r.cfg), end, nil
}

// compiles reports whether spec's run has a compile phase.
func compiles(lang sandbox.Language, spec sandbox.Spec) bool {
	return lang.Compiled() && len(spec.Artifact) == 0
}

// limitsFor fills a request's zero limits: the server's defaults, and the language's
// longer compile time (at most the server's maximum) when it has one.
func limitsFor(asked sandbox.Limits, lang sandbox.Language, cfg Config) sandbox.Limits {
	lim := asked.WithDefaults(cfg.Defaults)
	if asked.CompileTime == 0 && lang.CompileTime > lim.CompileTime {
		lim.CompileTime = min(lang.CompileTime, cfg.Max.CompileTime)
	}
	return lim
}

// acquire takes a pooled box when the limits allow, else starts a fresh one; pooled
// tells which.
func (r *Runner) acquire(ctx context.Context, rt *runtime, lim boxLimits, compiles bool) (b *box, pooled bool, err error) {
	if rt.pool != nil && rt.pool.fits(lim, compiles) {
		if b := rt.pool.get(); b != nil {
			return b, true, nil
		}
	}
	b, err = r.startBox(ctx, rt, lim, false)
	return b, false, err
}

// runIn sends the program to the box's runbox-init and collects the answer
// (boxinit.Exchange over the box's attach stream); the Docker parts are the hooks: the
// program's memory set at the gate, the OOM killer asked about a runbox-init that died.
// It fills trace's Send, Compile, Run and Result.
func (r *Runner) runIn(ctx context.Context, b *box, rt *runtime, spec sandbox.Spec, lim sandbox.Limits, streams *sandbox.Streams, trace *sandbox.Trace) (sandbox.Result, error) {
	files := make([]boxinit.File, len(spec.Files))
	for i, f := range spec.Files {
		files[i] = boxinit.File{Name: f.Name, Content: f.Content}
	}
	if files[0].Name == "" {
		files[0].Name = rt.lang.Source
	}
	breq := boxinit.Request{
		Files: files, Compile: rt.lang.Compile, Run: rt.lang.Run, Env: rt.lang.Env,
		CompileTime: lim.CompileTime, RunTime: lim.RunTime, Output: lim.Output,
		CompileOnly: spec.CompileOnly, Artifact: int64(len(spec.Artifact)),
		// The box has the compiler's memory, or a pooled box another program's: the
		// program's is set at the gate, before its run phase.
		Gate: !spec.CompileOnly && b.memory != lim.Memory,
	}
	if len(rt.lang.Prestart) > 0 {
		breq.Script = rt.lang.Source // what Run runs, for an interpreter started ahead
	}
	if len(spec.Artifact) > 0 { // the compiled program replaces the sources
		breq.Files, breq.Compile = nil, nil
	}
	stream := newAttachStream(b)
	call := boxinit.Call{Request: breq, Artifact: spec.Artifact, Stdin: spec.Stdin, Grace: r.cfg.Grace, Trace: trace}
	return boxinit.Exchange(ctx, stream, call, streams, boxinit.Hooks{
		Gate: func(ctx context.Context) error {
			if err := r.setMemory(ctx, b.id, lim.Memory); err != nil {
				return fmt.Errorf("set the program's memory limit: %v", err)
			}
			b.memory = lim.Memory
			return nil
		},
		OOMKilled: func(ctx context.Context) bool { return r.oomKilled(ctx, b.id) },
		Stderr:    stream.stderr,
		Recovered: r.recovered,
	})
}

// boostLater gives b the engine's default CPU weight once its program has run for
// BoostAfter (a pooled box waits at WaitShares); stop, called when the program is over,
// cancels the boost that has not begun. A boost that fails is only logged: the program
// runs on at the lower weight.
func (r *Runner) boostLater(b *box) (stop func()) {
	r.bg.Add(1)
	t := time.AfterFunc(r.cfg.BoostAfter, func() {
		defer r.bg.Done()
		defer func() {
			if v := recover(); v != nil {
				r.recovered("cpu weight update", v)
			}
		}()
		if err := r.update(r.ctx, b.id, container.Resources{CPUShares: defaultShares}); err != nil && r.ctx.Err() == nil {
			r.log.Debug("raise a program's cpu weight", "container", b.id, "err", err)
		}
	})
	return func() {
		if t.Stop() {
			r.bg.Done()
		}
	}
}

// setMemory sets a container's memory (and memory+swap: no swap) limit.
func (r *Runner) setMemory(ctx context.Context, id string, memory int64) error {
	return r.update(ctx, id, container.Resources{Memory: memory, MemorySwap: memory})
}

// update changes the resources of a running container that res sets (the engine leaves
// the zero fields as they are), in at most 30 s.
func (r *Runner) update(ctx context.Context, id string, res container.Resources) error {
	ctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	_, err := r.api.ContainerUpdate(ctx, id, container.UpdateConfig{Resources: res})
	return err
}

// oomKilled reports whether the OOM killer struck in the container. The engine learns of
// it from an event that may arrive after the attach stream ended, so it first waits (a
// few seconds at most) for the container to stop.
func (r *Runner) oomKilled(ctx context.Context, id string) bool {
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
	defer cancel()
	waitC, errC := r.api.ContainerWait(ctx, id, container.WaitConditionNotRunning)
	select {
	case <-waitC:
	case <-errC:
	case <-ctx.Done():
	}
	info, err := r.api.ContainerInspect(ctx, id)
	return err == nil && info.State != nil && info.State.OOMKilled
}

func randomHex(n int) string {
	b := make([]byte, n)
	rand.Read(b)
	return hex.EncodeToString(b)
}
