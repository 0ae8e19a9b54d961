package docker

import (
	"errors"
	"fmt"
	"strings"
	"testing"

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

// FuzzEngineWarnings: whatever the engine answers, no panic.
func FuzzEngineWarnings(f *testing.F) {
	f.Add("1.1.5+ds1", "v1.1.12-0-g51d5e94", "name=seccomp,profile=default", "runc")
	f.Add("", "", "", "")
	f.Fuzz(func(t *testing.T, comp, commit, opt, rt string) {
		info := system.Info{RuncCommit: system.Commit{ID: commit}, SecurityOptions: strings.Split(opt, ";"), DefaultRuntime: rt}
		ver := types.Version{Components: []types.ComponentVersion{{Name: "runc", Version: comp}}}
		for _, w := range engineWarnings(info, nil, ver, nil, "") {
			if w.msg == "" {
				t.Fatal("empty warning")
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
	_, logs = newFakeRunner(t, f, nil)
	if l := logs.String(); strings.Contains(l, "level=WARN") {
		t.Errorf("a sound engine got warnings:\n%s", l)
	}
}
