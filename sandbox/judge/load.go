package judge

import (
	"errors"
	"fmt"
	"io"
	"io/fs"
	"slices"
	"strings"

	"runbox/sandbox"
)

// Test case files: NAME.out is a case's expected output, NAME.in its standard input.
const (
	InExt  = ".in"
	OutExt = ".out"
)

// LoadDir reads the test cases of a directory, as the CLI (`runbox submit --tests DIR`)
// and the GUI take them: each NAME.out is the case NAME, its expected output, with NAME.in
// as its standard input (none: empty input). Other files and subdirectories are ignored.
// The cases come in natural order (2 before 10, runs of digits compared as numbers).
//
// It refuses what a server would refuse, before reading more than a server takes: an .in
// without its .out, no case at all, more than sandbox.MaxTests cases, more than
// sandbox.MaxStdinBytes of input and expected output in all, and names that
// sandbox.CheckTests refuses. Its errors say which file or limit, without the
// directory's name: the caller knows it.
func LoadDir(fsys fs.FS) ([]sandbox.TestCase, error) {
	entries, err := fs.ReadDir(fsys, ".")
	if err != nil {
		var pe *fs.PathError
		if errors.As(err, &pe) {
			err = pe.Err // the path is ".", which says nothing to the caller
		}
		return nil, fmt.Errorf("cannot read the test cases: %w", err)
	}
	ins, outs := map[string]int64{}, map[string]int64{}
	for _, e := range entries {
		name := e.Name()
		stem, ext := name, ""
		if s, ok := strings.CutSuffix(name, InExt); ok {
			stem, ext = s, InExt
		} else if s, ok := strings.CutSuffix(name, OutExt); ok {
			stem, ext = s, OutExt
		}
		if ext == "" || stem == "" {
			continue
		}
		fi, err := fs.Stat(fsys, name) // through a symbolic link
		if err != nil {
			return nil, err
		}
		if !fi.Mode().IsRegular() {
			continue
		}
		if ext == InExt {
			ins[stem] = fi.Size()
		} else {
			outs[stem] = fi.Size()
		}
	}
	var orphans []string
	for stem := range ins {
		if _, ok := outs[stem]; !ok {
			orphans = append(orphans, stem+InExt)
		}
	}
	if len(orphans) > 0 {
		slices.SortFunc(orphans, naturalCompare)
		if len(orphans) == 1 {
			return nil, fmt.Errorf("%s has no expected output %s", orphans[0], strings.TrimSuffix(orphans[0], InExt)+OutExt)
		}
		return nil, fmt.Errorf("%s have no expected output (NAME%s)", strings.Join(orphans, ", "), OutExt)
	}
	if len(outs) == 0 {
		return nil, fmt.Errorf("no test cases in the directory: a case is NAME%s, its expected output, and NAME%s, its input (none: empty input)", OutExt, InExt)
	}
	if len(outs) > sandbox.MaxTests {
		return nil, fmt.Errorf("%d test cases, a server takes at most %d", len(outs), sandbox.MaxTests)
	}
	tooLarge := func() error {
		return fmt.Errorf("the test cases hold more than %s of input and expected output, the most a server takes", sandbox.FormatSize(sandbox.MaxStdinBytes))
	}
	var total int64
	for stem, n := range outs {
		total += n + ins[stem]
	}
	if total > sandbox.MaxStdinBytes {
		return nil, tooLarge()
	}
	names := make([]string, 0, len(outs))
	for stem := range outs {
		names = append(names, stem)
	}
	slices.SortFunc(names, naturalCompare)
	cases := make([]sandbox.TestCase, len(names))
	budget := int64(sandbox.MaxStdinBytes) // a file may have grown since it was listed
	for i, name := range names {
		tc := sandbox.TestCase{Name: name}
		if tc.Expected, err = readAtMost(fsys, name+OutExt, &budget); err != nil {
			return nil, err
		}
		if _, ok := ins[name]; ok {
			if tc.Stdin, err = readAtMost(fsys, name+InExt, &budget); err != nil {
				return nil, err
			}
		}
		if budget < 0 {
			return nil, tooLarge()
		}
		cases[i] = tc
	}
	if err := sandbox.CheckTests(cases, sandbox.Limits{}); err != nil {
		return nil, err
	}
	return cases, nil
}

// readAtMost reads a file, at most *budget+1 bytes of it, and takes what it read from
// *budget. It returns an empty slice, not nil, for an empty file: an empty expected
// output is still one.
func readAtMost(fsys fs.FS, name string, budget *int64) ([]byte, error) {
	f, err := fsys.Open(name)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	b, err := io.ReadAll(io.LimitReader(f, max(*budget, 0)+1))
	if err != nil {
		return nil, err
	}
	*budget -= int64(len(b))
	if b == nil {
		b = []byte{}
	}
	return b, nil
}

// naturalCompare orders names as people count: runs of digits compared as numbers
// ("2" before "10"); ties (as "2" and "02") in byte order.
func naturalCompare(a, b string) int {
	if c := naturalCompareRuns(a, b); c != 0 {
		return c
	}
	return strings.Compare(a, b)
}

func naturalCompareRuns(a, b string) int {
	for a != "" && b != "" {
		da, db := digitRun(a), digitRun(b)
		if da > 0 && db > 0 {
			na, nb := strings.TrimLeft(a[:da], "0"), strings.TrimLeft(b[:db], "0")
			if c := len(na) - len(nb); c != 0 {
				return c
			}
			if c := strings.Compare(na, nb); c != 0 {
				return c
			}
			a, b = a[da:], b[db:]
			continue
		}
		if a[0] != b[0] {
			return int(a[0]) - int(b[0])
		}
		a, b = a[1:], b[1:]
	}
	return len(a) - len(b)
}

func digitRun(s string) int {
	n := 0
	for n < len(s) && s[n] >= '0' && s[n] <= '9' {
		n++
	}
	return n
}
