package docker

import (
	"bytes"
	"context"
	"fmt"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/docker/docker/api/types/container"
	"github.com/docker/docker/api/types/filters"
	"github.com/docker/docker/client"
	"github.com/docker/docker/pkg/stdcopy"

	"runbox/sandbox"
	"runbox/sandbox/sandboxtest"
)

// The benchmarks of issue 2 (docs/performance.md has the numbers and how to read them):
//
//	go test -run '^$' -bench . -benchtime 40x ./sandbox/docker/
//
// They need the daemon and the images, and skip with -short. They report latency
// percentiles (p50-ms, p95-ms) and throughput (programs/s) as metrics; they assert
// correct output, never a time.

var helloPrograms = map[string]string{
	"python": "print('hello, world')\n",
	"c":      "#include <stdio.h>\nint main(void){puts(\"hello, world\");return 0;}\n",
	// C++ the way judged programs are written: the whole library in one include.
	"cpp": "#include <bits/stdc++.h>\nusing namespace std;\nint main(){cout<<\"hello, world\"<<endl;}\n",
	// The languages of issue 10.
	"go":         "package main\n\nimport \"fmt\"\n\nfunc main() { fmt.Println(\"hello, world\") }\n",
	"java":       "public class Main { public static void main(String[] a) { System.out.println(\"hello, world\"); } }\n",
	"javascript": "console.log('hello, world');\n",
}

// BenchmarkRunnerHello is the latency of one hello-world program through the Runner with
// its warm pool (default size), one program at a time, each arriving when the pool is full:
// the pool's refill of the previous program's container is not on the clock, the
// program's own work is. Throughput below shows what happens when programs arrive faster.
func BenchmarkRunnerHello(b *testing.B) {
	for _, lang := range []string{"python", "c", "cpp", "go", "java", "javascript"} {
		b.Run(lang, func(b *testing.B) {
			r := newTestRunner(b, func(c *Config) { c.PoolSize = DefaultConfig().PoolSize; c.PoolStart = c.PoolSize })
			p := r.langs[lang].pool
			waitPool := func() {
				deadline := time.Now().Add(time.Minute)
				for p.idle() < r.cfg.PoolSize {
					if time.Now().After(deadline) {
						b.Fatalf("the %s pool did not fill within a minute", lang)
					}
					time.Sleep(5 * time.Millisecond)
				}
			}
			spec := sandboxtest.Program(lang, helloPrograms[lang])
			lat := make([]time.Duration, 0, b.N)
			inside := make([]time.Duration, 0, b.N)
			var compile, program []time.Duration
			settle(b, r)
			b.ResetTimer()
			for range b.N {
				b.StopTimer()
				waitPool()
				b.StartTimer()
				start := time.Now()
				res, err := r.Run(context.Background(), spec, nil)
				lat = append(lat, time.Since(start))
				if err != nil || res.Status != sandbox.StatusOK || string(res.Stdout) != "hello, world\n" {
					b.Fatalf("err %v\n%s", err, describe(res))
				}
				inside = append(inside, res.CompileTime+res.Time)
				if res.Trace != nil {
					compile = append(compile, res.Trace.Compile)
					program = append(program, res.Trace.Run)
				}
			}
			reportLatency(b, lat)
			// The Trace: the compile as the Runner saw it, and the program's own time.
			if len(compile) > 0 && compile[len(compile)/2] > 0 {
				b.ReportMetric(percentile(compile, 50), "compile-p50-ms")
			}
			if len(program) > 0 {
				b.ReportMetric(percentile(program, 50), "run-p50-ms")
			}
			// What runbox-init measured: compile and run wall time inside the sandbox. The
			// rest of the latency is the Runner's and the engine's.
			b.ReportMetric(percentile(inside, 50), "inside-p50-ms")
		})
	}
}

// BenchmarkPlainCycle is the same hello-world programs the way `docker run --rm` runs
// them, through the API: create a container with the same image and hardening, attach,
// start, wait for it to exit, remove it. No runbox-init: the image's interpreter or
// compiler is the container's command, the source is in its arguments.
func BenchmarkPlainCycle(b *testing.B) {
	for _, lang := range []string{"python", "c"} {
		b.Run(lang, func(b *testing.B) {
			pc := newPlainCycle(b, lang)
			lat := make([]time.Duration, 0, b.N)
			b.ResetTimer()
			for range b.N {
				start := time.Now()
				out, err := pc.run(context.Background())
				lat = append(lat, time.Since(start))
				if err != nil || out != "hello, world\n" {
					b.Fatalf("plain cycle: %v, output %q", err, out)
				}
			}
			reportLatency(b, lat)
		})
	}
}

// BenchmarkThroughput runs trivial Python programs from 4 concurrent callers, through the
// Runner (pool on, default size) and through the plain cycle, and reports programs/s
// and failures. At this rate the pool cannot keep ahead: both are bound by container churn.
func BenchmarkThroughput(b *testing.B) {
	const callers = 4
	run := func(b *testing.B, one func(context.Context) error) {
		b.ResetTimer()
		el, failures, err := concurrently(callers, b.N, one)
		b.StopTimer()
		b.ReportMetric(float64(b.N)/el.Seconds(), "programs/s")
		b.ReportMetric(float64(failures), "failures")
		if failures > 0 {
			b.Errorf("%d programs failed, the first: %v", failures, err)
		}
	}
	b.Run("runner", func(b *testing.B) {
		r := newTestRunner(b, func(c *Config) { c.PoolSize = DefaultConfig().PoolSize; c.PoolStart = c.PoolSize })
		settle(b, r)
		spec := sandboxtest.Program("python", helloPrograms["python"])
		run(b, func(ctx context.Context) error {
			res, err := r.Run(ctx, spec, nil)
			if err == nil && (res.Status != sandbox.StatusOK || string(res.Stdout) != "hello, world\n") {
				err = fmt.Errorf("status %s stdout %q", res.Status, res.Stdout)
			}
			return err
		})
	})
	b.Run("plain", func(b *testing.B) {
		pc := newPlainCycle(b, "python")
		run(b, func(ctx context.Context) error {
			out, err := pc.run(ctx)
			if err == nil && out != "hello, world\n" {
				err = fmt.Errorf("output %q", out)
			}
			return err
		})
	})
}

// settle waits, off the clock, until every warm pool of r is full and its containers
// have had the time to warm up: a new Runner's start (a few containers per language,
// each warming its toolchain up) is not what the benchmarks measure.
func settle(b *testing.B, r *Runner) {
	b.Helper()
	deadline := time.Now().Add(2 * time.Minute)
	for _, rt := range r.langs {
		for rt.pool != nil && rt.pool.idle() < r.cfg.PoolSize {
			if time.Now().After(deadline) {
				b.Fatalf("the %s pool did not fill within 2 minutes", rt.lang.Name)
			}
			time.Sleep(10 * time.Millisecond)
		}
	}
	time.Sleep(2 * time.Second)
}

func reportLatency(b *testing.B, lat []time.Duration) {
	b.StopTimer()
	if len(lat) == 0 {
		return
	}
	b.ReportMetric(percentile(lat, 50), "p50-ms")
	b.ReportMetric(percentile(lat, 95), "p95-ms")
}

// percentile is the p-th percentile (nearest rank) of d in milliseconds; it sorts d.
func percentile(d []time.Duration, p int) float64 {
	if len(d) == 0 {
		return 0
	}
	slices.Sort(d)
	i := (len(d)*p + 99) / 100
	return float64(d[max(i-1, 0)]) / float64(time.Millisecond)
}

// BenchmarkVersus makes the comparisons of issue 2 in one run, alternating the Runner and
// the plain cycle program by program (hello) or batch by batch (throughput), so that both
// see the same machine: on a machine shared with other work, separate benchmarks minutes
// apart compare different loads. It reports each side and the ratio.
func BenchmarkVersus(b *testing.B) {
	b.Run("hello", func(b *testing.B) {
		r := newTestRunner(b, func(c *Config) {
			c.PoolSize = DefaultConfig().PoolSize
			c.PoolStart = c.PoolSize
			c.Languages = []string{"python"}
		})
		p := r.langs["python"].pool
		pc := newPlainCycle(b, "python")
		spec := sandboxtest.Program("python", helloPrograms["python"])
		var runner, plain []time.Duration
		settle(b, r)
		b.ResetTimer()
		for range b.N {
			for p.idle() < r.cfg.PoolSize {
				time.Sleep(5 * time.Millisecond)
			}
			start := time.Now()
			res, err := r.Run(context.Background(), spec, nil)
			runner = append(runner, time.Since(start))
			if err != nil || string(res.Stdout) != "hello, world\n" {
				b.Fatalf("runner: %v\n%s", err, describe(res))
			}
			start = time.Now()
			out, err := pc.run(context.Background())
			plain = append(plain, time.Since(start))
			if err != nil || out != "hello, world\n" {
				b.Fatalf("plain cycle: %v, output %q", err, out)
			}
		}
		b.StopTimer()
		rp, pp := percentile(runner, 50), percentile(plain, 50)
		b.ReportMetric(rp, "runner-p50-ms")
		b.ReportMetric(percentile(runner, 95), "runner-p95-ms")
		b.ReportMetric(pp, "plain-p50-ms")
		b.ReportMetric(percentile(plain, 95), "plain-p95-ms")
		b.ReportMetric(pp/rp, "speedup-p50")
	})
	b.Run("throughput", func(b *testing.B) {
		const callers, batch = 4, 8
		r := newTestRunner(b, func(c *Config) {
			c.PoolSize = DefaultConfig().PoolSize
			c.PoolStart = c.PoolSize
			c.Languages = []string{"python"}
		})
		pc := newPlainCycle(b, "python")
		spec := sandboxtest.Program("python", helloPrograms["python"])
		runOne := func(ctx context.Context) error {
			res, err := r.Run(ctx, spec, nil)
			if err == nil && string(res.Stdout) != "hello, world\n" {
				err = fmt.Errorf("status %s stdout %q", res.Status, res.Stdout)
			}
			return err
		}
		plainOne := func(ctx context.Context) error {
			out, err := pc.run(ctx)
			if err == nil && out != "hello, world\n" {
				err = fmt.Errorf("output %q", out)
			}
			return err
		}
		var runnerTime, plainTime time.Duration
		var runnerN, plainN, failures int
		settle(b, r)
		b.ResetTimer()
		for done := 0; done < b.N; done += batch {
			n := min(batch, b.N-done)
			el, f, err := concurrently(callers, n, runOne)
			runnerTime, runnerN, failures = runnerTime+el, runnerN+n, failures+f
			if err != nil {
				b.Errorf("runner: %v", err)
			}
			el, f, err = concurrently(callers, n, plainOne)
			plainTime, plainN, failures = plainTime+el, plainN+n, failures+f
			if err != nil {
				b.Errorf("plain cycle: %v", err)
			}
		}
		b.StopTimer()
		rt, pt := float64(runnerN)/runnerTime.Seconds(), float64(plainN)/plainTime.Seconds()
		b.ReportMetric(rt, "runner-programs/s")
		b.ReportMetric(pt, "plain-programs/s")
		b.ReportMetric(rt/pt, "throughput-ratio")
		b.ReportMetric(float64(failures), "failures")
	})
}

// concurrently runs n calls of one from callers goroutines and returns the wall time, the
// number of failures and the first failure.
func concurrently(callers, n int, one func(context.Context) error) (time.Duration, int, error) {
	var next, failures atomic.Int64
	var wg sync.WaitGroup
	var mu sync.Mutex
	var first error
	start := time.Now()
	for range callers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for next.Add(1) <= int64(n) {
				if err := one(context.Background()); err != nil {
					failures.Add(1)
					mu.Lock()
					if first == nil {
						first = err
					}
					mu.Unlock()
				}
			}
		}()
	}
	wg.Wait()
	return time.Since(start), int(failures.Load()), first
}

// plainCycle runs one program per container, docker-run style.
type plainCycle struct {
	cli   *client.Client
	owner string
	cfg   *container.Config
	host  *container.HostConfig
}

func newPlainCycle(b *testing.B, lang string) *plainCycle {
	b.Helper()
	needDocker(b)
	cli, err := client.NewClientWithOpts(client.FromEnv, client.WithAPIVersionNegotiation())
	if err != nil {
		b.Fatal(err)
	}
	l, _ := sandbox.Lookup(lang)
	cfg := DefaultConfig()
	tag := cfg.ImageTag
	if t := testImageTag(); t != "" {
		tag = t
	}
	owner := "bench-plain-" + randomHex(3)
	c, h := containerConfig(l.Image+":"+tag, l, boxLimitsOf(cfg.Defaults, l.Compiled()), owner, "", time.Minute, waiting{})
	// The program is the container's command; stdout and stderr are attached, stdin is not.
	c.OpenStdin, c.StdinOnce, c.AttachStdin = false, false, false
	src := helloPrograms[lang]
	if lang == "python" {
		c.Entrypoint = []string{"python3", "-u", "-B", "-c", src}
	} else {
		script := fmt.Sprintf("printf '%%s' \"$SRC\" > %s && %s && %s", l.Source,
			strings.Join(l.Compile, " "), strings.Join(l.Run, " "))
		c.Entrypoint = []string{"/bin/sh", "-c", script}
		c.Env = []string{"SRC=" + src}
	}
	c.Cmd = nil
	pc := &plainCycle{cli: cli, owner: owner, cfg: c, host: h}
	b.Cleanup(func() {
		defer cli.Close()
		list, err := cli.ContainerList(context.Background(), container.ListOptions{All: true, Filters: filters.NewArgs(filters.Arg("label", LabelOwner+"="+owner))})
		if err == nil && len(list) > 0 {
			b.Errorf("%d plain-cycle containers left", len(list))
		}
	})
	return pc
}

// run is one docker-run: create, attach, wait (registered before start, as docker run
// does), start, read the output to its end, take the exit status, remove.
func (pc *plainCycle) run(ctx context.Context) (string, error) {
	created, err := pc.cli.ContainerCreate(ctx, pc.cfg, pc.host, nil, nil, "")
	if err != nil {
		return "", fmt.Errorf("create: %w", err)
	}
	defer pc.cli.ContainerRemove(context.WithoutCancel(ctx), created.ID, container.RemoveOptions{Force: true})
	att, err := pc.cli.ContainerAttach(ctx, created.ID, container.AttachOptions{Stream: true, Stdout: true, Stderr: true})
	if err != nil {
		return "", fmt.Errorf("attach: %w", err)
	}
	defer att.Close()
	waitC, errC := pc.cli.ContainerWait(ctx, created.ID, container.WaitConditionNextExit)
	if err := pc.cli.ContainerStart(ctx, created.ID, container.StartOptions{}); err != nil {
		return "", fmt.Errorf("start: %w", err)
	}
	var stdout, stderr bytes.Buffer
	if _, err := stdcopy.StdCopy(&stdout, &stderr, att.Reader); err != nil {
		return "", fmt.Errorf("read output: %w", err)
	}
	select {
	case w := <-waitC:
		if w.StatusCode != 0 {
			return stdout.String(), fmt.Errorf("exit %d: %s", w.StatusCode, stderr.String())
		}
	case err := <-errC:
		return "", fmt.Errorf("wait: %w", err)
	}
	return stdout.String(), nil
}
