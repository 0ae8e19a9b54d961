package docker

import (
	"errors"
	"fmt"
	"strings"
	"testing"
	"unicode"

	"github.com/docker/docker/api/types"
	"github.com/docker/docker/api/types/system"
)

func TestEngineWarnings(t *testing.T) {
	t.Parallel()
	seccomp := []string{"name=apparmor", "name=seccomp,profile=builtin", "name=cgroupns"}
	comp := func(v string) types.Version {
		return types.Version{Components: []types.ComponentVersion{{Name: "Engine", Version: "28.5.2"}, {Name: "runc", Version: v}}}
	}
	down := errors.New("engine down")
	for _, c := range []struct {
		name    string
		info    system.Info
		infoErr error
		ver     types.Version
		verErr  error
		runtime string
		want    []string // a substring of each warning, in order
	}{
		{name: "fixed runc, seccomp on", info: system.Info{SecurityOptions: seccomp}, ver: comp("1.1.12")},
		{name: "newer runc", info: system.Info{SecurityOptions: seccomp}, ver: comp("1.2.5")},
		{name: "runc 1.10", info: system.Info{SecurityOptions: seccomp}, ver: comp("1.10.0")},
		{name: "runc 2", info: system.Info{SecurityOptions: seccomp}, ver: comp("v2.0.0-rc.1")},
		{name: "old runc", info: system.Info{SecurityOptions: seccomp}, ver: comp("1.1.11"), want: []string{"runc is older than 1.1.12"}},
		{name: "distribution runc", info: system.Info{SecurityOptions: seccomp, RuncCommit: system.Commit{ID: "1.1.5+ds1-1+deb12u1"}}, ver: comp("1.1.5+ds1"), want: []string{"runc is older than 1.1.12"}},
		{name: "commit only, fixed", info: system.Info{SecurityOptions: seccomp, RuncCommit: system.Commit{ID: "v1.1.12-0-g51d5e94"}}},
		{name: "commit only, old", info: system.Info{SecurityOptions: seccomp, RuncCommit: system.Commit{ID: "v1.0.0-rc93"}}, want: []string{"runc is older"}},
		{name: "commit hash", info: system.Info{SecurityOptions: seccomp, RuncCommit: system.Commit{ID: "51d5e94601ceffbbd85688df1c928ecccbfa4685"}}, want: []string{"cannot tell the runc version"}},
		{name: "no answer", info: system.Info{SecurityOptions: seccomp}, want: []string{"cannot tell the runc version"}},
		{name: "huge numbers", info: system.Info{SecurityOptions: seccomp}, ver: comp("99999999999999999999999.1.1"), want: []string{"cannot tell the runc version"}},
		{name: "garbage", info: system.Info{SecurityOptions: []string{"\xff,=,,==", ""}}, ver: comp("\x00\xff"), want: []string{"cannot tell the runc version", "seccomp is off"}},
		{name: "version error", info: system.Info{SecurityOptions: seccomp, RuncCommit: system.Commit{ID: "1.2.0"}}, ver: comp("1.0.0"), verErr: down},
		{name: "seccomp missing", info: system.Info{SecurityOptions: []string{"name=apparmor"}}, ver: comp("1.2.0"), want: []string{"seccomp is off"}},
		{name: "seccomp unconfined", info: system.Info{SecurityOptions: []string{"name=seccomp,profile=unconfined"}}, ver: comp("1.2.0"), want: []string{"seccomp is off"}},
		{name: "old engine's bare seccomp", info: system.Info{SecurityOptions: []string{"apparmor", "seccomp"}}, ver: comp("1.2.0")},
		{name: "info error", infoErr: down, ver: comp("1.2.0"), want: []string{"cannot tell whether seccomp is on"}},
		{name: "both errors", infoErr: down, verErr: down, want: []string{"cannot tell the runc version", "cannot tell whether seccomp is on"}},
		{name: "gvisor", info: system.Info{SecurityOptions: seccomp}, ver: comp("1.0.0"), runtime: "runsc"},
		{name: "gvisor by default", info: system.Info{SecurityOptions: seccomp, DefaultRuntime: "runsc"}, ver: comp("1.0.0")},
		{name: "runc by name", info: system.Info{SecurityOptions: seccomp, DefaultRuntime: "runsc"}, ver: comp("1.0.0"), runtime: "runc", want: []string{"runc is older"}},
		{name: "overlay2", info: system.Info{SecurityOptions: seccomp, Driver: "overlay2"}, ver: comp("1.2.0")},
		{name: "fuse-overlayfs", info: system.Info{SecurityOptions: seccomp, Driver: "fuse-overlayfs"}, ver: comp("1.2.0"), want: []string{"storage driver fuse-overlayfs passes every file"}},
		{name: "vfs and old runc", info: system.Info{SecurityOptions: seccomp, Driver: " vfs"}, ver: comp("1.1.0"), want: []string{"runc is older", "storage driver vfs copies the whole image"}},
		{name: "driver unknown on error", infoErr: down, ver: comp("1.2.0"), want: []string{"cannot tell whether seccomp is on"}},
	} {
		got := engineWarnings(c.info, c.infoErr, c.ver, c.verErr, c.runtime)
		if len(got) != len(c.want) {
			t.Errorf("%s: %d warnings %v, want %q", c.name, len(got), got, c.want)
			continue
		}
		for i, w := range got {
			if !strings.Contains(w.msg, c.want[i]) || strings.ToLower(w.msg[:1]) != w.msg[:1] || len(w.args)%2 != 0 {
				t.Errorf("%s: warning %d: %q %v, want %q", c.name, i, w.msg, w.args, c.want[i])
			}
		}
	}
}

// EngineInfo is what the engine said, each text bounded and printable: it reaches
// terminals and reports.
func TestEngineInfo(t *testing.T) {
	t.Parallel()
	info := system.Info{OperatingSystem: "Debian GNU/Linux 12 (bookworm)", KernelVersion: "6.1.0-28-amd64", NCPU: 2,
		Driver: "overlay2", CgroupVersion: "2", DefaultRuntime: "runc"}
	ver := types.Version{Version: "28.5.2"}
	want := EngineInfo{Version: "28.5.2", OS: "Debian GNU/Linux 12 (bookworm)", Kernel: "6.1.0-28-amd64", CPUs: 2,
		StorageDriver: "overlay2", CgroupVersion: "2", Runtime: "runc"}
	if got := engineInfo(info, nil, ver, nil, ""); got != want {
		t.Errorf("engineInfo = %+v, want %+v", got, want)
	}
	want.Runtime = "runsc"
	if got := engineInfo(info, nil, ver, nil, "runsc"); got != want {
		t.Errorf("with a runtime asked: %+v, want %+v", got, want)
	}

	down := errors.New("engine down")
	if got := engineInfo(info, down, ver, down, ""); got != (EngineInfo{}) {
		t.Errorf("no answers: %+v, want nothing", got)
	}

	hostile := system.Info{OperatingSystem: "\x1b]0;pwned\x07Debian\r\n", Driver: strings.Repeat("overlay", 1000), NCPU: -3, KernelVersion: "\xff\xfe6.1"}
	got := engineInfo(hostile, nil, types.Version{Version: "  \x00\x1b[2J28  "}, nil, "")
	if got.OS != "]0;pwnedDebian" || got.Version != "[2J28" || got.Kernel != "\ufffd\ufffd6.1" || got.CPUs != 0 || len([]rune(got.StorageDriver)) != maxInfoText {
		t.Errorf("hostile answers kept: %+v", got)
	}
}

// FuzzEngineWarnings: whatever the engine answers, no panic.
func FuzzEngineWarnings(f *testing.F) {
	f.Add("1.1.5+ds1", "v1.1.12-0-g51d5e94", "name=seccomp,profile=default", "runc", "fuse-overlayfs")
	f.Add("", "", "", "", "")
	f.Fuzz(func(t *testing.T, comp, commit, opt, rt, driver string) {
		info := system.Info{RuncCommit: system.Commit{ID: commit}, SecurityOptions: strings.Split(opt, ";"), DefaultRuntime: rt,
			Driver: driver, OperatingSystem: driver, KernelVersion: comp}
		ver := types.Version{Version: commit, Components: []types.ComponentVersion{{Name: "runc", Version: comp}}}
		for _, w := range engineWarnings(info, nil, ver, nil, "") {
			if w.msg == "" {
				t.Fatal("empty warning")
			}
		}
		e := engineInfo(info, nil, ver, nil, "")
		for _, s := range []string{e.Version, e.OS, e.Kernel, e.StorageDriver, e.CgroupVersion, e.Runtime} {
			if len([]rune(s)) > maxInfoText || strings.IndexFunc(s, func(c rune) bool { return !unicode.IsPrint(c) }) >= 0 {
				t.Fatalf("engineInfo kept %q", s)
			}
		}
	})
}

// The Runner warns when it starts: an old runc and seccomp off reach the log (master and
// slave both build their sandbox with New), and the Runner still starts.
func TestNewWarnsAboutTheEngine(t *testing.T) {
	t.Parallel()
	f := newFakeEngine()
	f.version.Components[0].Version = "1.1.5+ds1"
	f.info.SecurityOptions = nil
	_, logs := newFakeRunner(t, f, nil)
	l := logs.String()
	for _, want := range []string{"level=WARN", "runc is older than 1.1.12", "runc=1.1.5+ds1", "seccomp is off", "component=sandbox"} {
		if !strings.Contains(l, want) {
			t.Errorf("log does not say %q:\n%s", want, l)
		}
	}

	f = newFakeEngine()
	f.infoErr = fmt.Errorf("engine hiccup")
	_, logs = newFakeRunner(t, f, nil)
	if l := logs.String(); !strings.Contains(l, "cannot tell whether seccomp is on") || strings.Contains(l, "runc") {
		t.Errorf("log:\n%s", l)
	}

	f = newFakeEngine()
	f.info.Driver = "fuse-overlayfs"
	r, logs := newFakeRunner(t, f, nil)
	if l := logs.String(); !strings.Contains(l, "storage driver fuse-overlayfs") || !strings.Contains(l, "driver=fuse-overlayfs") {
		t.Errorf("log:\n%s", l)
	}
	if got := r.Engine().StorageDriver; got != "fuse-overlayfs" {
		t.Errorf("Engine().StorageDriver = %q", got)
	}

	f = newFakeEngine()
	_, logs = newFakeRunner(t, f, nil)
	if l := logs.String(); strings.Contains(l, "level=WARN") {
		t.Errorf("a sound engine got warnings:\n%s", l)
	}
}
