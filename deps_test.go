package runbox_test

// This file pins the layering of design.md §2: which of runbox's packages may import which,
// and which packages may touch a third-party SDK. It reads the real imports with `go list
// -deps -test -json` (tests are code too), in the root module and in the GUI's.

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"slices"
	"strings"
	"testing"
)

// layers ranks the trees of the module: a package imports packages of a lower rank, or of
// its own tree (with the exceptions of checkImport). transport and monitor share a rank
// and neither imports the other; cmd and docs are the top.
var layers = map[string]int{
	"internal":  0,
	"sandbox":   1,
	"scheduler": 2,
	"transport": 3,
	"monitor":   3,
	"cmd":       4,
	"docs":      4,
}

// wrappers are the packages that wrap a third-party SDK: only the server binary
// (cmd/runbox) wires them in, so no SDK type reaches the domain packages or the transport.
var wrappers = []string{
	"runbox/sandbox/docker",
	"runbox/scheduler/docker",
	"runbox/scheduler/swarm",
	"runbox/scheduler/psutil",
	"runbox/scheduler/bolt",
}

// sdks are the third-party SDKs (by import path prefix) and the only packages that may
// import them (their tests included).
var sdks = []struct {
	name     string
	prefixes []string
	owners   []string
}{
	{"the Docker SDK", []string{"github.com/docker/docker/", "github.com/containerd/", "github.com/opencontainers/", "github.com/moby/"},
		[]string{"runbox/sandbox/docker", "runbox/scheduler/docker", "runbox/scheduler/swarm"}},
	{"gopsutil", []string{"github.com/shirou/gopsutil/"}, []string{"runbox/scheduler/psutil"}},
	{"bbolt", []string{"go.etcd.io/bbolt"}, []string{"runbox/scheduler/bolt"}},
	{"yamux", []string{"github.com/hashicorp/yamux"}, []string{"runbox/transport"}},
	{"the Prometheus client", []string{"github.com/prometheus/"}, []string{"runbox/monitor"}},
	{"fyne", []string{"fyne.io/"}, []string{"runbox/cmd/runbox-gui"}},
}

// testExceptions are imports that only a package's tests may make, with the reason.
var testExceptions = []struct{ from, to, why string }{
	{"runbox/cmd/runbox", "github.com/hashicorp/yamux", "TestChaos plays a hostile peer that floods yamux streams below the transport's API"},
}

// pkg is one package as the check sees it: its imports, its tests' imports and its
// transitive dependencies (without its tests').
type pkg struct {
	path        string
	imports     []string
	testImports []string
	deps        []string
}

// tree is the top-level directory of a module package: "scheduler" for
// runbox/scheduler/bolt.
func tree(path string) string {
	rest, _ := strings.CutPrefix(path, "runbox/")
	t, _, _ := strings.Cut(rest, "/")
	return t
}

func under(path, root string) bool { return path == root || strings.HasPrefix(path, root+"/") }

func isSDK(path string, prefixes []string) bool {
	return slices.ContainsFunc(prefixes, func(p string) bool {
		return strings.HasPrefix(path, p) || path == strings.TrimSuffix(p, "/")
	})
}

// checkImport reports why from may not import to (both module packages), or "".
func checkImport(from, to string) string {
	ft, tt := tree(from), tree(to)
	fr, ok := layers[ft]
	if !ok {
		return fmt.Sprintf("%s: tree %q has no layer: add it to deps_test.go (and say why in docs/architecture.md)", from, ft)
	}
	tr, ok := layers[tt]
	if !ok {
		return fmt.Sprintf("%s imports %s: tree %q has no layer: add it to deps_test.go", from, to, tt)
	}
	switch {
	case slices.Contains(wrappers, to) && !under(from, to) && !under(from, "runbox/cmd/runbox"):
		return fmt.Sprintf("%s imports %s: an SDK wrapper is wired in by the server binary (cmd/runbox) only", from, to)
	case ft == tt && from == "runbox/"+ft && to != from:
		return fmt.Sprintf("%s imports %s: the domain package never imports its implementations", from, to)
	case ft == tt && ft == "scheduler" && !under(from, to) && !under(to, from) && to != "runbox/scheduler":
		return fmt.Sprintf("%s imports %s: scheduler's subpackages are independent (what they share belongs to scheduler)", from, to)
	case ft == tt:
		return ""
	case tr >= fr:
		return fmt.Sprintf("%s imports %s: the import runs back up (%s is layer %d, %s layer %d; imports flow sandbox ← scheduler ← transport ← cmd)",
			from, to, ft, fr, tt, tr)
	}
	return ""
}

// check returns every layering violation in pkgs.
func check(pkgs []pkg) []string {
	var bad []string
	for _, p := range pkgs {
		imports := slices.Clone(p.imports)
		for _, imp := range p.testImports {
			if !slices.ContainsFunc(testExceptions, func(e struct{ from, to, why string }) bool { return e.from == p.path && e.to == imp }) {
				imports = append(imports, imp)
			}
		}
		for _, imp := range imports {
			if under(imp, "runbox") {
				if why := checkImport(p.path, imp); why != "" {
					bad = append(bad, why)
				}
				continue
			}
			for _, s := range sdks {
				if isSDK(imp, s.prefixes) && !slices.ContainsFunc(s.owners, func(o string) bool { return under(p.path, o) }) {
					bad = append(bad, fmt.Sprintf("%s imports %s: %s is imported only by %s", p.path, imp, s.name, strings.Join(s.owners, ", ")))
				}
			}
		}
		// Below cmd, no package reaches an SDK but through the package that wraps it.
		if tree(p.path) == "cmd" {
			continue
		}
		for _, s := range sdks {
			if slices.ContainsFunc(s.owners, func(o string) bool { return under(p.path, o) }) {
				continue
			}
			if i := slices.IndexFunc(p.deps, func(d string) bool { return isSDK(d, s.prefixes) }); i >= 0 {
				bad = append(bad, fmt.Sprintf("%s depends on %s (%s) through its imports", p.path, s.name, p.deps[i]))
			}
		}
	}
	slices.Sort(bad)
	return slices.Compact(bad)
}

// listed is what `go list -json` prints of a package.
type listed struct {
	ImportPath string
	ForTest    string
	Standard   bool
	Imports    []string
	Deps       []string
	Module     *struct{ Path string }
}

// strip turns a test variant's path ("runbox/x [runbox/x.test]", "runbox/x_test") into the
// package it tests.
func strip(path string) string {
	path, _, _ = strings.Cut(path, " ")
	return strings.TrimSuffix(path, "_test")
}

// goList reads the packages of the module in dir (tests folded into the package they
// test) and of the modules it replaces with runbox's.
func goList(t *testing.T, dir string) []pkg {
	t.Helper()
	cmd := exec.Command("go", "list", "-deps", "-test", "-json", "./...")
	cmd.Dir = dir
	// The GUI builds with cgo (OpenGL): without it, go list finds no files in its drivers.
	// Listing compiles nothing, so no C compiler is needed.
	cmd.Env = append(os.Environ(), "CGO_ENABLED=1")
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("go list in %s: %v\n%s", dir, err, stderr.Bytes())
	}
	byPath := map[string]*pkg{}
	var order []string
	dec := json.NewDecoder(bytes.NewReader(out))
	for {
		var l listed
		if err := dec.Decode(&l); errors.Is(err, io.EOF) {
			break
		} else if err != nil {
			t.Fatalf("go list output: %v", err)
		}
		if l.Standard || l.Module == nil || !under(l.Module.Path, "runbox") || strings.HasSuffix(l.ImportPath, ".test") {
			continue
		}
		path := strip(l.ImportPath)
		p := byPath[path]
		if p == nil {
			p = &pkg{path: path}
			byPath[path] = p
			order = append(order, path)
		}
		test := l.ForTest != "" || strings.Contains(l.ImportPath, " ") || strings.HasSuffix(l.ImportPath, "_test")
		for _, imp := range l.Imports {
			imp = strip(imp)
			switch {
			case imp == path:
			case !test && !slices.Contains(p.imports, imp):
				p.imports = append(p.imports, imp)
			case test && !slices.Contains(p.testImports, imp):
				p.testImports = append(p.testImports, imp)
			}
		}
		if !test {
			p.deps = l.Deps
		}
	}
	pkgs := make([]pkg, 0, len(order))
	for _, path := range order {
		pkgs = append(pkgs, *byPath[path])
	}
	return pkgs
}

func TestLayering(t *testing.T) {
	t.Parallel()
	for _, dir := range []string{".", "cmd/runbox-gui"} {
		pkgs := goList(t, dir)
		// The check must have read something real: a scheduler that imports the sandbox.
		if dir == "." && !slices.ContainsFunc(pkgs, func(p pkg) bool {
			return p.path == "runbox/scheduler" && slices.Contains(p.imports, "runbox/sandbox")
		}) {
			t.Fatalf("go list in %s: runbox/scheduler importing runbox/sandbox not found among %d packages", dir, len(pkgs))
		}
		if dir != "." && !slices.ContainsFunc(pkgs, func(p pkg) bool { return p.path == "runbox/cmd/runbox-gui" }) {
			t.Fatalf("go list in %s: the GUI package not found", dir)
		}
		for _, v := range check(pkgs) {
			t.Errorf("%s", v)
		}
	}
}

// TestLayeringRefuses shows the check failing on imports that run back up, cross between
// wrappers or leak an SDK: each graph below must be refused.
func TestLayeringRefuses(t *testing.T) {
	t.Parallel()
	for _, c := range []struct {
		name string
		p    pkg
	}{
		{"sandbox imports scheduler", pkg{path: "runbox/sandbox", imports: []string{"runbox/scheduler"}}},
		{"scheduler imports transport", pkg{path: "runbox/scheduler", imports: []string{"runbox/transport"}}},
		{"scheduler imports its journal", pkg{path: "runbox/scheduler", imports: []string{"runbox/scheduler/bolt"}}},
		{"swarm imports scheduler/docker", pkg{path: "runbox/scheduler/swarm", imports: []string{"runbox/scheduler/docker"}}},
		{"transport imports monitor", pkg{path: "runbox/transport", imports: []string{"runbox/monitor"}}},
		{"monitor imports transport", pkg{path: "runbox/monitor", imports: []string{"runbox/transport"}}},
		{"transport imports a wrapper", pkg{path: "runbox/transport", imports: []string{"runbox/sandbox/docker"}}},
		{"internal imports sandbox", pkg{path: "runbox/internal/frame", imports: []string{"runbox/sandbox"}}},
		{"a package imports a binary", pkg{path: "runbox/transport", imports: []string{"runbox/cmd/runbox"}}},
		{"the GUI imports the server", pkg{path: "runbox/cmd/runbox-gui", imports: []string{"runbox/scheduler/docker"}}},
		{"an unknown tree", pkg{path: "runbox/web", imports: []string{"runbox/sandbox"}}},
		{"scheduler imports the Docker SDK", pkg{path: "runbox/scheduler", imports: []string{"github.com/docker/docker/client"}}},
		{"transport imports bbolt", pkg{path: "runbox/transport", imports: []string{"go.etcd.io/bbolt"}}},
		{"cmd imports gopsutil", pkg{path: "runbox/cmd/runbox", imports: []string{"github.com/shirou/gopsutil/v4/cpu"}}},
		{"sandbox/docker imports yamux", pkg{path: "runbox/sandbox/docker", imports: []string{"github.com/hashicorp/yamux"}}},
		{"scheduler imports fyne", pkg{path: "runbox/scheduler", imports: []string{"fyne.io/fyne/v2"}}},
		{"monitor reaches the Docker SDK", pkg{path: "runbox/monitor", deps: []string{"github.com/docker/docker/client"}}},
		{"a test imports back up", pkg{path: "runbox/scheduler", testImports: []string{"runbox/transport"}}},
		{"yamux outside cmd/runbox's tests", pkg{path: "runbox/cmd/runbox", imports: []string{"github.com/hashicorp/yamux"}}},
	} {
		if got := check([]pkg{c.p}); len(got) == 0 {
			t.Errorf("%s: not refused", c.name)
		}
	}
	// And what the design allows passes.
	ok := []pkg{
		{path: "runbox/scheduler/swarm", imports: []string{"runbox/scheduler", "runbox/sandbox", "github.com/docker/docker/client"}},
		{path: "runbox/sandbox/docker", imports: []string{"runbox/sandbox", "runbox/sandbox/boxinit", "runbox/internal/frame"}},
		{path: "runbox/transport", imports: []string{"runbox/scheduler", "github.com/hashicorp/yamux"}, deps: []string{"github.com/hashicorp/yamux"}},
		{path: "runbox/cmd/runbox", imports: []string{"runbox/scheduler/bolt", "runbox/transport", "runbox/monitor"},
			testImports: []string{"github.com/hashicorp/yamux"},
			deps:        []string{"go.etcd.io/bbolt", "github.com/docker/docker/client"}},
	}
	if got := check(ok); len(got) > 0 {
		t.Errorf("allowed imports refused: %q", got)
	}
}
