package judge

import (
	"strings"
	"testing"

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
