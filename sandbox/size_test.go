package sandbox

import (
	"testing"
)

func TestParseSize(t *testing.T) {
	t.Parallel()
	for in, want := range map[string]int64{
		"0": 0, "4096": 4096, "512B": 512, "1KiB": KiB, "64k": 64 * KiB, "64KB": 64 * KiB,
		"128MiB": 128 * MiB, "128mib": 128 * MiB, "128M": 128 * MiB, "128MB": 128 * MiB, "128 MiB": 128 * MiB,
		"1GiB": GiB, "1.5GiB": GiB + GiB/2, "2g": 2 * GiB, "1TiB": 1 << 40, "1PiB": 1 << 50,
		"9223372036854775807": 1<<63 - 1,
	} {
		got, err := ParseSize(in)
		if err != nil || got != want {
			t.Errorf("ParseSize(%q) = %d, %v; want %d", in, got, err, want)
		}
	}
	for _, in := range []string{"", " ", "MiB", "-1", "-1MiB", "1.5", ".5MiB", "5.MiB", "1..5MiB", "1e3", "0x10", "12 ", " 12",
		"1XiB", "1KiBB", "1ib", "1 2MiB", "1  MiB", "9223372036854775808", "9000000PiB", "1,5MiB", "１MiB"} {
		if got, err := ParseSize(in); err == nil {
			t.Errorf("ParseSize(%q) = %d, want an error", in, got)
		}
	}
}

// What FormatSize prints, ParseSize reads back (exactly, for whole units).
func TestParseSizeReadsFormatSize(t *testing.T) {
	t.Parallel()
	for _, n := range []int64{0, 1, 512, KiB, 64 * KiB, MiB, 256 * MiB, GiB, 2 * GiB, 1 << 40} {
		got, err := ParseSize(FormatSize(n))
		if err != nil || got != n {
			t.Errorf("ParseSize(FormatSize(%d) = %q) = %d, %v", n, FormatSize(n), got, err)
		}
	}
}

func FuzzParseSize(f *testing.F) {
	for _, s := range []string{"128MiB", "1.5 GiB", "4096", "-1", "1e3", "9000000PiB"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		n, err := ParseSize(s)
		if err == nil && n < 0 {
			t.Errorf("ParseSize(%q) = %d: negative", s, n)
		}
	})
}
