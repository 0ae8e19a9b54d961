package sandbox

import (
	"path/filepath"
	"slices"
	"strings"
)

// Language is one row of the language table: how to compile and run a program in it.
// Commands run in the program's working directory, where its files are.
type Language struct {
	// Name is the canonical name used on the wire ("python", "c", "cpp").
	Name string
	// Aliases are other accepted names ("py", "c++").
	Aliases []string
	// Extensions map file names to the language (".py").
	Extensions []string
	// Image is the runtime image repository, without tag ("runbox/runtime-python").
	Image string
	// Source is the main file's default name.
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
}

// Compiled reports whether the language has a compile phase.
func (l Language) Compiled() bool { return len(l.Compile) > 0 }

// languages is the table. It is read-only: accessors hand out copies.
func languages() []Language {
	return []Language{
		{
			Name:       "python",
			Aliases:    []string{"python3", "py"},
			Extensions: []string{".py"},
			Image:      "runbox/runtime-python",
			Source:     "main.py",
			// -u: unbuffered, so output and input() prompts stream live; -B: no .pyc files.
			Run:  []string{"python3", "-u", "-B", "main.py"},
			Warm: []string{"python3", "-u", "-B", "-c", "pass"},
		},
		{
			Name:       "c",
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
			Aliases:    []string{"c++", "g++", "cxx"},
			Extensions: []string{".cpp", ".cc", ".cxx", ".c++"},
			Image:      "runbox/runtime-cpp",
			Source:     "main.cpp",
			Compile:    []string{"g++", "-std=gnu++17", "-O2", "-pipe", "-Wall", "-o", "main", "main.cpp"},
			Run:        []string{"./main"},
			Warm:       []string{"g++", "-std=gnu++17", "-O2", "-pipe", "-Wall", "-include", "iostream", "-x", "c++", "/dev/null", "-o", "warm"},
		},
	}
}

// Languages returns the language table.
func Languages() []Language { return languages() }

// LanguageNames lists the canonical names, comma-separated.
func LanguageNames() string {
	var names []string
	for _, l := range languages() {
		names = append(names, l.Name)
	}
	return strings.Join(names, ", ")
}

// Lookup finds a language by name or alias, case-insensitively.
func Lookup(name string) (Language, bool) {
	name = strings.ToLower(strings.TrimSpace(name))
	for _, l := range languages() {
		if l.Name == name || slices.Contains(l.Aliases, name) {
			return l, true
		}
	}
	return Language{}, false
}

// Detect guesses the language from a file name's extension.
func Detect(filename string) (Language, bool) {
	ext := strings.ToLower(filepath.Ext(filename))
	for _, l := range languages() {
		if slices.Contains(l.Extensions, ext) {
			return l, true
		}
	}
	return Language{}, false
}
