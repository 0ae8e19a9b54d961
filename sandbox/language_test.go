package sandbox

import (
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
)

// TestLanguageTable pins what the Runners rely on in every row: unique names, aliases and
// extensions; a main file the commands use, whose extension detects the language; an
// environment that only points into the scratch directory.
func TestLanguageTable(t *testing.T) {
	seen := map[string]string{}
	claim := func(what, key, lang string) {
		if other, ok := seen[what+key]; ok {
			t.Errorf("%s %q of %s is also %s's", what, key, lang, other)
		}
		seen[what+key] = lang
	}
	for _, l := range Languages() {
		claim("name", l.Name, l.Name)
		claim("title", l.Title, l.Name)
		if l.Title == "" {
			t.Errorf("%s: no title", l.Name)
		}
		for _, a := range l.Aliases {
			claim("name", a, l.Name)
		}
		for _, e := range l.Extensions {
			claim("extension", e, l.Name)
		}
		if got, ok := Lookup(strings.ToUpper(l.Name)); !ok || got.Name != l.Name {
			t.Errorf("Lookup(%q) = %q, %v", l.Name, got.Name, ok)
		}
		if got, ok := Detect("dir/" + l.Source); !ok || got.Name != l.Name {
			t.Errorf("%s: its main file %q detects %q", l.Name, l.Source, got.Name)
		}
		if l.Image != "runbox/runtime-"+l.Name {
			t.Errorf("%s: image %q", l.Name, l.Image)
		}
		if len(l.Run) == 0 {
			t.Errorf("%s: no run command", l.Name)
		}
		// The main file is named in the compile command, or run directly.
		if cmd := l.Run; l.Compiled() {
			cmd = l.Compile
			if !slices.Contains(cmd, l.Source) && !slices.Contains(cmd, ".") {
				t.Errorf("%s: compile command %q does not name %s", l.Name, cmd, l.Source)
			}
		} else if !slices.Contains(cmd, l.Source) {
			t.Errorf("%s: run command %q does not name %s", l.Name, cmd, l.Source)
		}
		for _, kv := range l.Env {
			k, v, ok := strings.Cut(kv, "=")
			if !ok || k == "" || strings.ToUpper(k) != k {
				t.Errorf("%s: env entry %q is not KEY=value", l.Name, kv)
			}
			if strings.HasPrefix(v, "/") && !strings.HasPrefix(filepath.Clean(v), "/tmp/") {
				t.Errorf("%s: %s points outside /tmp, the only writable place", l.Name, kv)
			}
		}
	}
}

// TestJavaMemoryComesFromTheCgroup: the JVM sizes its heap from the sandbox's memory cgroup
// (a fixed -Xmx would ignore the request's limit), for the program and for javac alike.
func TestJavaMemoryComesFromTheCgroup(t *testing.T) {
	java, _ := Lookup("java")
	for _, cmd := range [][]string{java.Run, java.Compile} {
		joined := strings.Join(cmd, " ")
		for _, flag := range []string{"-XX:MaxRAMPercentage=", "-XX:MinRAMPercentage=", "-XX:+UseSerialGC"} {
			if !strings.Contains(joined, flag) {
				t.Errorf("%q lacks %s", joined, flag)
			}
		}
		if strings.Contains(joined, "-Xmx") || strings.Contains(joined, "MaxHeapSize") {
			t.Errorf("%q fixes the heap size", joined)
		}
	}
	if java.Source != "Main.java" || java.Run[len(java.Run)-1] != "Main" {
		t.Errorf("java runs %q from %s, want class Main from Main.java", java.Run, java.Source)
	}
}

// TestEveryLanguageHasItsImage: each row has its runtime image's directory,
// images/runtime/NAME, whose Dockerfile images/build.sh builds into the row's Image, and
// each such directory is a row's (docs/add-a-language.md).
func TestEveryLanguageHasItsImage(t *testing.T) {
	t.Parallel()
	root := filepath.Join("..", "images", "runtime")
	rows := map[string]bool{}
	for _, l := range Languages() {
		rows[l.Name] = true
		df := filepath.Join(root, l.Name, "Dockerfile")
		b, err := os.ReadFile(df)
		if err != nil {
			t.Errorf("%s: no runtime image: %v (add images/runtime/%s/Dockerfile, see docs/add-a-language.md)", l.Name, err, l.Name)
			continue
		}
		for _, want := range []string{"LABEL runbox.language=" + l.Name + "\n", `ENTRYPOINT ["/usr/local/bin/runbox-init"]`, "USER 65534:65534"} {
			if !strings.Contains(string(b), want) {
				t.Errorf("%s lacks %q", df, strings.TrimSpace(want))
			}
		}
	}
	dirs, err := os.ReadDir(root)
	if err != nil {
		t.Fatal(err)
	}
	for _, d := range dirs {
		if d.IsDir() && !rows[d.Name()] {
			t.Errorf("%s: an image for a language the table does not have", filepath.Join(root, d.Name()))
		}
	}
}
