package sandbox

import (
	"fmt"
	"math"
	"strconv"
	"strings"
)

// sizeUnits are the multipliers of ParseSize, by the unit's first letter: all binary,
// as FormatSize prints them.
var sizeUnits = map[byte]float64{'k': 1 << 10, 'm': 1 << 20, 'g': 1 << 30, 't': 1 << 40, 'p': 1 << 50}

// ParseSize reads a size as people and FormatSize write it: a number of bytes, or a
// number (decimals allowed) and a binary unit, KiB, MiB, GiB, TiB or PiB, written also
// K, KB, M, MB... in any case, with or without a space before it ("128MiB", "1.5 GiB",
// "512k", "4096"). Every unit is binary: 1MB is 1 MiB, as memory sizes are meant. A
// negative, absurd or malformed size is an error, and so is a fraction of a byte without
// a unit; a fraction of a unit is rounded down to whole bytes.
func ParseSize(s string) (int64, error) {
	bad := fmt.Errorf("bad size %q: use e.g. 128MiB, 1GiB or plain bytes", s)
	num := strings.TrimRight(s, "bBiIkKmMgGtTpP")
	unit := strings.ToLower(s[len(num):])
	if unit != "" {
		num = strings.TrimSuffix(num, " ")
	}
	if num == "" || strings.TrimLeft(num, "0123456789.") != "" || strings.Count(num, ".") > 1 || num[0] == '.' || num[len(num)-1] == '.' {
		return 0, bad
	}
	mult := 1.0
	switch {
	case unit == "" || unit == "b":
	case len(unit) <= 3 && sizeUnits[unit[0]] > 0 && (unit[1:] == "" || unit[1:] == "b" || unit[1:] == "ib"):
		mult = sizeUnits[unit[0]]
	default:
		return 0, bad
	}
	if mult == 1 { // bytes: a whole number
		n, err := strconv.ParseInt(num, 10, 64)
		if err != nil {
			return 0, bad
		}
		return n, nil
	}
	f, err := strconv.ParseFloat(num, 64)
	if err != nil || f*mult >= math.MaxInt64 {
		return 0, bad
	}
	return int64(f * mult), nil
}
