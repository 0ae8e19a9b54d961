package judge

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"reflect"
	"slices"
	"strings"
	"testing"
	"testing/fstest"

	"runbox/sandbox"
)

func files(m map[string]string) fstest.MapFS {
	fsys := fstest.MapFS{}
	for name, data := range m {
		fsys[name] = &fstest.MapFile{Data: []byte(data)}
	}
	return fsys
}

func TestLoadDir(t *testing.T) {
	t.Parallel()
	fsys := files(map[string]string{
		"10.in": "ten\n", "10.out": "TEN\n", "2.in": "two\n", "2.out": "TWO\n",
		"sample.out": "", // no input: empty input; an empty expected output is one
		"notes.txt":  "ignored", ".in": "no name: ignored", "x.in.bak": "ignored",
	})
	fsys["dir.out/1.out"] = &fstest.MapFile{Data: []byte("in a subdirectory: ignored")}
	cases, err := LoadDir(fsys)
	if err != nil {
		t.Fatal(err)
	}
	want := []sandbox.TestCase{
		{Name: "2", Stdin: []byte("two\n"), Expected: []byte("TWO\n")},
		{Name: "10", Stdin: []byte("ten\n"), Expected: []byte("TEN\n")},
		{Name: "sample", Expected: []byte{}},
	}
	if !reflect.DeepEqual(cases, want) || cases[2].Stdin != nil || cases[2].Expected == nil {
		t.Errorf("cases %+v, want %+v", cases, want)
	}
}

// LoadDir refuses what a server would refuse, with words that say what.
func TestLoadDirRefuses(t *testing.T) {
	t.Parallel()
	many := fstest.MapFS{}
	for i := range sandbox.MaxTests + 1 {
		many[fmt.Sprintf("%d.out", i)] = &fstest.MapFile{}
	}
	big := fstest.MapFS{
		"1.in":  &fstest.MapFile{Data: make([]byte, sandbox.MaxStdinBytes/2)},
		"1.out": &fstest.MapFile{Data: make([]byte, sandbox.MaxStdinBytes/2)},
		"2.out": &fstest.MapFile{Data: []byte("x")},
	}
	for name, c := range map[string]struct {
		fsys fstest.MapFS
		want string
	}{
		"no case":          {files(map[string]string{"notes.txt": "x"}), "no test cases in the directory"},
		"in without out":   {files(map[string]string{"1.in": "x", "2.out": "y"}), "1.in has no expected output 1.out"},
		"ins without outs": {files(map[string]string{"10.in": "x", "9.in": "x", "2.out": "y"}), "9.in, 10.in have no expected output"},
		"too many":         {many, fmt.Sprintf("%d test cases, a server takes at most %d", sandbox.MaxTests+1, sandbox.MaxTests)},
		"too large":        {big, "more than 8MiB of input and expected output"},
		"control in name":  {files(map[string]string{"a\x01b.out": "x"}), "bad test case name"},
		"long name":        {files(map[string]string{strings.Repeat("n", sandbox.MaxTestName+1) + ".out": "x"}), "bad test case name"},
	} {
		cases, err := LoadDir(c.fsys)
		if err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%s: %d cases, err %v; want %q", name, len(cases), err, c.want)
		}
	}
	// What LoadDir takes, a server takes.
	ok := fstest.MapFS{"1.in": big["1.in"], "1.out": big["1.out"]}
	cases, err := LoadDir(ok)
	if err != nil {
		t.Fatalf("at the size cap: %v", err)
	}
	spec := sandbox.Spec{Language: "python", Files: []sandbox.File{{Content: []byte("x")}}, Tests: cases}
	if err := spec.Validate(); err != nil {
		t.Errorf("a server refuses what LoadDir took: %v", err)
	}
}

func TestLoadDirOnDisk(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	os.WriteFile(filepath.Join(dir, "real.out"), []byte("42\n"), 0o644)
	os.Symlink(filepath.Join(dir, "real.out"), filepath.Join(dir, "linked.out"))
	os.Mkdir(filepath.Join(dir, "sub.out"), 0o755)
	cases, err := LoadDir(os.DirFS(dir))
	if err != nil || len(cases) != 2 || cases[0].Name != "linked" || string(cases[0].Expected) != "42\n" {
		t.Errorf("cases %+v, err %v", cases, err)
	}
	_, err = LoadDir(os.DirFS(filepath.Join(dir, "nope")))
	if !errors.Is(err, os.ErrNotExist) || !strings.Contains(err.Error(), "no such file") || strings.Contains(err.Error(), "open .") {
		t.Errorf("missing directory: %v", err)
	}
}

func TestNaturalOrder(t *testing.T) {
	t.Parallel()
	for _, names := range [][]string{
		{"1", "02", "2", "10", "a", "a2", "a10", "b", "sample-1", "sample-01x"},
		{"1", "01b", "2", "10", "a", "b", "sample-1", "sample-2", "sample-10"},
	} {
		got := slices.Clone(names)
		slices.Reverse(got)
		slices.SortFunc(got, naturalCompare)
		if !slices.Equal(got, names) {
			t.Errorf("order %q, want %q", got, names)
		}
	}
}
