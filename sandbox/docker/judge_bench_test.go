package docker

import (
	"context"
	"sync"
	"testing"
	"time"

	"runbox/sandbox"
)

// BenchmarkJudge20 is issue 10's measure: 20 test cases of a C program, judged
// (compiled once, each case run from the artefact in a fresh container) against the
// same 20 cases each submitted as a full Spec (compiled in every case's container), both
// with 2 cases at once over a warm pool of 2, in one run:
//
//	go test -run '^$' -bench Judge20 -benchtime 3x ./sandbox/docker/
//
// It reports each way's wall time per 20 cases (once-s, per-case-s) and per-case/once.
func BenchmarkJudge20(b *testing.B) {
	const parallel = 2
	r := newTestRunner(b, func(c *Config) { c.Languages = []string{"c"}; c.PoolSize, c.PoolStart = parallel, parallel })
	j := newJudge(b, r, parallel)
	tests := doubleCases(20)
	spec := judgedSpec("c", doubleC, tests)
	ctx := context.Background()

	once := func() {
		res, err := j.Run(ctx, spec, nil)
		if err != nil || res.Verdict != sandbox.VerdictAccepted {
			b.Fatalf("judged: %v %s %s", err, res.Verdict, res.Message)
		}
	}
	perCase := func() {
		var wg sync.WaitGroup
		sem := make(chan struct{}, parallel)
		for _, tc := range tests {
			wg.Add(1)
			sem <- struct{}{}
			go func() {
				defer wg.Done()
				defer func() { <-sem }()
				one := judgedSpec("c", doubleC, nil)
				one.Stdin = tc.Stdin
				res, err := r.Run(ctx, one, nil)
				if err != nil || res.Status != sandbox.StatusOK || string(res.Stdout) != string(tc.Expected) {
					b.Errorf("case %s: %v %+v", tc.Name, err, res)
				}
			}()
		}
		wg.Wait()
	}
	settle(b, r)
	once() // the first compile warms the file cache: not on the clock
	var tOnce, tPer time.Duration
	b.ResetTimer()
	for i := range b.N {
		// Alternate the order so that neither way always follows the other's pool drain.
		ways := []func(){once, perCase}
		spent := []*time.Duration{&tOnce, &tPer}
		if i%2 == 1 {
			ways, spent = []func(){perCase, once}, []*time.Duration{&tPer, &tOnce}
		}
		for k, way := range ways {
			settleQuick(r)
			start := time.Now()
			way()
			*spent[k] += time.Since(start)
		}
	}
	b.StopTimer()
	n := float64(b.N)
	b.ReportMetric(tOnce.Seconds()/n, "once-s")
	b.ReportMetric(tPer.Seconds()/n, "per-case-s")
	b.ReportMetric(tPer.Seconds()/tOnce.Seconds(), "per-case/once")
}

// settleQuick waits, up to 30 s, until r's pools are full again.
func settleQuick(r *Runner) {
	deadline := time.Now().Add(30 * time.Second)
	for _, rt := range r.langs {
		for rt.pool != nil && rt.pool.idle() < r.cfg.PoolSize && time.Now().Before(deadline) {
			time.Sleep(10 * time.Millisecond)
		}
	}
}
