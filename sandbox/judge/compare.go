package judge

import (
	"bytes"
	"fmt"
	"strconv"
	"unicode/utf8"

	"runbox/sandbox"
)

// Equal reports whether got passes for expected under mode (empty: sandbox.CompareTrim).
func Equal(mode sandbox.Compare, expected, got []byte) bool {
	return Diff(mode, expected, got) == ""
}

// Diff describes the first difference between expected and got under mode, in one short
// line ("line 3: expected \"5\", got \"6\""); "" when they match. Each side is cut to a
// window of at most DiffWidth characters around the first differing character. The bytes
// may be anything: a character is a UTF-8 encoded rune or, where the bytes are not UTF-8,
// one byte, which the quoting shows as \xNN.
func Diff(mode sandbox.Compare, expected, got []byte) string {
	unit := "line"
	var want, have [][]byte
	switch mode {
	case sandbox.CompareExact:
		if bytes.Equal(expected, got) {
			return ""
		}
		want, have = splitLines(expected), splitLines(got)
	case sandbox.CompareTokens:
		unit = "token"
		want, have = bytes.Fields(expected), bytes.Fields(got)
	default:
		want, have = trimmedLines(expected), trimmedLines(got)
	}
	for i := 0; i < max(len(want), len(have)); i++ {
		switch {
		case i >= len(want):
			return fmt.Sprintf("%s %d: expected the end of the output, got %s", unit, i+1, excerpt(have[i], 0))
		case i >= len(have):
			return fmt.Sprintf("%s %d: expected %s, got the end of the output", unit, i+1, excerpt(want[i], 0))
		case !bytes.Equal(want[i], have[i]):
			col := commonPrefix(want[i], have[i])
			where := fmt.Sprintf("%s %d", unit, i+1)
			if n := utf8.RuneCount(want[i][:col]); n > DiffWidth/2 {
				where += fmt.Sprintf(", column %d", n+1)
			}
			return fmt.Sprintf("%s: expected %s, got %s", where, excerpt(want[i], col), excerpt(have[i], col))
		}
	}
	if mode == sandbox.CompareExact { // same pieces, different bytes: cannot happen
		return "the output differs"
	}
	return ""
}

// DiffWidth is how many characters of each side a Diff shows at most.
const DiffWidth = 60

// splitLines cuts b after each newline; the last line may lack one.
func splitLines(b []byte) [][]byte {
	lines := bytes.SplitAfter(b, []byte("\n"))
	if len(lines[len(lines)-1]) == 0 {
		lines = lines[:len(lines)-1]
	}
	return lines
}

// trimmedLines cuts b into lines, drops each line's trailing blanks (spaces, tabs,
// carriage returns, form feeds, vertical tabs) and the trailing empty lines.
func trimmedLines(b []byte) [][]byte {
	lines := bytes.Split(b, []byte("\n"))
	for i, l := range lines {
		lines[i] = bytes.TrimRight(l, " \t\r\f\v")
	}
	for len(lines) > 0 && len(lines[len(lines)-1]) == 0 {
		lines = lines[:len(lines)-1]
	}
	return lines
}

// commonPrefix returns the byte offset in a of its first character (decoded from the
// start of a) that b does not have at the same offset: a multi-byte character that
// differs in its last byte is shown whole.
func commonPrefix(a, b []byte) int {
	n := 0
	for n < len(a) && n < len(b) {
		_, w := utf8.DecodeRune(a[n:])
		if n+w > len(b) || !bytes.Equal(a[n:n+w], b[n:n+w]) {
			break
		}
		n += w
	}
	return n
}

// excerpt quotes at most DiffWidth characters of b: from a little before col (a byte
// offset, at most len(b)) when col is far in, with "..." where it was cut.
func excerpt(b []byte, col int) string {
	start := 0
	if n := utf8.RuneCount(b[:col]); n > DiffWidth/2 {
		start = skip(b, 0, n-DiffWidth/4)
	}
	end := skip(b, start, DiffWidth)
	s := strconv.Quote(string(b[start:end]))
	if start > 0 {
		s = "..." + s
	}
	if end < len(b) {
		s += "..."
	}
	return s
}

// skip returns the offset n characters after from in b, or len(b).
func skip(b []byte, from, n int) int {
	for ; n > 0 && from < len(b); n-- {
		_, w := utf8.DecodeRune(b[from:])
		from += w
	}
	return from
}
