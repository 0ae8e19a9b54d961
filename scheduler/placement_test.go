package scheduler

import (
	"testing"
)

func TestPlace(t *testing.T) {
	t.Parallel()
	local := func(run, capa int, cpu float64) Candidate {
		return Candidate{Local: true, Running: run, Capacity: capa, CPU: cpu, Eligible: true}
	}
	slave := func(run, capa int, cpu float64) Candidate {
		return Candidate{Running: run, Capacity: capa, CPU: cpu, Eligible: true}
	}
	ineligible := Candidate{Capacity: 10, Eligible: false}
	for _, c := range []struct {
		name      string
		cands     []Candidate
		threshold float64
		want      int
	}{
		{"local has room", []Candidate{local(0, 2, 10), slave(0, 4, 0)}, 80, 0},
		{"local full: least loaded slave", []Candidate{local(2, 2, 10), slave(3, 4, 0), slave(1, 4, 50)}, 80, 2},
		{"local cpu over threshold", []Candidate{local(0, 2, 95), slave(1, 4, 0)}, 80, 1},
		{"threshold 0 ignores cpu", []Candidate{local(0, 2, 100), slave(0, 4, 0)}, 0, 0},
		{"share beats cpu", []Candidate{local(2, 2, 0), slave(2, 4, 10), slave(1, 4, 90)}, 80, 2},
		{"equal share: lower cpu", []Candidate{local(2, 2, 0), slave(1, 4, 60), slave(1, 4, 20)}, 80, 2},
		{"equal everything: first", []Candidate{local(2, 2, 0), slave(1, 4, 20), slave(1, 4, 20)}, 80, 1},
		{"slaves full, hot local with room takes it", []Candidate{local(1, 2, 99), slave(4, 4, 0)}, 80, 0},
		{"everything full", []Candidate{local(2, 2, 0), slave(4, 4, 0)}, 80, -1},
		{"ineligible skipped", []Candidate{local(2, 2, 0), ineligible, slave(0, 1, 0)}, 80, 2},
		{"master with no slots", []Candidate{local(0, 0, 0), slave(0, 1, 0)}, 80, 1},
		{"nothing at all", nil, 80, -1},
	} {
		if got := Place(c.cands, 1, c.threshold); got != c.want {
			t.Errorf("%s: Place = %d, want %d", c.name, got, c.want)
		}
	}
}

func TestPlaceSlots(t *testing.T) {
	t.Parallel()
	local := func(run, capa int) Candidate {
		return Candidate{Local: true, Running: run, Capacity: capa, Eligible: true}
	}
	slave := func(run, capa int, cpu float64) Candidate {
		return Candidate{Running: run, Capacity: capa, CPU: cpu, Eligible: true}
	}
	for _, c := range []struct {
		name  string
		cands []Candidate
		need  int
		want  int
	}{
		{"fits the master", []Candidate{local(0, 4), slave(0, 4, 0)}, 4, 0},
		{"master has 2 free of 4: to a slave", []Candidate{local(2, 4), slave(0, 4, 0)}, 4, 1},
		{"slave with 3 free of 4 too small, empty one fits", []Candidate{local(4, 4), slave(1, 4, 0), slave(0, 4, 50)}, 4, 2},
		{"nothing free enough: wait", []Candidate{local(2, 4), slave(1, 4, 0)}, 4, -1},
		{"bigger than every node: an empty one", []Candidate{local(1, 2), slave(0, 2, 0)}, 4, 1},
		{"bigger than every node, none empty: wait", []Candidate{local(1, 2), slave(1, 2, 0)}, 4, -1},
		{"fitting beats oversize", []Candidate{local(0, 2), slave(0, 4, 90)}, 4, 1},
		{"oversize on the empty master", []Candidate{local(0, 2)}, 4, 0},
		{"capacity 0 never", []Candidate{local(0, 0)}, 1, -1},
		{"need 0 counts 1", []Candidate{local(1, 1), slave(0, 1, 0)}, 0, 1},
		{"draining never", []Candidate{{Capacity: 4, Eligible: false}}, 4, -1},
	} {
		if got := Place(c.cands, c.need, 0); got != c.want {
			t.Errorf("%s: Place = %d, want %d", c.name, got, c.want)
		}
	}
}
