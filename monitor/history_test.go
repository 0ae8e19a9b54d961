package monitor

import (
	"testing"
	"time"

	"runbox/scheduler"
)

// clockSource is a scheduler whose totals and nodes the test moves along.
type clockSource struct{ snap scheduler.Snapshot }

func (c *clockSource) Snapshot(int) scheduler.Snapshot { return c.snap }

func TestHistoryTrimming(t *testing.T) {
	t.Parallel()
	cfg := DefaultConfig()
	cfg.Interval, cfg.History = time.Second, 10*time.Second
	src := &clockSource{snap: scheduler.Snapshot{Nodes: []scheduler.NodeInfo{{Name: "m1", State: scheduler.NodeReady, Capacity: 1}}}}
	m, err := New(cfg, src)
	if err != nil {
		t.Fatal(err)
	}
	start := time.Unix(1_700_000_000, 0)
	var now time.Time
	for i := range 30 {
		now = start.Add(time.Duration(i) * time.Second)
		m.sample(now)
	}
	h := m.History()
	// The samples of 19 s .. 29 s are within 10 s of the last one (19 s is exactly 10 s back).
	if len(h) != 11 {
		t.Fatalf("%d samples kept, want 11 (the last 10 s, both ends included)", len(h))
	}
	if first, last := h[0].At, h[len(h)-1].At; first != now.Add(-10*time.Second).UnixMilli() || last != now.UnixMilli() {
		t.Errorf("history from %d to %d, want %d to %d", first, last, now.Add(-10*time.Second).UnixMilli(), now.UnixMilli())
	}

	// A node that left keeps its samples until they age out; then it is gone.
	src.snap.Nodes = []scheduler.NodeInfo{{Name: "s2", State: scheduler.NodeReady, Capacity: 2}}
	for i := range 5 {
		m.sample(now.Add(time.Duration(i+1) * time.Second))
	}
	if _, ok := m.History()[0].Nodes["m1"]; !ok {
		t.Error("the node that left lost its recent samples")
	}
	for i := range 20 {
		m.sample(now.Add(time.Duration(i+6) * time.Second))
	}
	for _, s := range m.History() {
		if _, ok := s.Nodes["m1"]; ok {
			t.Fatalf("sample at %d still has the node that left 25 s ago", s.At)
		}
	}

	// An hour of sampling keeps the memory bounded.
	for i := range 3600 {
		m.sample(now.Add(time.Duration(i+30) * time.Second))
	}
	m.mu.Lock()
	n, c := len(m.history), cap(m.history)
	m.mu.Unlock()
	if n != 11 || c > 2*n+64 {
		t.Errorf("after 3600 samples: len %d cap %d, want 11 and a small backing array", n, c)
	}
}

func TestRatesOverTheLastMinute(t *testing.T) {
	t.Parallel()
	cfg := DefaultConfig()
	src := &clockSource{}
	m, err := New(cfg, src)
	if err != nil {
		t.Fatal(err)
	}
	start := time.Unix(1_700_000_000, 0)
	// 2 jobs a second for 2 minutes, one busy rejection every 4 seconds.
	var now time.Time
	for i := 0; i <= 120; i++ {
		now = start.Add(time.Duration(i) * time.Second)
		src.snap.Totals = scheduler.Totals{Finished: 2 * i, Accepted: 2 * i, Rejected: i / 4}
		m.sample(now)
	}
	m.now = func() time.Time { return now }
	r := m.view().Rates
	if r.Window != 60 || r.Finished != 2 || r.Accepted != 2 || r.Rejected != 0.25 {
		t.Errorf("rates %+v, want a 60 s window, 2/s finished and accepted, 0.25/s rejected", r)
	}

	// Less than a second of history: no rate yet rather than a wild one.
	m2, _ := New(cfg, src)
	m2.sample(now)
	m2.now = func() time.Time { return now.Add(500 * time.Millisecond) }
	if r := m2.view().Rates; r != (Rates{}) {
		t.Errorf("rates after half a second: %+v, want none", r)
	}
}
