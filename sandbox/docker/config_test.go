package docker

import (
	"encoding/json"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/docker/docker/api/types/container"

	"runbox/sandbox"
	"runbox/sandbox/boxinit"
)

// TestContainerConfigHardening pins every hardening field of design.md §4. A change here
// is a change to the sandbox's threat model: update docs/sandbox.md with it.
func TestContainerConfigHardening(t *testing.T) {
	t.Parallel()
	lang, _ := sandbox.Lookup("python")
	lim := boxLimits{CPUs: 0.5, Memory: 128 << 20, Pids: 32, Disk: 16 << 20, OpenFiles: 50, FileSize: 4 << 20}
	cfg, host := containerConfig("runbox/runtime-python:latest", lang, lim, "owner1", "", 11*time.Minute, waiting{prestart: true})

	if cfg.User != "65534:65534" {
		t.Errorf("User = %q, want the unprivileged 65534:65534", cfg.User)
	}
	if !cfg.NetworkDisabled || host.NetworkMode != "none" {
		t.Errorf("network: disabled=%v mode=%q, want no network", cfg.NetworkDisabled, host.NetworkMode)
	}
	if !host.ReadonlyRootfs {
		t.Error("root filesystem is writable")
	}
	if !reflect.DeepEqual([]string(host.CapDrop), []string{"ALL"}) || len(host.CapAdd) != 0 {
		t.Errorf("CapDrop = %v, CapAdd = %v", host.CapDrop, host.CapAdd)
	}
	if !reflect.DeepEqual(host.SecurityOpt, []string{"no-new-privileges"}) {
		t.Errorf("SecurityOpt = %v: want no-new-privileges and the default seccomp profile", host.SecurityOpt)
	}
	if host.Privileged || host.PidMode != "" || host.IpcMode != "private" || host.UsernsMode != "" {
		t.Errorf("namespaces: privileged=%v pid=%q ipc=%q userns=%q", host.Privileged, host.PidMode, host.IpcMode, host.UsernsMode)
	}
	if len(host.Binds) != 0 || len(host.Mounts) != 0 || len(host.VolumesFrom) != 0 || len(host.Devices) != 0 {
		t.Errorf("host paths reach the sandbox: binds %v mounts %v volumes-from %v devices %v", host.Binds, host.Mounts, host.VolumesFrom, host.Devices)
	}
	// Every tmpfs the program can write has an inode cap: one per 4 KiB of its size.
	want := map[string]string{
		"/tmp":     "rw,exec,nosuid,nodev,size=16777216,nr_inodes=4096,mode=1777",
		"/dev/shm": "rw,noexec,nosuid,nodev,size=8388608,nr_inodes=2048,mode=1777",
	}
	if !reflect.DeepEqual(host.Tmpfs, want) {
		t.Errorf("Tmpfs = %v, want %v", host.Tmpfs, want)
	}
	if host.ShmSize != 8<<20 {
		t.Errorf("ShmSize = %d", host.ShmSize)
	}
	if _, small := containerConfig("img", lang, boxLimits{CPUs: 1, Memory: 64 << 20, Pids: 8, Disk: 1 << 20, OpenFiles: 16, FileSize: 1 << 20}, "o", "", time.Minute, waiting{}); !strings.Contains(small.Tmpfs["/tmp"], ",nr_inodes=1024,") {
		t.Errorf("a 1 MiB scratch: %q, want the 1024 inodes of the floor", small.Tmpfs["/tmp"])
	}
	// The sandbox is the kernel's first choice under host memory pressure, a floor the
	// program cannot write itself below.
	if host.OomScoreAdj != 1000 {
		t.Errorf("OomScoreAdj = %d, want 1000", host.OomScoreAdj)
	}
	if host.LogConfig.Type != "none" {
		t.Errorf("LogConfig = %q: program output must not pile up in engine logs", host.LogConfig.Type)
	}
	res := host.Resources
	if res.NanoCPUs != 5e8 || res.Memory != 128<<20 || res.MemorySwap != 128<<20 {
		t.Errorf("cpu %d memory %d swap %d", res.NanoCPUs, res.Memory, res.MemorySwap)
	}
	if res.PidsLimit == nil || *res.PidsLimit != 32+boxinit.ReservedPids {
		t.Errorf("PidsLimit = %v, want the program's 32 plus runbox-init's %d", res.PidsLimit, boxinit.ReservedPids)
	}
	if res.OomKillDisable == nil || *res.OomKillDisable {
		t.Error("the OOM killer must stay enabled")
	}
	ulimits := []*container.Ulimit{
		{Name: "nofile", Soft: 50, Hard: 50},
		{Name: "fsize", Soft: 4 << 20, Hard: 4 << 20},
		{Name: "core", Soft: 0, Hard: 0},
		{Name: "memlock", Soft: 8 << 20, Hard: 8 << 20},
	}
	if !reflect.DeepEqual(res.Ulimits, ulimits) {
		t.Errorf("Ulimits = %v", res.Ulimits)
	}
	if !cfg.OpenStdin || !cfg.StdinOnce || cfg.Tty || !cfg.AttachStdout {
		t.Errorf("stdio: open=%v once=%v tty=%v", cfg.OpenStdin, cfg.StdinOnce, cfg.Tty)
	}
	if !reflect.DeepEqual([]string(cfg.Entrypoint), []string{"/usr/local/bin/runbox-init"}) || !reflect.DeepEqual([]string(cfg.Cmd), []string{"--idle", "11m0s"}) {
		t.Errorf("Entrypoint %v Cmd %v", cfg.Entrypoint, cfg.Cmd)
	}
	if len(cfg.Env) != 0 {
		t.Errorf("Env = %v: nothing of the server's environment may leak in", cfg.Env)
	}
	if cfg.Labels[LabelSandbox] != "1" || cfg.Labels[LabelOwner] != "owner1" || cfg.Labels[LabelLanguage] != "python" {
		t.Errorf("Labels = %v", cfg.Labels)
	}
	if host.AutoRemove {
		t.Error("AutoRemove would lose the OOM state the runner inspects")
	}
}

func TestInitArgsWarm(t *testing.T) {
	t.Parallel()
	lim := boxLimits{CPUs: 1, Memory: 64 << 20, Pids: 8, Disk: 1 << 20, OpenFiles: 16, FileSize: 1 << 20}
	// A compiler: its warm-up command.
	lang, _ := sandbox.Lookup("c")
	cfg, _ := containerConfig("img", lang, lim, "o", "", time.Minute, waiting{warm: true, prestart: true})
	warm, _ := json.Marshal(lang.Warm)
	if want := []string{"--idle", "1m0s", "--warm", string(warm)}; !reflect.DeepEqual([]string(cfg.Cmd), want) {
		t.Errorf("c: Cmd = %q, want %q", cfg.Cmd, want)
	}
	// An interpreter started ahead, in place of the warm-up.
	lang, _ = sandbox.Lookup("python")
	cfg, _ = containerConfig("img", lang, lim, "o", "", time.Minute, waiting{warm: true, prestart: true})
	pre, _ := json.Marshal(lang.Prestart)
	if want := []string{"--idle", "1m0s", "--prestart", string(pre)}; !reflect.DeepEqual([]string(cfg.Cmd), want) {
		t.Errorf("python: Cmd = %q, want %q", cfg.Cmd, want)
	}
	// Not pooled: neither.
	cfg, _ = containerConfig("img", lang, lim, "o", "", time.Minute, waiting{prestart: true})
	if want := []string{"--idle", "1m0s"}; !reflect.DeepEqual([]string(cfg.Cmd), want) {
		t.Errorf("python, not pooled: Cmd = %q, want %q", cfg.Cmd, want)
	}
}

func TestConfigValidate(t *testing.T) {
	t.Parallel()
	if err := DefaultConfig().Validate(); err != nil {
		t.Fatalf("default config: %v", err)
	}
	bad := []func(*Config){
		func(c *Config) { c.Owner = "" },
		func(c *Config) { c.Owner = "has space" },
		func(c *Config) { c.ImageTag = "" },
		func(c *Config) { c.Languages = []string{"cobol"} },
		func(c *Config) { c.PoolSize = -1 },
		func(c *Config) { c.Grace = 0 },
		func(c *Config) { c.WaitShares = 1 },
		func(c *Config) { c.WaitShares = defaultShares + 1 },
		func(c *Config) { c.BoostAfter = -time.Millisecond },
		func(c *Config) { c.Defaults.Memory = c.Max.Memory * 2 },
	}
	for i, f := range bad {
		c := DefaultConfig()
		f(&c)
		if err := c.Validate(); err == nil {
			t.Errorf("case %d: invalid config accepted", i)
		}
	}
}

// A language's own compile time replaces the server's shorter default, never a time the
// request asked for, and never past the server's maximum.
func TestLimitsForLanguageCompileTime(t *testing.T) {
	t.Parallel()
	cfg := DefaultConfig()
	java, _ := sandbox.Lookup("java")
	c, _ := sandbox.Lookup("c")
	if got := limitsFor(sandbox.Limits{}, c, cfg).CompileTime; got != cfg.Defaults.CompileTime {
		t.Errorf("c: %v, want the server's default %v", got, cfg.Defaults.CompileTime)
	}
	if got := limitsFor(sandbox.Limits{}, java, cfg).CompileTime; got != java.CompileTime || got <= cfg.Defaults.CompileTime {
		t.Errorf("java: %v, want its own %v", got, java.CompileTime)
	}
	if got := limitsFor(sandbox.Limits{CompileTime: 2 * time.Second}, java, cfg).CompileTime; got != 2*time.Second {
		t.Errorf("java asking 2s: %v", got)
	}
	cfg.Max.CompileTime = 20 * time.Second
	if got := limitsFor(sandbox.Limits{}, java, cfg).CompileTime; got != 20*time.Second {
		t.Errorf("java under a 20s maximum: %v", got)
	}
}
