package judge

import (
	"bytes"
	"slices"
	"strconv"
	"strings"
	"testing"
	"unicode/utf8"

	"runbox/sandbox"
)

func TestDiff(t *testing.T) {
	t.Parallel()
	long := strings.Repeat("a", 100)
	for _, c := range []struct {
		name          string
		mode          sandbox.Compare
		expected, got string
		want          string // "" means equal
	}{
		{"exact equal", sandbox.CompareExact, "1\n2\n", "1\n2\n", ""},
		{"exact trailing space", sandbox.CompareExact, "1\n2\n", "1 \n2\n", `line 1: expected "1\n", got "1 \n"`},
		{"exact missing newline", sandbox.CompareExact, "1\n2\n", "1\n2", `line 2: expected "2\n", got "2"`},
		{"exact extra line", sandbox.CompareExact, "1\n", "1\n2\n", `line 2: expected the end of the output, got "2\n"`},
		{"exact empty", sandbox.CompareExact, "", "", ""},
		{"exact crlf", sandbox.CompareExact, "1\n", "1\r\n", `line 1: expected "1\n", got "1\r\n"`},

		{"trim equal", sandbox.CompareTrim, "1\n2\n", "1\n2\n", ""},
		{"trim default mode", "", "1\n2\n", "1  \n2\t\n\n\n", ""},
		{"trim crlf", sandbox.CompareTrim, "1\n2\n", "1\r\n2\r\n", ""},
		{"trim no final newline", sandbox.CompareTrim, "1\n2\n", "1\n2", ""},
		{"trim leading space counts", sandbox.CompareTrim, "1\n", " 1\n", `line 1: expected "1", got " 1"`},
		{"trim inner blank line counts", sandbox.CompareTrim, "1\n2\n", "1\n\n2\n", `line 2: expected "2", got ""`},
		{"trim wrong line", sandbox.CompareTrim, "1\n2\n3\n", "1\n2\n4\n", `line 3: expected "3", got "4"`},
		{"trim missing line", sandbox.CompareTrim, "1\n2\n", "1\n", `line 2: expected "2", got the end of the output`},
		{"trim empty output", sandbox.CompareTrim, "1\n", "", `line 1: expected "1", got the end of the output`},
		{"trim both empty", sandbox.CompareTrim, "\n\n", "", ""},

		{"tokens equal", sandbox.CompareTokens, "1 2 3\n", "1\n2   3", ""},
		{"tokens differ", sandbox.CompareTokens, "1 2 3", "1 2 4", `token 3: expected "3", got "4"`},
		{"tokens fewer", sandbox.CompareTokens, "1 2 3", "1 2", `token 3: expected "3", got the end of the output`},
		{"tokens more", sandbox.CompareTokens, "1 2", "1 2 3", `token 3: expected the end of the output, got "3"`},

		{"long line cut", sandbox.CompareTrim, long, long + "b", `line 1, column 101: expected ..."` + strings.Repeat("a", 15) + `", got ..."` + strings.Repeat("a", 15) + `b"`},
		{"long line start", sandbox.CompareTrim, "x" + long, "y" + long, `line 1: expected "x` + strings.Repeat("a", 59) + `"..., got "y` + strings.Repeat("a", 59) + `"...`},
	} {
		got := Diff(c.mode, []byte(c.expected), []byte(c.got))
		if got != c.want {
			t.Errorf("%s: Diff = %s\n%*s want %s", c.name, got, len(c.name), "", c.want)
		}
		if Equal(c.mode, []byte(c.expected), []byte(c.got)) != (c.want == "") {
			t.Errorf("%s: Equal disagrees with Diff", c.name)
		}
	}
}

func TestDiffIsShort(t *testing.T) {
	t.Parallel()
	a, b := strings.Repeat("x", 10000)+"1"+strings.Repeat("y", 10000), strings.Repeat("x", 10000)+"2"+strings.Repeat("y", 10000)
	d := Diff(sandbox.CompareExact, []byte(a), []byte(b))
	if len(d) > 200 || !strings.Contains(d, `x1y`) || !strings.Contains(d, `x2y`) || !strings.Contains(d, "column 10001") {
		t.Errorf("Diff = %s", d)
	}
	// Multi-byte characters are never cut in half.
	u := strings.Repeat("é", 200)
	d = Diff(sandbox.CompareTrim, []byte(u), []byte(u+"!"))
	if !strings.Contains(d, "é") || strings.Contains(d, `\x`) {
		t.Errorf("Diff = %s", d)
	}
}

// Outputs are bytes, not text: invalid UTF-8 on either side, runs of 0xFF, long lines and
// multi-byte characters cut at the window's edges all give a diff, never a panic, and no
// side shows more than DiffWidth characters (a byte that is not UTF-8 is one character).
func TestDiffArbitraryBytes(t *testing.T) {
	t.Parallel()
	ff := strings.Repeat("\xff", 200)
	euro := strings.Repeat("€", 100) // 3 bytes each
	for _, c := range []struct {
		name          string
		mode          sandbox.Compare
		expected, got string
		want          string
	}{
		{"invalid expected", sandbox.CompareTrim, "\xff\n", "1\n", `line 1: expected "\xff", got "1"`},
		{"invalid got", sandbox.CompareTrim, "1\n", "\xff\xfe\n", `line 1: expected "1", got "\xff\xfe"`},
		{"invalid both equal", sandbox.CompareExact, "\xff\x80\n", "\xff\x80\n", ""},
		{"ff run expected", sandbox.CompareTrim, ff, "x", `line 1: expected "` + strings.Repeat(`\xff`, 60) + `"..., got "x"`},
		{"ff run got", sandbox.CompareExact, "x", ff, `line 1: expected "x", got "` + strings.Repeat(`\xff`, 60) + `"...`},
		{"ff runs differ far in", sandbox.CompareTrim, ff + "a", ff + "b",
			`line 1, column 201: expected ..."` + strings.Repeat(`\xff`, 15) + `a", got ..."` + strings.Repeat(`\xff`, 15) + `b"`},
		{"ff tokens", sandbox.CompareTokens, "1 \xff 3", "1 \xfe 3", `token 2: expected "\xff", got "\xfe"`},
		{"ff tokens missing", sandbox.CompareTokens, "1 " + ff, "1", `token 2: expected "` + strings.Repeat(`\xff`, 60) + `"..., got the end of the output`},
		{"ff tokens extra", sandbox.CompareTokens, "1", "1 " + ff, `token 2: expected the end of the output, got "` + strings.Repeat(`\xff`, 60) + `"...`},
		{"long line mixed", sandbox.CompareExact, strings.Repeat("a\xff", 100) + "\n", strings.Repeat("a\xff", 100) + "!\n",
			`line 1, column 201: expected ..."\xff` + strings.Repeat(`a\xff`, 7) + `\n", got ..."\xff` + strings.Repeat(`a\xff`, 7) + `!\n"`},
		{"euro cut at the window end", sandbox.CompareTrim, euro, "x" + euro, `line 1: expected "` + strings.Repeat("€", 60) + `"..., got "x` + strings.Repeat("€", 59) + `"...`},
		{"euro cut at the window start", sandbox.CompareTrim, euro + "1", euro + "2", `line 1, column 101: expected ..."` + strings.Repeat("€", 15) + `1", got ..."` + strings.Repeat("€", 15) + `2"`},
		{"same lead byte, other rune", sandbox.CompareExact, "é", "è", `line 1: expected "é", got "è"`},
		{"truncated rune", sandbox.CompareExact, "a\xe2\x82", "a\xe2\x82\xac", `line 1: expected "a\xe2\x82", got "a€"`},
		{"continuation bytes only", sandbox.CompareTrim, strings.Repeat("\x80", 100) + "\x81", strings.Repeat("\x80", 100) + "\x82",
			`line 1, column 101: expected ..."` + strings.Repeat(`\x80`, 15) + `\x81", got ..."` + strings.Repeat(`\x80`, 15) + `\x82"`},
	} {
		got := Diff(c.mode, []byte(c.expected), []byte(c.got))
		if got != c.want {
			t.Errorf("%s: Diff = %s\n%*s want %s", c.name, got, len(c.name), "", c.want)
		}
		if Equal(c.mode, []byte(c.expected), []byte(c.got)) != (c.want == "") {
			t.Errorf("%s: Equal disagrees with Diff", c.name)
		}
		checkDiff(t, c.mode, []byte(c.expected), []byte(c.got), got)
	}
}

// FuzzDiff: on any bytes, in any mode, Diff does not panic, says "" exactly when the
// outputs are equal under the mode (by a separate, plain definition), and each side it
// shows is a piece of that side of at most DiffWidth characters, quoted.
func FuzzDiff(f *testing.F) {
	for _, s := range [][2]string{
		{"1\n2\n", "1\n2\n"}, {"1\n", "1 \n"}, {"\xff", "1"}, {"1", "\xff\xfe"},
		{strings.Repeat("\xff", 100), strings.Repeat("\xff", 99) + "a"},
		{strings.Repeat("é", 50), strings.Repeat("é", 49) + "è"},
		{"a\xe2\x82", "a\xe2\x82\xac"}, {"1 2 3", "1\n2   3\n"}, {"\n\n", ""},
	} {
		for m := range byte(3) {
			f.Add(m, []byte(s[0]), []byte(s[1]))
		}
	}
	f.Fuzz(func(t *testing.T, m byte, expected, got []byte) {
		mode := []sandbox.Compare{sandbox.CompareExact, sandbox.CompareTrim, sandbox.CompareTokens}[m%3]
		d := Diff(mode, expected, got)
		if eq := plainEqual(mode, expected, got); (d == "") != eq {
			t.Fatalf("%s: Diff(%q, %q) = %q, but equal is %v", mode, expected, got, d, eq)
		}
		if Equal(mode, expected, got) != (d == "") {
			t.Fatalf("Equal disagrees with Diff")
		}
		checkDiff(t, mode, expected, got, d)
	})
}

// plainEqual is what each mode means, written without Diff's pieces.
func plainEqual(mode sandbox.Compare, a, b []byte) bool {
	switch mode {
	case sandbox.CompareExact:
		return string(a) == string(b)
	case sandbox.CompareTokens:
		return slices.EqualFunc(bytes.Fields(a), bytes.Fields(b), bytes.Equal)
	}
	norm := func(s []byte) string {
		lines := strings.Split(string(s), "\n")
		for i, l := range lines {
			lines[i] = strings.TrimRight(l, " \t\r\f\v")
		}
		return strings.TrimRight(strings.Join(lines, "\n"), "\n")
	}
	return norm(a) == norm(b)
}

// checkDiff parses a non-empty diff, "UNIT N[, column C]: expected SIDE, got SIDE", and
// checks each shown side against the output it comes from.
func checkDiff(t *testing.T, mode sandbox.Compare, expected, got []byte, d string) {
	t.Helper()
	if d == "" {
		return
	}
	_, rest, ok := strings.Cut(d, ": expected ")
	if !ok || !(strings.HasPrefix(d, "line ") || strings.HasPrefix(d, "token ")) {
		if mode == sandbox.CompareExact && d == "the output differs" {
			t.Fatalf("exact: %q and %q split into the same lines", expected, got)
		}
		t.Fatalf("diff %q has no place and no expected side", d)
	}
	want, rest, wantEnd := diffSide(t, d, rest)
	rest, ok = strings.CutPrefix(rest, ", got ")
	if !ok {
		t.Fatalf("diff %q has no got side", d)
	}
	have, rest, haveEnd := diffSide(t, d, rest)
	if rest != "" || (wantEnd && haveEnd) {
		t.Fatalf("diff %q: bad shape", d)
	}
	for _, s := range []struct {
		shown, of []byte
		end       bool
	}{{want, expected, wantEnd}, {have, got, haveEnd}} {
		if s.end {
			continue
		}
		if n := utf8.RuneCount(s.shown); n > DiffWidth {
			t.Fatalf("diff %q shows %d characters of one side, at most %d", d, n, DiffWidth)
		}
		if !bytes.Contains(s.of, s.shown) {
			t.Fatalf("diff %q shows %q, which is not in %q", d, s.shown, s.of)
		}
	}
}

// diffSide reads one side of a diff: "the end of the output", or a quoted excerpt with
// "..." where it was cut.
func diffSide(t *testing.T, d, s string) (shown []byte, rest string, end bool) {
	t.Helper()
	if rest, ok := strings.CutPrefix(s, "the end of the output"); ok {
		return nil, rest, true
	}
	s = strings.TrimPrefix(s, "...")
	q, err := strconv.QuotedPrefix(s)
	if err != nil {
		t.Fatalf("diff %q: side %q is not quoted: %v", d, s, err)
	}
	u, err := strconv.Unquote(q)
	if err != nil {
		t.Fatal(err)
	}
	return []byte(u), strings.TrimPrefix(s[len(q):], "..."), false
}
