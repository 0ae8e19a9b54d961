package sandbox

import (
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"time"
)

// Language is one row of the language table: how to compile and run a program in it.
// Commands run in the program's working directory, where its files are.
type Language struct {
	// Name is the canonical name used on the wire ("python", "c", "cpp", "go", "java",
	// "javascript").
	Name string
	// Title is the language's name for people ("C++", "JavaScript"): the GUI's list.
	Title string
	// Aliases are other accepted names ("py", "c++").
	Aliases []string
	// Extensions map file names to the language (".py").
	Extensions []string
	// Image is the runtime image repository, without tag ("runbox/runtime-python").
	Image string
	// Source is the main file's default name, which the commands name. A request's main
	// file without a name gets it (Java's Main.java: the file is named after its class).
	Source string
	// Compile is the compile command, nil for interpreted languages.
	Compile []string
	// Run is the command that runs the program.
	Run []string
	// Warm, when set, is a command a pooled container runs while it waits for its program:
	// it loads the toolchain's files into the container's file cache (each container's
	// root filesystem is a mount of its own, cold at start), and is killed when the
	// program arrives. Its output and exit status are ignored.
	Warm []string
	// Prestart, when set, is an interpreter that a pooled container starts before its
	// program arrives (in place of Warm): its prelude waits for the main file's path on
	// fd 3 and then runs that file in the same process, as Run would have, so the program
	// does not pay the interpreter's start. See boxinit.Config.Prestart.
	Prestart []string
	// CompileTime, when longer than the server's default compile time, is the compile
	// limit of a program that asks for none (at most the server's maximum): a JVM or the
	// go command starting in a fresh container, its files not yet cached, can take more
	// than 10 s on a busy machine.
	CompileTime time.Duration
	// Env is the language's own environment, KEY=value, added to runbox-init's fixed
	// one (boxinit.DefaultConfig) for the compile and run commands: where a toolchain
	// keeps its caches (under /tmp, the only writable place), and switches that keep it
	// offline. Warm commands set what they need themselves.
	Env []string
}

// goEnv is the go command's environment with its caches under dir: GOPATH mode (no
// go.mod, no module downloads), no proxy, no toolchain switch, the local toolchain.
func goEnv(dir string) []string {
	return []string{
		"GOCACHE=" + dir + "/.cache/go-build",
		"GOPATH=" + dir + "/.cache/gopath",
		"GO111MODULE=off",
		"GOPROXY=off",
		"GOTOOLCHAIN=local",
		"GOFLAGS=",
	}
}

// javaFlags are the JVM's flags for a program. The JVM sizes its heap from the memory
// cgroup (there is no address-space limit): 75% of the sandbox's memory limit, whatever
// the limit (MinRAMPercentage applies under about 256 MiB). The rest is the JVM's own:
// code, metaspace, stacks, and the page cache of its libraries, without which it thrashes.
// So a program that fills its heap ends with Java's OutOfMemoryError (runtime_error), not
// at the sandbox's cap. The serial collector has no helper threads and the smallest
// footprint; -Xss gives threads a judge's deep stack (reserved, not used, until touched);
// no perf data file in /tmp; the JDK's class data archive when it maps.
func javaFlags() []string {
	return []string{"-XX:+UseSerialGC", "-XX:MinRAMPercentage=75", "-XX:MaxRAMPercentage=75", "-Xss64m", "-XX:-UsePerfData", "-Xshare:auto"}
}

// javacFlags run javac on the same JVM, tuned for a short job: C1 only (javac's life is
// too short for C2 to pay off), and javac's class data archive, which the runtime image
// builds (images/runtime/java/Dockerfile).
func javacFlags() []string {
	return []string{"-J-XX:+UseSerialGC", "-J-XX:TieredStopAtLevel=1", "-J-XX:MinRAMPercentage=75", "-J-XX:MaxRAMPercentage=75", "-J-XX:-UsePerfData",
		"-J-Xshare:auto", "-J-XX:SharedArchiveFile=/usr/local/lib/runbox/javac.jsa", "-encoding", "UTF-8"}
}

// pythonPrelude runs in a prestarted python3 (-c, so in __main__): it reads the main
// file's path from fd 3 and runs the file in __main__ as `python3 main.py` does: the same
// sys.argv, sys.path[0], __file__ (absolute) and __main__ globals, the same traceback
// (without the prelude's frame) and exit status 1 for an uncaught exception, the same
// message and status 2 for a missing file. What differs: sys.orig_argv, and the
// program's first frame is two deep instead of one (two fewer frames of recursion).
const pythonPrelude = `def _runbox():
    import sys, os
    b = b''
    while not b.endswith(b'\n'):
        c = os.read(3, 4096)
        if not c:
            os._exit(125)
        b += c
    os.close(3)
    arg = b[:-1].decode()
    path = os.path.abspath(arg)
    sys.argv[:] = [arg]
    sys.path[0] = os.path.dirname(path)
    g = sys.modules['__main__'].__dict__
    bi = g['__builtins__']
    loader = sys.modules['_frozen_importlib_external'].SourceFileLoader('__main__', path)
    g.clear()
    g.update(__name__='__main__', __doc__=None, __package__=None, __loader__=loader,
             __spec__=None, __annotations__={}, __builtins__=bi, __file__=path, __cached__=None)
    try:
        with open(path, 'rb') as f:
            src = f.read()
    except OSError as e:
        sys.stderr.write("%s: can't open file %r: [Errno %d] %s\n" % (sys.orig_argv[0], path, e.errno, e.strerror))
        sys.exit(2)
    try:
        exec(compile(src, path, 'exec', dont_inherit=True), g)
    except SystemExit:
        raise
    except BaseException as e:
        tb = e.__traceback__
        while tb is not None and tb.tb_frame.f_code.co_filename == '<string>':
            tb = tb.tb_next
        sys.excepthook(type(e), e.with_traceback(tb), tb)
        sys.exit(1)
_runbox()
`

// Compiled reports whether the language has a compile phase.
func (l Language) Compiled() bool { return len(l.Compile) > 0 }

// languages is the table. It is read-only: accessors hand out copies.
func languages() []Language {
	return []Language{
		{
			Name:       "python",
			Title:      "Python",
			Aliases:    []string{"python3", "py"},
			Extensions: []string{".py"},
			Image:      "runbox/runtime-python",
			Source:     "main.py",
			// -u: unbuffered, so output and input() prompts stream live; -B: no .pyc files.
			Run:      []string{"python3", "-u", "-B", "main.py"},
			Warm:     []string{"python3", "-u", "-B", "-c", "pass"},
			Prestart: []string{"python3", "-u", "-B", "-c", pythonPrelude},
		},
		{
			Name:       "c",
			Title:      "C",
			Aliases:    []string{"gcc"},
			Extensions: []string{".c"},
			Image:      "runbox/runtime-c",
			Source:     "main.c",
			Compile:    []string{"gcc", "-std=gnu17", "-O2", "-pipe", "-Wall", "-o", "main", "main.c", "-lm"},
			Run:        []string{"./main"},
			// An empty file with <stdio.h>: compiler, assembler, linker, headers, libc.
			// (The link fails for want of main; it has loaded what it needs by then.)
			Warm: []string{"gcc", "-std=gnu17", "-O2", "-pipe", "-Wall", "-include", "stdio.h", "-x", "c", "/dev/null", "-o", "warm", "-lm"},
		},
		{
			Name:       "cpp",
			Title:      "C++",
			Aliases:    []string{"c++", "g++", "cxx"},
			Extensions: []string{".cpp", ".cc", ".cxx", ".c++"},
			Image:      "runbox/runtime-cpp",
			Source:     "main.cpp",
			// The image has <bits/stdc++.h> precompiled for exactly -std=gnu++17 -O2
			// (images/runtime/cpp/Dockerfile): change those and the PCH goes unused.
			// gold (in Debian bookworm's binutils) links libstdc++ programs faster than
			// ld.bfd; the image build fails if it cannot.
			Compile: []string{"g++", "-std=gnu++17", "-O2", "-pipe", "-Wall", "-fuse-ld=gold", "-o", "main", "main.cpp"},
			Run:     []string{"./main"},
			Warm:    []string{"g++", "-std=gnu++17", "-O2", "-pipe", "-Wall", "-fuse-ld=gold", "-include", "iostream", "-x", "c++", "/dev/null", "-o", "warm"},
		},
		{
			Name:       "go",
			Title:      "Go",
			Aliases:    []string{"golang"},
			Extensions: []string{".go"},
			Image:      "runbox/runtime-go",
			Source:     "main.go",
			// GOPATH mode (GO111MODULE=off): the package in the working directory, all its
			// .go files, no go.mod, standard library only. The build cache is per program.
			Compile:     []string{"go", "build", "-o", "main", "."},
			CompileTime: 30 * time.Second,
			Run:         []string{"./main"},
			Env:         goEnv("/tmp"),
			// A hello that imports fmt: the go command, compiler, linker and the standard
			// library's sources and archives, with the cache in the warm-up's directory.
			Warm: []string{"sh", "-c", "printf 'package main\\nimport \"fmt\"\\nfunc main() { fmt.Println() }\\n' >main.go && " +
				"exec env " + strings.Join(goEnv("$PWD"), " ") + " go build -o main ."},
		},
		{
			Name:       "java",
			Title:      "Java",
			Extensions: []string{".java"},
			Image:      "runbox/runtime-java",
			// javac wants a public class in a file of its name: the program's class is Main.
			Source:      "Main.java",
			Compile:     append(append([]string{"javac"}, javacFlags()...), "Main.java"),
			CompileTime: 30 * time.Second,
			Run:         append(append([]string{"java"}, javaFlags()...), "Main"),
			// The same compile and run of a hello: the JVM, javac's classes, the class data.
			Warm: []string{"sh", "-c", "printf 'class Main { public static void main(String[] a) { System.out.println(); } }\\n' >Main.java && " +
				"javac " + strings.Join(javacFlags(), " ") + " Main.java && exec java " + strings.Join(javaFlags(), " ") + " Main"},
		},
		{
			Name:       "javascript",
			Title:      "JavaScript",
			Aliases:    []string{"js", "node", "nodejs"},
			Extensions: []string{".js"},
			Image:      "runbox/runtime-javascript",
			Source:     "main.js",
			// The preload, from the image, makes stdout and stderr blocking: output stops the
			// program when the pipe is full instead of piling up in memory, and all of it
			// arrives before an exit.
			Run:  []string{"node", "--require", "/usr/local/lib/runbox/node-stdio.js", "main.js"},
			Warm: []string{"node", "--require", "/usr/local/lib/runbox/node-stdio.js", "-e", ""},
			// The same command with one more preload, from the image, that waits for
			// runbox-init's word on fd 3: node starts, then loads main.js once it exists,
			// by its own path for a main module (the same process.argv, require.main,
			// stack traces).
			Prestart: []string{"node", "--require", "/usr/local/lib/runbox/node-stdio.js", "--require", "/usr/local/lib/runbox/node-wait.js", "main.js"},
		},
	}
}

// table is the language table, built once: Lookup runs for every request (Validate, the
// runners), and building the rows each time showed in the dispatch profile. It is never
// modified; the rows' slices are shared with callers, who only read them.
var table = sync.OnceValue(languages)

// Languages returns the language table (a copy of the list; the rows are read-only).
func Languages() []Language { return slices.Clone(table()) }

// LanguageNames lists the canonical names, comma-separated.
func LanguageNames() string {
	var names []string
	for _, l := range table() {
		names = append(names, l.Name)
	}
	return strings.Join(names, ", ")
}

// Lookup finds a language by name or alias, case-insensitively.
func Lookup(name string) (Language, bool) {
	name = strings.ToLower(strings.TrimSpace(name))
	for _, l := range table() {
		if l.Name == name || slices.Contains(l.Aliases, name) {
			return l, true
		}
	}
	return Language{}, false
}

// Detect guesses the language from a file name's extension.
func Detect(filename string) (Language, bool) {
	ext := strings.ToLower(filepath.Ext(filename))
	for _, l := range table() {
		if slices.Contains(l.Extensions, ext) {
			return l, true
		}
	}
	return Language{}, false
}
