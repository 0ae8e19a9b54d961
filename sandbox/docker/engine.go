package docker

import (
	"context"
	"fmt"
	"regexp"
	"strconv"
	"strings"
	"time"

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
// and says what weakens the sandbox: a runc older than runcFixed, or seccomp off. runtime
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
	return out
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

// checkEngine asks the engine and logs what engineWarnings says, once, when the Runner
// starts. It never fails the Runner: a warning is all it gives.
func (r *Runner) checkEngine(ctx context.Context) {
	defer r.logPanic("engine check")
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	info, infoErr := r.api.Info(ctx)
	ver, verErr := r.api.ServerVersion(ctx)
	for _, w := range engineWarnings(info, infoErr, ver, verErr, r.cfg.Runtime) {
		r.log.Warn(w.msg, w.args...)
	}
}
