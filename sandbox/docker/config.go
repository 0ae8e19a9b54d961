package docker

import (
	"encoding/json"
	"fmt"
	"log/slog"
	"regexp"
	"time"

	"github.com/docker/docker/api/types/container"
	"github.com/docker/go-units"

	"runbox/sandbox"
	"runbox/sandbox/boxinit"
)

// Config configures a Runner.
type Config struct {
	// Host is the Docker engine's address ("unix:///var/run/docker.sock"); empty takes the
	// environment (DOCKER_HOST and friends) or the default socket.
	Host string
	// Owner is written as a label on every container this Runner creates; the reaper removes
	// containers with this owner left by an earlier run. Give each Runner on one engine its
	// own Owner (the master and each slave use their node name).
	Owner string
	// ImageTag is the tag of the runtime images ("latest"); the repositories come from the
	// language table (sandbox.Language.Image).
	ImageTag string
	// Languages restricts the languages served; empty serves the whole table.
	Languages []string
	// Defaults fill a request's zero limits; Max refuses larger requests.
	Defaults, Max sandbox.Limits
	// PoolSize is how many started containers at most wait, per language, for programs
	// that use the default container limits; 0 disables the pool (every program starts its
	// own container). A pool is sized by demand between PoolMin and PoolSize: it starts
	// with PoolStart, grows by one each time a program finds it empty, and shrinks by one
	// for each PoolIdle without a program of its language.
	PoolSize int
	// PoolStart is how many containers a language's pool wants when the Runner starts.
	PoolStart int
	// PoolMin is the fewest containers a pool shrinks to (0: a language nobody uses keeps
	// none, and its next program starts its own while the pool grows again).
	PoolMin int
	// PoolIdle is how long a pool goes without a program before it gives up one container.
	PoolIdle time.Duration
	// PoolStarts caps the pooled container starts in flight at once, every language
	// together; the pools take turns, first come first served, so that refills do not
	// fight over the cores and a busy language does not starve the others.
	PoolStarts int
	// PoolMaxAge retires a pooled container that waited longer than this.
	PoolMaxAge time.Duration
	// PoolWarm makes a pooled container run its language's warm-up command
	// (sandbox.Language.Warm) while it waits: its program then starts with the toolchain
	// in the container's file cache (about half of a Python hello's time here), at the cost
	// of that command's CPU for every pooled container that waits more than 200 ms.
	PoolWarm bool
	// PoolPrestart makes a pooled container of a language with an interpreter to start
	// ahead (sandbox.Language.Prestart) start it while it waits, in place of the warm-up:
	// the program then does not pay the interpreter's start.
	PoolPrestart bool
	// PoolStagger spaces the pools' first containers when the Runner starts: one per
	// language first, then the second of each, and so on, PoolStagger apart. Started all at
	// once, a dozen containers and their warm-ups (a compiler each) held both cores of a
	// small machine for seconds, and the first programs ran into their time limits.
	PoolStagger time.Duration
	// WaitShares is the CPU weight (cgroup cpu.shares; 1024 is the engine's default) of a
	// pooled container while it waits: its warm-up, its prestarted interpreter and
	// runbox-init's start then take only CPU that no program wants. Three nodes on one
	// engine warming their pools at once held 0.7 s programs past their 5 s limits (each
	// got under 0.4 s of CPU) until the warm-ups yielded. 0 keeps the engine's default.
	WaitShares int64
	// BoostAfter is how long a program in a pooled container runs at WaitShares before
	// the Runner gives its container the default weight: a program shorter than that
	// (a hello-world's run is a few milliseconds) spares the engine the update, a longer
	// one competes as an equal from then on.
	BoostAfter time.Duration
	// Grace is how long past its compile and run limits a container may take to answer
	// before the Runner kills it (runbox-init enforces the limits itself; this is the backstop).
	Grace time.Duration
	// Runtime is the OCI runtime ("" for the engine's default; "runsc" for gVisor).
	Runtime string
	// Logger receives the Runner's logs; nil discards them.
	Logger *slog.Logger
}

// DefaultConfig returns a Config for a local engine with a warm pool of one container per
// language at start, two for a language in use, none for one unused for a few minutes.
func DefaultConfig() Config {
	return Config{
		Owner:        "runbox",
		ImageTag:     "latest",
		Defaults:     sandbox.DefaultLimits(),
		Max:          sandbox.MaxLimits(),
		PoolSize:     4,
		PoolStart:    1,
		PoolMin:      0,
		PoolIdle:     time.Minute,
		PoolStarts:   3,
		PoolMaxAge:   5 * time.Minute,
		PoolWarm:     true,
		PoolPrestart: true,
		PoolStagger:  500 * time.Millisecond,
		WaitShares:   minShares,
		BoostAfter:   20 * time.Millisecond,
		Grace:        3 * time.Second,
	}
}

var ownerRE = regexp.MustCompile(`^[a-zA-Z0-9][a-zA-Z0-9_.-]{0,62}$`)

// Validate reports the first invalid field.
func (c Config) Validate() error {
	if !ownerRE.MatchString(c.Owner) {
		return fmt.Errorf("docker runner: owner %q must be 1-63 letters, digits, '_', '.', '-'", c.Owner)
	}
	if c.ImageTag == "" {
		return fmt.Errorf("docker runner: empty image tag")
	}
	for _, name := range c.Languages {
		if _, ok := sandbox.Lookup(name); !ok {
			return fmt.Errorf("docker runner: %w: %q", sandbox.ErrUnknownLanguage, name)
		}
	}
	if err := c.Defaults.Check(c.Max); err != nil {
		return fmt.Errorf("docker runner: default limits: %w", err)
	}
	if c.PoolSize < 0 || c.PoolSize > 64 {
		return fmt.Errorf("docker runner: pool size %d, want 0..64", c.PoolSize)
	}
	if c.PoolSize > 0 && c.PoolMaxAge <= 0 {
		return fmt.Errorf("docker runner: pool max age must be positive")
	}
	if c.PoolSize > 0 && (c.PoolMin < 0 || c.PoolMin > c.PoolSize || c.PoolStart < c.PoolMin || c.PoolStart > c.PoolSize) {
		return fmt.Errorf("docker runner: pool min %d and start %d, want 0 <= min <= start <= size %d", c.PoolMin, c.PoolStart, c.PoolSize)
	}
	if c.PoolSize > 0 && (c.PoolIdle <= 0 || c.PoolStarts <= 0) {
		return fmt.Errorf("docker runner: pool idle time and starts must be positive")
	}
	if c.PoolStagger < 0 {
		return fmt.Errorf("docker runner: pool stagger must not be negative")
	}
	if c.WaitShares != 0 && (c.WaitShares < minShares || c.WaitShares > defaultShares) {
		return fmt.Errorf("docker runner: wait shares %d, want 0 (the engine's default) or %d..%d", c.WaitShares, minShares, defaultShares)
	}
	if c.BoostAfter < 0 {
		return fmt.Errorf("docker runner: boost delay must not be negative")
	}
	if c.Grace <= 0 {
		return fmt.Errorf("docker runner: grace must be positive")
	}
	return nil
}

// Labels on every sandbox container.
const (
	LabelSandbox  = "runbox.sandbox"
	LabelOwner    = "runbox.owner"
	LabelLanguage = "runbox.language"
	// LabelVersion is set on the runtime images by `make images`.
	LabelVersion = "runbox.version"
)

// Sandbox identity: the unprivileged user programs run as, and the scratch directory.
const (
	sandboxUser = "65534:65534"
	scratchDir  = "/tmp"
	initPath    = "/usr/local/bin/runbox-init"
	shmSize     = 8 << 20
	memlock     = 8 << 20
	// oomScoreAdj is the container's OOM score, which runbox-init and everything it
	// starts inherit. Set by the engine (with CAP_SYS_RESOURCE) it is also the floor that
	// an unprivileged process cannot write itself below: under host memory pressure the
	// kernel kills a sandbox before dockerd, the master or a slave.
	oomScoreAdj = 1000
	// bytesPerInode sizes a tmpfs's inode cap (nr_inodes): one inode per 4 KiB of its
	// size (a page, the least a non-empty file takes), and at least minInodes. Without a
	// cap a tmpfs takes half the host's RAM pages in inodes, which empty files and
	// directories use without using any of the size.
	bytesPerInode = 4 << 10
	minInodes     = 1024
	// CPU weights (cgroup v1 cpu.shares; the engine maps them onto v2's cpu.weight): the
	// least the engine takes, and its default.
	minShares     = 2
	defaultShares = 1024
)

// tmpfsInodes is the inode cap of a tmpfs of size bytes.
func tmpfsInodes(size int64) int64 { return max(size/bytesPerInode, minInodes) }

// boxLimits are the limits a container is created with; programs asking for the same ones
// can share a pool.
type boxLimits struct {
	CPUs      float64
	Memory    int64
	Pids      int64
	Disk      int64
	OpenFiles int64
	FileSize  int64
}

// boxLimitsOf returns the limits of a container for a program with limits l. One that
// compiles is created with the compiler's memory (CompileMemory, or Memory when that is
// larger); runbox-init stops at a gate before the run phase, where the Runner sets the
// program's own Memory (the Gate hook of runIn).
func boxLimitsOf(l sandbox.Limits, compiles bool) boxLimits {
	mem := l.Memory
	if compiles {
		mem = max(l.Memory, l.CompileMemory)
	}
	return boxLimits{CPUs: l.CPUs, Memory: mem, Pids: l.Pids, Disk: l.Disk, OpenFiles: l.OpenFiles, FileSize: l.FileSize}
}

// containerConfig is the one place that decides how a sandbox container is built. Every
// hardening field of design.md §4 is set here and pinned by TestContainerConfigHardening.
//
// w says how a pooled container waits for its program (the zero waiting for a container
// started for a program that is waiting already).
func containerConfig(image string, lang sandbox.Language, lim boxLimits, owner, runtime string, idle time.Duration, w waiting) (*container.Config, *container.HostConfig) {
	// runbox-init's own threads count against the same cgroup; it takes its share at start.
	pids := lim.Pids + boxinit.ReservedPids
	noOOMKillDisable := false
	cfg := &container.Config{
		Image:           image,
		Entrypoint:      []string{initPath},
		Cmd:             initArgs(lang, idle, w.warm, w.prestart),
		User:            sandboxUser,
		WorkingDir:      scratchDir,
		Hostname:        "sandbox",
		Env:             []string{},
		NetworkDisabled: true,
		AttachStdin:     true,
		AttachStdout:    true,
		AttachStderr:    true,
		OpenStdin:       true,
		StdinOnce:       true,
		Tty:             false,
		Labels: map[string]string{
			LabelSandbox:  "1",
			LabelOwner:    owner,
			LabelLanguage: lang.Name,
		},
	}
	host := &container.HostConfig{
		NetworkMode:    "none",
		ReadonlyRootfs: true,
		CapDrop:        []string{"ALL"},
		SecurityOpt:    []string{"no-new-privileges"},
		Privileged:     false,
		IpcMode:        "private",
		ShmSize:        shmSize,
		OomScoreAdj:    oomScoreAdj,
		// Every tmpfs the program can write: the scratch directory, and /dev/shm (the
		// engine's own, from ShmSize, would have no inode cap).
		Tmpfs: map[string]string{
			scratchDir: fmt.Sprintf("rw,exec,nosuid,nodev,size=%d,nr_inodes=%d,mode=1777", lim.Disk, tmpfsInodes(lim.Disk)),
			"/dev/shm": fmt.Sprintf("rw,noexec,nosuid,nodev,size=%d,nr_inodes=%d,mode=1777", shmSize, tmpfsInodes(shmSize)),
		},
		LogConfig:  container.LogConfig{Type: "none"},
		Runtime:    runtime,
		AutoRemove: false,
		Resources: container.Resources{
			NanoCPUs:       int64(lim.CPUs * 1e9),
			CPUShares:      w.shares,
			Memory:         lim.Memory,
			MemorySwap:     lim.Memory, // memory+swap: no swap at all
			PidsLimit:      &pids,
			OomKillDisable: &noOOMKillDisable,
			Ulimits: []*container.Ulimit{
				{Name: "nofile", Soft: lim.OpenFiles, Hard: lim.OpenFiles},
				{Name: "fsize", Soft: lim.FileSize, Hard: lim.FileSize},
				{Name: "core", Soft: 0, Hard: 0},
				// runbox-init locks its own code in memory (boxinit.Harden); the program
				// may lock as much of its own, all of it charged to the memory limit.
				{Name: "memlock", Soft: memlock, Hard: memlock},
			},
		},
	}
	return cfg, host
}

// waiting is how a pooled container waits for its program.
type waiting struct {
	// warm asks runbox-init to run the language's warm-up command while it waits (a
	// container started for a waiting program would only kill it).
	warm bool
	// prestart asks it to start the language's interpreter ahead (Language.Prestart), in
	// place of the warm-up, when warm is set and the language has one.
	prestart bool
	// shares is the container's CPU weight until its program has run for a while
	// (Config.WaitShares, Config.BoostAfter); 0 is the engine's default.
	shares int64
}

// initArgs are runbox-init's arguments.
func initArgs(lang sandbox.Language, idle time.Duration, warm, prestart bool) []string {
	args := []string{"--idle", idle.String()}
	if warm && prestart && len(lang.Prestart) > 0 {
		b, _ := json.Marshal(lang.Prestart)
		return append(args, "--prestart", string(b))
	}
	if warm && len(lang.Warm) > 0 {
		b, _ := json.Marshal(lang.Warm) // a []string always encodes
		args = append(args, "--warm", string(b))
	}
	return args
}

// describe is a short form of a box's limits for logs.
func (b boxLimits) describe() string {
	return fmt.Sprintf("cpus=%g memory=%s pids=%d disk=%s", b.CPUs, units.BytesSize(float64(b.Memory)), b.Pids, units.BytesSize(float64(b.Disk)))
}
