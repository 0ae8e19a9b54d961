package boxinit

import (
	"archive/tar"
	"bytes"
	"compress/gzip"
	"crypto/rand"
	"encoding/json"
	"errors"
	"io"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"
)

// serveFrames runs Serve on a request, an optional artefact and stdin (a frame each), and
// returns every frame it wrote, artefact bytes gathered.
func serveFrames(t *testing.T, dir string, req Request, artifact []byte, stdin ...string) (tr transcript, art []byte) {
	t.Helper()
	var in bytes.Buffer
	if artifact != nil {
		req.Artifact = int64(len(artifact))
	}
	b, _ := json.Marshal(req)
	WriteFrame(&in, FrameRequest, b)
	for c := range slices.Chunk(artifact, 1000) { // smaller than the runner's: many frames
		WriteFrame(&in, FrameArtifact, c)
	}
	for _, part := range stdin {
		WriteFrame(&in, FrameStdin, []byte(part))
	}
	WriteFrame(&in, FrameStdinEOF, nil)
	var out bytes.Buffer
	cfg := DefaultConfig()
	cfg.Dir = dir
	cfg.CgroupRoot = t.TempDir()
	if err := Serve(&in, &out, cfg); err != nil {
		t.Fatalf("Serve: %v", err)
	}
	for {
		typ, p, err := ReadFrame(&out, MaxFrame)
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		switch typ {
		case FrameStdout:
			tr.stdout.Write(p)
		case FrameStderr:
			tr.stderr.Write(p)
		case FrameCompile:
			tr.compile.Write(p)
		case FrameStarted:
			tr.started = true
		case FrameArtifact:
			if len(p) > ChunkSize {
				t.Errorf("artefact frame of %d bytes", len(p))
			}
			art = append(art, p...)
		case FrameResult:
			if err := json.Unmarshal(p, &tr.result); err != nil {
				t.Fatal(err)
			}
		default:
			t.Fatalf("unexpected frame %q", typ)
		}
	}
	return tr, art
}

// TestServeCompileOnceRunTwice is a judged run's path through runbox-init: one container
// compiles and sends the artefact, others unpack it and run it without the sources.
func TestServeCompileOnceRunTwice(t *testing.T) {
	compile := sh(`echo compiling >&2; mkdir lib && echo data >lib/table && printf '#!/bin/sh\nread x; echo "got $x $(cat lib/table)"\n' >prog && chmod 755 prog && mkdir .cache && echo junk >.cache/x`)
	tr, art := serveFrames(t, t.TempDir(), Request{
		Files:   []File{{Name: "main.src", Content: []byte("source")}},
		Compile: compile, CompileTime: 5 * time.Second,
		Run: sh("echo must not run"), RunTime: time.Second, Output: 1 << 20, CompileOnly: true,
	}, nil, "")
	if tr.result.Outcome != OutcomeExited || tr.result.ExitCode != 0 || tr.result.Artifact != int64(len(art)) || len(art) == 0 {
		t.Fatalf("compile only: result %+v with %d artefact bytes", tr.result, len(art))
	}
	if tr.started || tr.stdout.Len() > 0 || tr.compile.String() != "compiling\n" {
		t.Errorf("compile only: started %v, stdout %q, compile %q", tr.started, tr.stdout.String(), tr.compile.String())
	}
	for _, in := range []string{"one\n", "two\n"} {
		dir := t.TempDir()
		tr, more := serveFrames(t, dir, Request{
			Compile: sh("echo must not compile >&2; exit 1"), CompileTime: time.Second,
			Run: []string{"./prog"}, RunTime: 5 * time.Second, Output: 1 << 20,
		}, art, in)
		want := "got " + strings.TrimSpace(in) + " data\n"
		if tr.result.Outcome != OutcomeExited || tr.result.ExitCode != 0 || tr.stdout.String() != want || len(more) > 0 {
			t.Errorf("run %q: result %+v, stdout %q, stderr %q", in, tr.result, tr.stdout.String(), tr.stderr.String())
		}
		if tr.compile.Len() > 0 {
			t.Errorf("the artefact's run compiled: %q", tr.compile.String())
		}
		// The whole scratch directory travels, sources too, but not the hidden cache.
		if b, err := os.ReadFile(filepath.Join(dir, "main.src")); string(b) != "source" {
			t.Errorf("main.src: %q %v", b, err)
		}
		if _, err := os.Stat(filepath.Join(dir, ".cache")); err == nil {
			t.Error(".cache travelled with the artefact")
		}
	}
}

func TestServeCompileOnlyFailures(t *testing.T) {
	tr, art := serveFrames(t, t.TempDir(), Request{
		Compile: sh("echo 'error: nope' >&2; exit 1"), CompileTime: 5 * time.Second,
		Run: sh("true"), RunTime: time.Second, Output: 1 << 20, CompileOnly: true,
	}, nil, "")
	if tr.result.Outcome != OutcomeCompileError || len(art) > 0 {
		t.Errorf("compile error: result %+v, %d artefact bytes", tr.result, len(art))
	}
	tr, art = serveFrames(t, t.TempDir(), Request{
		Compile: sh("echo x >prog && ln -s /etc/passwd link"), CompileTime: 5 * time.Second,
		Run: sh("true"), RunTime: time.Second, Output: 1 << 20, CompileOnly: true,
	}, nil, "")
	if tr.result.Outcome != OutcomeCompileError || !strings.Contains(tr.result.Message, "symbolic link") || len(art) > 0 {
		t.Errorf("symlink: result %+v, %d artefact bytes", tr.result, len(art))
	}
	tr, _ = serveFrames(t, t.TempDir(), Request{Run: sh("true"), RunTime: time.Second, Output: 10, CompileOnly: true}, nil)
	if tr.result.Outcome != OutcomeStartError {
		t.Errorf("compile only without a compiler: result %+v", tr.result)
	}
}

func TestServeRefusesABadArtifact(t *testing.T) {
	dir := t.TempDir()
	tr, _ := serveFrames(t, dir, Request{Run: sh("echo ran"), RunTime: time.Second, Output: 1 << 20},
		tarGz(t, entry{name: "../escape", body: "x"}), "")
	if tr.result.Outcome != OutcomeStartError || tr.started {
		t.Errorf("result %+v", tr.result)
	}
	if _, err := os.Stat(filepath.Join(filepath.Dir(dir), "escape")); err == nil {
		t.Error("the artefact wrote outside the scratch directory")
	}
}

// An artefact comes from another container: a bad entry name of any length is quoted in
// the result's message, which runbox-init caps so that the result frame stays within what
// a Runner reads from it (ChunkSize).
func TestServeCapsTheResultMessage(t *testing.T) {
	dir := t.TempDir()
	name := strings.Repeat("\x01\xff", 50000) + "/../x"
	var out bytes.Buffer
	var in bytes.Buffer
	art := tarGz(t, entry{name: name, body: "x"})
	b, _ := json.Marshal(Request{Run: sh("echo ran"), RunTime: time.Second, Output: 1 << 20, Artifact: int64(len(art))})
	WriteFrame(&in, FrameRequest, b)
	WriteFrame(&in, FrameArtifact, art)
	WriteFrame(&in, FrameStdinEOF, nil)
	cfg := DefaultConfig()
	cfg.Dir, cfg.CgroupRoot = dir, t.TempDir()
	if err := Serve(&in, &out, cfg); err != nil {
		t.Fatal(err)
	}
	typ, p, err := ReadFrame(&out, ChunkSize)
	if err != nil || typ != FrameResult {
		t.Fatalf("frame %q, %v: the result frame must fit in ChunkSize", typ, err)
	}
	var res Result
	if err := json.Unmarshal(p, &res); err != nil {
		t.Fatal(err)
	}
	if res.Outcome != OutcomeStartError || len(res.Message) > MaxMessage || !strings.HasPrefix(res.Message, "unpack the compiled program") {
		t.Errorf("outcome %s, message of %d bytes: %.80q", res.Outcome, len(res.Message), res.Message)
	}
}

func TestPackUnpackRoundTrip(t *testing.T) {
	src := t.TempDir()
	mustWrite(t, filepath.Join(src, "main"), "binary", 0o755)
	mustWrite(t, filepath.Join(src, "main.c"), "source", 0o644)
	os.MkdirAll(filepath.Join(src, "pkg", "sub"), 0o755)
	mustWrite(t, filepath.Join(src, "pkg", "sub", "A.class"), "class", 0o600)
	os.Mkdir(filepath.Join(src, ".runbox-warm"), 0o700)
	mustWrite(t, filepath.Join(src, ".runbox-warm", "warm"), "warm", 0o755)
	mustWrite(t, filepath.Join(src, ".hidden"), "h", 0o644)
	var buf bytes.Buffer
	if err := PackDir(src, MaxArtifact, &buf); err != nil {
		t.Fatal(err)
	}
	dst := t.TempDir()
	if err := UnpackDir(dst, &buf, MaxArtifact); err != nil {
		t.Fatal(err)
	}
	for name, want := range map[string]struct {
		body string
		exec bool
	}{"main": {"binary", true}, "main.c": {"source", false}, "pkg/sub/A.class": {"class", false}} {
		p := filepath.Join(dst, filepath.FromSlash(name))
		b, err := os.ReadFile(p)
		fi, _ := os.Stat(p)
		if err != nil || string(b) != want.body || (fi.Mode()&0o100 != 0) != want.exec {
			t.Errorf("%s: %q %v, mode %v", name, b, err, fi.Mode())
		}
	}
	for _, name := range []string{".runbox-warm", ".hidden"} {
		if _, err := os.Stat(filepath.Join(dst, name)); err == nil {
			t.Errorf("hidden %s was packed", name)
		}
	}
}

func TestPackDirRefuses(t *testing.T) {
	link := t.TempDir()
	os.Symlink("/etc/passwd", filepath.Join(link, "passwd"))
	fifo := t.TempDir()
	syscall.Mkfifo(filepath.Join(fifo, "pipe"), 0o644)
	big := t.TempDir()
	mustWrite(t, filepath.Join(big, "a"), strings.Repeat("x", 600), 0o644)
	mustWrite(t, filepath.Join(big, "b"), strings.Repeat("x", 600), 0o644)
	for name, c := range map[string]struct {
		dir  string
		max  int64
		want string
	}{
		"symlink": {link, MaxArtifact, "symbolic link"},
		"fifo":    {fifo, MaxArtifact, "named pipe"},
		"size":    {big, 1000, "pass 1000 bytes"},
	} {
		var buf bytes.Buffer
		err := PackDir(c.dir, c.max, &buf)
		if !errors.Is(err, ErrArtifact) || !strings.Contains(err.Error(), c.want) || buf.Len() > 0 {
			t.Errorf("%s: err %v, %d bytes written", name, err, buf.Len())
		}
	}
	// Compressed size: incompressible bytes over the budget fail mid-stream.
	rnd := t.TempDir()
	b := make([]byte, 4000)
	rand.Read(b)
	mustWrite(t, filepath.Join(rnd, "r"), string(b), 0o644)
	if err := PackDir(rnd, 4000, io.Discard); !errors.Is(err, ErrArtifact) {
		t.Errorf("compressed over the cap: %v", err)
	}
}

type entry struct {
	name, body, link string
	typ              byte
}

func tarGz(t *testing.T, entries ...entry) []byte {
	t.Helper()
	var buf bytes.Buffer
	zw := gzip.NewWriter(&buf)
	tw := tar.NewWriter(zw)
	for _, e := range entries {
		typ := e.typ
		if typ == 0 {
			typ = tar.TypeReg
		}
		hdr := &tar.Header{Name: e.name, Typeflag: typ, Mode: 0o644, Linkname: e.link}
		if typ == tar.TypeReg {
			hdr.Size = int64(len(e.body))
		}
		if err := tw.WriteHeader(hdr); err != nil {
			t.Fatal(err)
		}
		io.WriteString(tw, e.body)
	}
	tw.Close()
	zw.Close()
	return buf.Bytes()
}

func TestUnpackDirRefuses(t *testing.T) {
	for name, c := range map[string]struct {
		art  []byte
		want string
	}{
		"dotdot":        {tarGz(t, entry{name: "../x", body: "x"}), "bad entry name"},
		"deep dotdot":   {tarGz(t, entry{name: "d/", typ: tar.TypeDir}, entry{name: "d/../../x", body: "x"}), "bad entry name"},
		"absolute":      {tarGz(t, entry{name: "/tmp/x", body: "x"}), "bad entry name"},
		"symlink":       {tarGz(t, entry{name: "l", typ: tar.TypeSymlink, link: "/etc"}), "not a regular file"},
		"hard link":     {tarGz(t, entry{name: "h", typ: tar.TypeLink, link: "/etc/passwd"}), "not a regular file"},
		"no parent":     {tarGz(t, entry{name: "d/x", body: "x"}), "before its directory"},
		"file twice":    {tarGz(t, entry{name: "x", body: "1"}, entry{name: "x", body: "2"}), "exists"},
		"too large":     {tarGz(t, entry{name: "x", body: strings.Repeat("x", 2000)}), "pass 1000 bytes"},
		"not gzip":      {[]byte("plain"), "artefact"},
		"file as dir":   {tarGz(t, entry{name: "x", body: "1"}, entry{name: "x/y", body: "2"}), "before its directory"},
		"dir then file": {tarGz(t, entry{name: "d/", typ: tar.TypeDir}, entry{name: "d", body: "2"}), "exists"},
	} {
		dir := t.TempDir()
		err := UnpackDir(dir, bytes.NewReader(c.art), 1000)
		if !errors.Is(err, ErrArtifact) || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%s: %v, want %q", name, err, c.want)
		}
	}
}

func mustWrite(t *testing.T, path, body string, mode os.FileMode) {
	t.Helper()
	if err := os.WriteFile(path, []byte(body), mode); err != nil {
		t.Fatal(err)
	}
	os.Chmod(path, mode)
}

// FuzzUnpackDir feeds UnpackDir arbitrary bytes: it must never panic, never write outside
// its directory, and never leave anything but regular files and directories.
func FuzzUnpackDir(f *testing.F) {
	f.Add([]byte("plain"))
	var buf bytes.Buffer
	zw := gzip.NewWriter(&buf)
	tw := tar.NewWriter(zw)
	tw.WriteHeader(&tar.Header{Name: "d/", Typeflag: tar.TypeDir, Mode: 0o755})
	tw.WriteHeader(&tar.Header{Name: "d/x", Typeflag: tar.TypeReg, Mode: 0o755, Size: 1})
	tw.Write([]byte("x"))
	tw.WriteHeader(&tar.Header{Name: "../up", Typeflag: tar.TypeReg, Size: 0})
	tw.WriteHeader(&tar.Header{Name: "l", Typeflag: tar.TypeSymlink, Linkname: "/"})
	tw.Close()
	zw.Close()
	f.Add(buf.Bytes())
	f.Fuzz(func(t *testing.T, art []byte) {
		root := t.TempDir()
		dir := filepath.Join(root, "scratch")
		os.Mkdir(dir, 0o700)
		UnpackDir(dir, bytes.NewReader(art), 1<<20)
		filepath.WalkDir(root, func(p string, d os.DirEntry, err error) error {
			if err != nil || p == root {
				return nil
			}
			if p != dir && !strings.HasPrefix(p, dir+string(filepath.Separator)) {
				t.Errorf("wrote %s outside the scratch directory", p)
			}
			if !d.IsDir() && !d.Type().IsRegular() {
				t.Errorf("%s is a %v", p, d.Type())
			}
			return nil
		})
	})
}
