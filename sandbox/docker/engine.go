package docker

import (
	"context"
	"fmt"
	"regexp"
	"strconv"
	"strings"
	"time"
	"unicode"

	"github.com/docker/docker/api/types"
	"github.com/docker/docker/api/types/system"
)

// warning is one thing an operator must hear about the engine: a lowercase message and
// its key/value data, for slog.
type warning struct {
	msg  string
	args []any
}

// runcFixed is the first runc release without CVE-2024-21626 (a process started in a
// container could keep a host directory open through a leaked file descriptor: an
// escape, whatever the container's hardening).
var runcFixed = [3]int{1, 1, 12}

// engineWarnings reads the engine's answers (Info, ServerVersion, each with its error)
// and says what weakens the sandbox: a runc older than runcFixed, or seccomp off; and
// what slows every program badly: a storage driver without a shared page cache. runtime
// is the OCI runtime containers run under (Config.Runtime; empty: the engine's default);
// runc is checked only when it is runc. The answers are outside input: one that is
// missing or does not parse is "cannot tell", which is a warning too. Never panics.
func engineWarnings(info system.Info, infoErr error, ver types.Version, verErr error, runtime string) []warning {
	var out []warning
	if runtime == "" && infoErr == nil {
		runtime = info.DefaultRuntime
	}
	if runtime == "" || runtime == "runc" {
		// The engine's runc component ("1.1.12", or a distribution's "1.1.5+ds1"), else
		// the commit `runc --version` printed ("v1.1.12-0-g51d5e94").
		var answers []string
		if verErr == nil {
			for _, c := range ver.Components {
				if strings.EqualFold(c.Name, "runc") {
					answers = append(answers, c.Version)
				}
			}
		}
		if infoErr == nil {
			answers = append(answers, info.RuncCommit.ID)
		}
		v, said, ok := runcVersion(answers)
		switch {
		case !ok:
			out = append(out, warning{"engine: cannot tell the runc version; runc before 1.1.12 lets a program escape its container (CVE-2024-21626)", []any{"answer", said}})
		case older(v, runcFixed):
			out = append(out, warning{"engine: runc is older than 1.1.12 and lets a program escape its container (CVE-2024-21626) unless the distribution backported the fix; upgrade it", []any{"runc", said}})
		}
	}
	switch on, ok := seccompOn(info, infoErr); {
	case !ok:
		out = append(out, warning{"engine: cannot tell whether seccomp is on; without it a program reaches every system call of the host's kernel", []any{"err", fmt.Sprint(infoErr)}})
	case !on:
		out = append(out, warning{"engine: seccomp is off; a program reaches every system call of the host's kernel", []any{"security_options", fmt.Sprint(info.SecurityOptions)}})
	}
	if infoErr == nil {
		if why, slow := slowDrivers[strings.TrimSpace(info.Driver)]; slow {
			out = append(out, warning{"engine: storage driver " + why + "; use overlay2 where the kernel allows it (docs/install.md)", []any{"driver", printable(info.Driver)}})
		}
	}
	return out
}

// slowDrivers are the storage drivers that cost every container much more than overlay2,
// with why (measured in docs/performance.md).
var slowDrivers = map[string]string{
	"fuse-overlayfs": "fuse-overlayfs passes every file a container opens through a user-space daemon and keeps no file's contents cached from one open to the next: a C compile or an interpreter's start takes 2 to 3 times as long as on overlay2",
	"vfs":            "vfs copies the whole image for every container: each start copies hundreds of megabytes",
}

// EngineInfo describes the engine a Runner uses, as the engine said it (every field
// bounded and printable: it is outside input). Benchmarks carry it, since their figures
// depend on it.
type EngineInfo struct {
	Version       string `json:"version,omitempty"`        // the Docker Engine's version
	OS            string `json:"os,omitempty"`             // the engine host's operating system
	Kernel        string `json:"kernel,omitempty"`         // the engine host's kernel
	CPUs          int    `json:"cpus,omitempty"`           // the engine host's CPUs
	StorageDriver string `json:"storage_driver,omitempty"` // overlay2, fuse-overlayfs, ...
	CgroupVersion string `json:"cgroup_version,omitempty"` // "1" or "2"
	Runtime       string `json:"runtime,omitempty"`        // the OCI runtime of the sandbox containers
}

// engineInfo reads EngineInfo from the engine's answers; runtime is Config.Runtime (empty:
// the engine's default). What an answer lacks stays empty.
func engineInfo(info system.Info, infoErr error, ver types.Version, verErr error, runtime string) EngineInfo {
	var e EngineInfo
	if verErr == nil {
		e.Version = printable(ver.Version)
	}
	if infoErr == nil {
		e.OS = printable(info.OperatingSystem)
		e.Kernel = printable(info.KernelVersion)
		e.CPUs = max(info.NCPU, 0)
		e.StorageDriver = printable(info.Driver)
		e.CgroupVersion = printable(info.CgroupVersion)
		if runtime == "" {
			runtime = info.DefaultRuntime
		}
	}
	e.Runtime = printable(runtime)
	return e
}

// maxInfoText bounds each text of EngineInfo.
const maxInfoText = 80

// printable keeps s to its first maxInfoText printable characters, spaces trimmed: an
// engine's answer goes to logs, terminals and reports.
func printable(s string) string {
	var b strings.Builder
	n := 0
	for _, c := range s {
		if n == maxInfoText {
			break
		}
		if unicode.IsPrint(c) {
			b.WriteRune(c)
			n++
		}
	}
	return strings.TrimSpace(b.String())
}

var versionRE = regexp.MustCompile(`^v?(\d{1,9})\.(\d{1,9})\.(\d{1,9})`)

// runcVersion returns the first answer that parses as a version, the answer it came
// from (else all of them, for the log) and whether one did.
func runcVersion(answers []string) (v [3]int, said string, ok bool) {
	for _, a := range answers {
		m := versionRE.FindStringSubmatch(strings.TrimSpace(a))
		if m == nil {
			continue
		}
		for i := range v {
			v[i], _ = strconv.Atoi(m[i+1]) // at most 9 digits: always an int
		}
		return v, a, true
	}
	return v, strings.Join(answers, " "), false
}

func older(v, than [3]int) bool {
	for i := range v {
		if v[i] != than[i] {
			return v[i] < than[i]
		}
	}
	return false
}

// seccompOn reads the engine's security options: "name=seccomp,profile=default" (or the
// bare "seccomp" of old engines) is on; a profile "unconfined", or no seccomp entry, is off.
func seccompOn(info system.Info, infoErr error) (on, ok bool) {
	if infoErr != nil {
		return false, false
	}
	for _, opt := range info.SecurityOptions {
		if strings.TrimSpace(opt) == "seccomp" {
			return true, true
		}
		fields := map[string]string{}
		for _, kv := range strings.Split(opt, ",") {
			k, v, _ := strings.Cut(kv, "=")
			fields[strings.TrimSpace(k)] = strings.TrimSpace(v)
		}
		if fields["name"] == "seccomp" {
			return fields["profile"] != "unconfined", true
		}
	}
	return false, true
}

// checkEngine asks the engine, once, when the Runner starts: it logs what engineWarnings
// says and keeps what engineInfo reads (Engine). It never fails the Runner: a warning is
// all it gives.
func (r *Runner) checkEngine(ctx context.Context) {
	defer r.logPanic("engine check")
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	info, infoErr := r.api.Info(ctx)
	ver, verErr := r.api.ServerVersion(ctx)
	r.engine = engineInfo(info, infoErr, ver, verErr, r.cfg.Runtime)
	for _, w := range engineWarnings(info, infoErr, ver, verErr, r.cfg.Runtime) {
		r.log.Warn(w.msg, w.args...)
	}
}

// Engine describes the engine the Runner uses, as it answered when the Runner started.
func (r *Runner) Engine() EngineInfo { return r.engine }
