package docs

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
	"unicode"
)

// runnableFiles are the guides whose runnable blocks TestRunnableBlocks runs.
var runnableFiles = []string{"install.md", "usage.md"}

// linkedFiles are the documents whose relative links TestLinks checks (paths from the
// repository root).
var linkedFiles = []string{
	"README.md",
	"docs/install.md",
	"docs/usage.md",
	"docs/report.md",
	"docs/fr/install.md",
	"docs/fr/report.md",
}

// pendingDocs are documents other work is still writing: a link to one of them that does
// not exist yet is logged, not failed. Remove an entry once its document has landed.
var pendingDocs = map[string]bool{}

// A block is one runnable command block of a guide.
type block struct {
	file   string
	line   int // of the opening fence, 1-based
	text   string
	expect []string
}

func (b block) String() string { return fmt.Sprintf("%s:%d", b.file, b.line) }

var (
	markerRE = regexp.MustCompile(`^<!--\s*runnable((?:\s+expect=(?:"[^"]*"|'[^']*'))*)\s*-->$`)
	expectRE = regexp.MustCompile(`expect=(?:"([^"]*)"|'([^']*)')`)
)

// extract returns the runnable blocks of a Markdown document: every ```sh (or ```bash)
// fence right after a <!-- runnable ... --> comment. A comment that mentions runnable but
// does not parse, or that is not followed by such a fence, is an error, so that a typo
// never silently drops a block from the test.
func extract(file, src string) ([]block, error) {
	lines := strings.Split(src, "\n")
	var blocks []block
	inFence := false
	for i := 0; i < len(lines); i++ {
		line := strings.TrimSpace(lines[i])
		if strings.HasPrefix(line, "```") {
			inFence = !inFence
			continue
		}
		if inFence || !strings.HasPrefix(line, "<!--") || !strings.Contains(line, "runnable") {
			continue
		}
		m := markerRE.FindStringSubmatch(line)
		if m == nil {
			return nil, fmt.Errorf("%s:%d: malformed marker %q (want <!-- runnable --> or <!-- runnable expect=\"...\" -->)", file, i+1, line)
		}
		b := block{file: file}
		for _, e := range expectRE.FindAllStringSubmatch(m[1], -1) {
			b.expect = append(b.expect, e[1]+e[2]) // one of the two is empty
		}
		if i+1 >= len(lines) {
			return nil, fmt.Errorf("%s:%d: runnable marker at the end of the file", file, i+1)
		}
		if fence := strings.TrimSpace(lines[i+1]); fence != "```sh" && fence != "```bash" {
			return nil, fmt.Errorf("%s:%d: a runnable marker must be followed by a ```sh fence, not %q", file, i+1, fence)
		}
		b.line = i + 2
		var body []string
		closed := false
		for i += 2; i < len(lines); i++ {
			if strings.TrimSpace(lines[i]) == "```" {
				closed = true
				break
			}
			body = append(body, lines[i])
		}
		if !closed {
			return nil, fmt.Errorf("%s:%d: unclosed runnable block", file, b.line)
		}
		b.text = strings.Join(body, "\n")
		blocks = append(blocks, b)
	}
	return blocks, nil
}

func TestExtract(t *testing.T) {
	t.Parallel()
	src := "# doc\n\n<!-- runnable -->\n```sh\necho one\necho two\n```\n\n" +
		"```sh\n<!-- runnable -->\nnot a marker: inside a fence\n```\n\n" +
		"```sh\necho not runnable\n```\n\n" +
		"<!-- runnable expect=\"exit code 75\" expect='\"code\":\"busy\"' -->\n```sh\nfalse || echo \"exit code $?\"\n```\n"
	got, err := extract("t.md", src)
	if err != nil {
		t.Fatal(err)
	}
	if len(got) != 2 {
		t.Fatalf("got %d blocks, want 2: %+v", len(got), got)
	}
	if got[0].line != 4 || got[0].text != "echo one\necho two" || len(got[0].expect) != 0 {
		t.Errorf("block 0 = %+v", got[0])
	}
	if got[1].line != 19 || got[1].text != "false || echo \"exit code $?\"" ||
		strings.Join(got[1].expect, "|") != `exit code 75|"code":"busy"` {
		t.Errorf("block 1 = %+v", got[1])
	}
	for _, bad := range []string{
		"<!-- runnable expect=unquoted -->\n```sh\necho\n```\n",
		"<!-- runnable -->\n```text\necho\n```\n",
		"<!-- runnable -->\n\n```sh\necho\n```\n",
		"<!-- runnable -->\n```sh\necho\n",
		"<!-- runnable -->",
	} {
		if _, err := extract("bad.md", bad); err == nil {
			t.Errorf("extract(%q) = nil error, want one", bad)
		}
	}
}

// TestGuidesHaveRunnableBlocks checks, without running anything, that the guides parse and
// that each has runnable blocks.
func TestGuidesHaveRunnableBlocks(t *testing.T) {
	t.Parallel()
	for _, f := range runnableFiles {
		src, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		blocks, err := extract(f, string(src))
		if err != nil {
			t.Fatal(err)
		}
		if len(blocks) == 0 {
			t.Errorf("%s has no runnable block", f)
		}
	}
}

// Rewriting before a run. The guides use fixed ports (77xx) and node names so that a reader
// can copy them; the test gives each port literal a free port and each node name a unique
// suffix, so that it never collides with a cluster, a test or another docs run on the same
// machine and Docker engine (a node's sandbox containers are labelled with its name, and a
// node removes the containers of its name left by an earlier run).
var (
	portRE = regexp.MustCompile(`\b77\d\d\b`)
	nodeRE = regexp.MustCompile(`--node[ =]([A-Za-z0-9][A-Za-z0-9_.-]*)`)
)

// rewrite returns script and expects with every 77xx port replaced by a free port (the same
// literal by the same port) and every --node name suffixed with suffix, and the new names.
func rewrite(t *testing.T, script string, expects []string, suffix string) (string, []string, []string) {
	t.Helper()
	ports := map[string]string{}
	var held []net.Listener
	for _, p := range portRE.FindAllString(script, -1) {
		if _, ok := ports[p]; ok {
			continue
		}
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		held = append(held, ln) // held until all are chosen, so that no two are the same
		ports[p] = strconv.Itoa(ln.Addr().(*net.TCPAddr).Port)
	}
	for _, ln := range held {
		ln.Close()
	}
	type sub struct {
		re *regexp.Regexp
		to string
	}
	var subs []sub
	var nodes []string
	seen := map[string]bool{}
	for _, m := range nodeRE.FindAllStringSubmatch(script, -1) {
		name := m[1]
		if seen[name] {
			continue
		}
		seen[name] = true
		if !strings.Contains(name, "-") {
			t.Fatalf("node name %q: give nodes in runnable blocks a name with a '-' (e.g. server-a), so that it cannot be mistaken for another word", name)
		}
		re := regexp.MustCompile(`(^|[^A-Za-z0-9_.-])` + regexp.QuoteMeta(name) + `($|[^A-Za-z0-9_.-])`)
		subs = append(subs, sub{re, "${1}" + name + "-" + suffix + "${2}"})
		nodes = append(nodes, name+"-"+suffix)
	}
	apply := func(s string) string {
		s = portRE.ReplaceAllStringFunc(s, func(p string) string { return ports[p] })
		for _, sb := range subs {
			// Twice: two names in a row share the separator between them.
			s = sb.re.ReplaceAllString(sb.re.ReplaceAllString(s, sb.to), sb.to)
		}
		return s
	}
	out := make([]string, len(expects))
	for i, e := range expects {
		out[i] = apply(e)
	}
	return apply(script), out, nodes
}

func TestRewrite(t *testing.T) {
	t.Parallel()
	script := "runbox master --listen 127.0.0.1:7701 --node server-a 2>server-a.log &\n" +
		"runbox slave --master 127.0.0.1:7701 --node=server-ab\n" +
		"runbox submit --server 127.0.0.1:7702 x.py # server-a, server-ab\n"
	got, expects, nodes := rewrite(t, script, []string{"running on server-a", "server-abc"}, "s1")
	if strings.Contains(got, "7701") || strings.Contains(got, "7702") {
		t.Errorf("ports left in:\n%s", got)
	}
	lines := strings.Split(got, "\n")
	port := func(line string) string { return strings.Fields(strings.SplitAfter(line, "127.0.0.1:")[1])[0] }
	if port(lines[0]) != port(lines[1]) || port(lines[0]) == port(lines[2]) {
		t.Errorf("the same port literal must get the same port, different ones different ports:\n%s", got)
	}
	for _, want := range []string{"--node server-a-s1 2>server-a.log", "--node=server-ab-s1", "# server-a-s1, server-ab-s1"} {
		if !strings.Contains(got, want) {
			t.Errorf("rewritten script lacks %q:\n%s", want, got)
		}
	}
	if strings.Join(expects, "|") != "running on server-a-s1|server-abc" {
		t.Errorf("expects = %q", expects)
	}
	if strings.Join(nodes, "|") != "server-a-s1|server-ab-s1" {
		t.Errorf("nodes = %q", nodes)
	}
}

const blockMarker = "@@ runnable block"

// TestRunnableBlocks runs the runnable blocks of each guide against a runbox built from this
// checkout and the real Docker daemon (make test builds the images first).
func TestRunnableBlocks(t *testing.T) {
	if testing.Short() {
		t.Skip("runs the guides' commands: needs Docker and the runtime images")
	}
	if _, err := exec.LookPath("bash"); err != nil {
		t.Fatal("bash is needed to run the guides' commands")
	}
	bin := t.TempDir()
	build := exec.Command("go", "build", "-o", filepath.Join(bin, "runbox"), "./cmd/runbox")
	build.Dir = ".."
	build.Env = append(os.Environ(), "CGO_ENABLED=0")
	if out, err := build.CombinedOutput(); err != nil {
		t.Fatalf("go build ./cmd/runbox: %v\n%s", err, out)
	}
	for _, f := range runnableFiles {
		t.Run(f, func(t *testing.T) { runGuide(t, bin, f) })
	}
}

func runGuide(t *testing.T, bin, file string) {
	src, err := os.ReadFile(file)
	if err != nil {
		t.Fatal(err)
	}
	blocks, err := extract(file, string(src))
	if err != nil {
		t.Fatal(err)
	}
	work := t.TempDir()
	if err := os.CopyFS(filepath.Join(work, "examples"), os.DirFS("../examples")); err != nil {
		t.Fatal(err)
	}

	var script strings.Builder
	var allExpects []string
	for i, b := range blocks {
		fmt.Fprintf(&script, "echo '%s %d @@'\n%s\n", blockMarker, i, b.text)
		allExpects = append(allExpects, b.expect...)
	}
	suffix := strconv.FormatInt(time.Now().UnixNano()%1e6, 36)
	text, expects, nodes := rewrite(t, script.String(), allExpects, suffix)
	for i := range blocks { // give each block its rewritten expectations back
		n := len(blocks[i].expect)
		blocks[i].expect, expects = expects[:n], expects[n:]
	}
	scriptPath := filepath.Join(t.TempDir(), "guide.sh")
	if err := os.WriteFile(scriptPath, []byte(text), 0o644); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { removeSandboxes(t, nodes) })

	timeout := 8 * time.Minute
	if dl, ok := t.Deadline(); ok {
		timeout = min(timeout, time.Until(dl)-30*time.Second)
	}
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	outPath := filepath.Join(t.TempDir(), "output")
	out, err := os.Create(outPath)
	if err != nil {
		t.Fatal(err)
	}
	defer out.Close()
	cmd := exec.CommandContext(ctx, "bash", "--noprofile", "--norc", "-euo", "pipefail", scriptPath)
	cmd.Dir = work
	cmd.Env = guideEnv(bin)
	// A file, not a pipe, for the output: servers the blocks start in the background
	// inherit it, and Wait must not wait for them.
	cmd.Stdout, cmd.Stderr = out, out
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	cmd.Cancel = func() error { return syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL) }
	start := time.Now()
	runErr := cmd.Run()
	if cmd.Process != nil {
		stopGroup(cmd.Process.Pid)
	}
	t.Logf("%s: %d blocks in %v", file, len(blocks), time.Since(start).Round(time.Millisecond))

	raw, err := os.ReadFile(outPath)
	if err != nil {
		t.Fatal(err)
	}
	outputs, last := splitOutput(string(raw), len(blocks))
	if runErr != nil {
		if ctx.Err() != nil {
			runErr = fmt.Errorf("timed out after %v", timeout)
		}
		b := blocks[max(last, 0)]
		t.Errorf("%s: the block failed: %v\n--- block ---\n%s\n--- its output ---\n%s%s", b, runErr, b.text, outputs[max(last, 0)], logs(work))
		return
	}
	for i, b := range blocks {
		if testing.Verbose() {
			t.Logf("%s:\n%s", b, outputs[i])
		}
		for _, e := range b.expect {
			if !strings.Contains(outputs[i], e) {
				t.Errorf("%s: the output lacks %q\n--- block ---\n%s\n--- its output ---\n%s", b, e, b.text, outputs[i])
			}
		}
	}
	if t.Failed() {
		t.Log(logs(work))
	}
}

// guideEnv is the environment of a guide's script: the test's, with the built runbox first
// on PATH and no RUNBOX_* variable (the guides set the ones they use) but
// RUNBOX_CONFIG_DIR, the empty client directory of TestMain: the CA and token that make
// cluster wrote for this machine's user must not reach the guides' clients.
func guideEnv(bin string) []string {
	var env []string
	for _, kv := range os.Environ() {
		if strings.HasPrefix(kv, "RUNBOX_CONFIG_DIR=") {
			env = append(env, kv)
			continue
		}
		if strings.HasPrefix(kv, "RUNBOX_") || strings.HasPrefix(kv, "PATH=") {
			continue
		}
		env = append(env, kv)
	}
	return append(env, "PATH="+bin+string(os.PathListSeparator)+os.Getenv("PATH"))
}

// splitOutput cuts the script's output at the block markers: outputs[i] is what block i
// printed; last is the index of the last block that started (-1: none).
func splitOutput(raw string, n int) (outputs []string, last int) {
	outputs = make([]string, n)
	last = -1
	sc := bufio.NewScanner(strings.NewReader(raw))
	sc.Buffer(make([]byte, 1<<20), 16<<20)
	for sc.Scan() {
		line := sc.Text()
		if rest, ok := strings.CutPrefix(line, blockMarker+" "); ok {
			if i, err := strconv.Atoi(strings.TrimSuffix(rest, " @@")); err == nil && i >= 0 && i < n {
				last = i
				continue
			}
		}
		if last >= 0 {
			outputs[last] += line + "\n"
		}
	}
	return outputs, last
}

// stopGroup ends what the script left running in its process group (servers started with
// &): SIGTERM first, so that they remove their sandbox containers, then SIGKILL.
func stopGroup(pgid int) {
	if syscall.Kill(-pgid, syscall.SIGTERM) != nil {
		return // nothing left
	}
	for range 150 {
		time.Sleep(100 * time.Millisecond)
		if errors.Is(syscall.Kill(-pgid, 0), syscall.ESRCH) {
			return
		}
	}
	syscall.Kill(-pgid, syscall.SIGKILL)
}

// removeSandboxes removes the sandbox containers left by the guide's nodes, if any (a node
// removes its own when it stops; this is for a node that was killed).
func removeSandboxes(t *testing.T, nodes []string) {
	out, err := exec.Command("docker", "ps", "-a", "--filter", "label=runbox.sandbox=1", "--format", `{{.ID}} {{.Label "runbox.owner"}}`).Output()
	if err != nil {
		t.Logf("docker ps: %v", err)
		return
	}
	for _, n := range nodes {
		// A slave's owner is runbox-NODE, a master's runbox-NODE-PORT.
		var ids []string
		for _, line := range strings.Split(strings.TrimSpace(string(out)), "\n") {
			id, owner, _ := strings.Cut(line, " ")
			if owner == "runbox-"+n || strings.HasPrefix(owner, "runbox-"+n+"-") {
				ids = append(ids, id)
			}
		}
		if len(ids) > 0 {
			t.Logf("removing %d sandbox container(s) left by node %s", len(ids), n)
			exec.Command("docker", append([]string{"rm", "-f"}, ids...)...).Run()
		}
	}
}

// logs returns the tail of every *.log file the guide's servers wrote in dir.
func logs(dir string) string {
	var b strings.Builder
	files, _ := filepath.Glob(filepath.Join(dir, "*.log"))
	for _, f := range files {
		data, err := os.ReadFile(f)
		if err != nil {
			continue
		}
		lines := strings.Split(strings.TrimRight(string(data), "\n"), "\n")
		fmt.Fprintf(&b, "\n--- %s (last lines) ---\n%s\n", filepath.Base(f), strings.Join(lines[max(0, len(lines)-25):], "\n"))
	}
	return b.String()
}

// TestFrenchGuideCommands checks that every command block of the French install guide is
// one of the English guide's (whose runnable blocks TestRunnableBlocks runs), comments aside,
// so that the translation cannot drift from the commands that are tested.
func TestFrenchGuideCommands(t *testing.T) {
	t.Parallel()
	blocks := func(path string) []string {
		src, err := os.ReadFile(path)
		if err != nil {
			t.Fatal(err)
		}
		var out []string
		var cur []string
		in := false
		for line := range strings.SplitSeq(string(src), "\n") {
			trimmed := strings.TrimSpace(line)
			switch {
			case !in && (trimmed == "```sh" || trimmed == "```bash"):
				in, cur = true, nil
			case in && trimmed == "```":
				in = false
				out = append(out, strings.Join(cur, "\n"))
			case in:
				cur = append(cur, strings.TrimRight(commentRE.ReplaceAllString(trimmed, ""), " "))
			}
		}
		return out
	}
	english := map[string]bool{}
	for _, b := range blocks("install.md") {
		english[b] = true
	}
	french := blocks("fr/install.md")
	if len(french) == 0 {
		t.Fatal("fr/install.md has no command block")
	}
	for _, b := range french {
		if !english[b] {
			t.Errorf("fr/install.md has a command block that install.md lacks:\n%s", b)
		}
	}
}

// commentRE matches a shell comment at the end of a line (after a space).
var commentRE = regexp.MustCompile(`\s+#\s.*$`)

// TestLinks checks that every relative link of the guides, the report and the README points
// at a file of the repository, and that every #anchor names a heading of its target.
func TestLinks(t *testing.T) {
	t.Parallel()
	linkRE := regexp.MustCompile(`\]\(([^)\s]+)\)`)
	for _, f := range linkedFiles {
		path := filepath.Join("..", f)
		src, err := os.ReadFile(path)
		if err != nil {
			t.Errorf("%s: %v", f, err)
			continue
		}
		for _, m := range linkRE.FindAllStringSubmatch(stripCode(string(src)), -1) {
			target := m[1]
			if strings.Contains(target, "://") || strings.HasPrefix(target, "mailto:") {
				continue
			}
			file, anchor, _ := strings.Cut(target, "#")
			dest := path
			if file != "" {
				dest = filepath.Join(filepath.Dir(path), file)
				if _, err := os.Stat(dest); err != nil {
					if rel, _ := filepath.Rel("..", dest); pendingDocs[filepath.ToSlash(rel)] {
						t.Logf("%s: link %q: %s is not written yet", f, target, rel)
					} else {
						t.Errorf("%s: link %q: %v", f, target, errors.Unwrap(err))
					}
					continue
				}
			}
			if anchor == "" || !strings.HasSuffix(dest, ".md") {
				continue
			}
			body, err := os.ReadFile(dest)
			if err != nil {
				t.Errorf("%s: link %q: %v", f, target, err)
				continue
			}
			if !anchors(string(body))[anchor] {
				t.Errorf("%s: link %q: no heading with anchor #%s in %s", f, target, anchor, file)
			}
		}
	}
}

// stripCode drops fenced blocks and inline code spans, where brackets are not links.
func stripCode(src string) string {
	var b strings.Builder
	inFence := false
	for line := range strings.SplitSeq(src, "\n") {
		if strings.HasPrefix(strings.TrimSpace(line), "```") {
			inFence = !inFence
			continue
		}
		if !inFence {
			b.WriteString(regexp.MustCompile("`[^`]*`").ReplaceAllString(line, ""))
			b.WriteByte('\n')
		}
	}
	return b.String()
}

// anchors returns the anchors of a Markdown document's headings, as GitHub makes them:
// lower case, punctuation dropped (hyphens and underscores kept), spaces to hyphens, and
// -1, -2... for repeats.
func anchors(src string) map[string]bool {
	out := map[string]bool{}
	seen := map[string]int{}
	for _, line := range strings.Split(stripFences(src), "\n") {
		if !strings.HasPrefix(line, "#") {
			continue
		}
		title := strings.TrimSpace(strings.TrimLeft(line, "#"))
		var b strings.Builder
		for _, r := range strings.ToLower(title) {
			switch {
			case r == ' ':
				b.WriteRune('-')
			case r == '-' || r == '_' || unicode.IsLetter(r) || unicode.IsDigit(r):
				b.WriteRune(r)
			}
		}
		a := b.String()
		if n := seen[a]; n > 0 {
			out[fmt.Sprintf("%s-%d", a, n)] = true
		} else {
			out[a] = true
		}
		seen[a]++
	}
	return out
}

func stripFences(src string) string {
	var b strings.Builder
	inFence := false
	for line := range strings.SplitSeq(src, "\n") {
		if strings.HasPrefix(strings.TrimSpace(line), "```") {
			inFence = !inFence
			continue
		}
		if !inFence {
			b.WriteString(line)
			b.WriteByte('\n')
		}
	}
	return b.String()
}
