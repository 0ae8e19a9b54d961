package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"maps"
	"net"
	"net/http"
	"net/netip"
	"os"
	"runtime"
	"slices"
	"strings"
	"time"

	"runbox/internal/clientconf"
	"runbox/monitor"
	"runbox/sandbox"
	"runbox/sandbox/docker"
	"runbox/sandbox/judge"
	"runbox/scheduler"
	"runbox/scheduler/bolt"
	"runbox/scheduler/psutil"
	"runbox/transport"
)

// masterConfig is `runbox master`'s flags.
type masterConfig struct {
	Listen       string
	HTTP         string
	Node         string
	MaxPrograms  int
	CPUThreshold float64
	Queue        int
	Data         string
	Heartbeat    time.Duration
	Retain       string        // size of finished jobs kept, in memory and in the journal
	RetainAge    time.Duration // age past which finished jobs are forgotten (0: none)
	MaxAttempts  int           // dispatches of a job before it ends as crashed_node
	Grace        time.Duration // added to a job's limits to make a dispatch's deadline
	Autoscale    autoscaleConfig
	Pool         int
	DockerHost   string
	ImageTag     string
	Runtime      string
	LogLevel     string
	TLSDir       string // security: see certs.go
	Tokens       string
	ConnsPerAddr int // connections from one IP address at once (0: the default)

	// The dashboard's token (see httpToken): a file, or $RUNBOX_HTTP_TOKEN; never a
	// flag's value, which every user of the machine sees in the process list.
	HTTPTokenFile string
	HTTPToken     string
}

func (c *masterConfig) flags(fs *flag.FlagSet) {
	fs.StringVar(&c.Listen, "listen", ":7700", "cluster protocol address (clients and slaves)")
	fs.StringVar(&c.HTTP, "http", "127.0.0.1:7780", "HTTP address of the dashboard, /metrics, /api/status, /healthz and /readyz: loopback unless told otherwise, e.g. :7780 (empty: off)")
	fs.StringVar(&c.HTTPTokenFile, "http-token-file", "", "file holding the token that the dashboard, /api/status, /events and /metrics require (default: $"+httpTokenEnv+"; neither: no token)")
	fs.StringVar(&c.Node, "node", "master", "this node's name, shown in results and status")
	fs.IntVar(&c.MaxPrograms, "max-programs", runtime.NumCPU(), "programs run at once on this machine's sandbox")
	fs.Float64Var(&c.CPUThreshold, "cpu-threshold", 80, "CPU percentage past which new programs go to slaves even with free slots (0: off)")
	fs.IntVar(&c.Queue, "queue", 100, "accepted programs that may wait for a slot; past it clients are told the server is busy")
	fs.StringVar(&c.Data, "data", "", "directory of the job journal; with it no accepted program is lost when the master dies (empty: memory only)")
	fs.DurationVar(&c.Heartbeat, "heartbeat-timeout", 3*time.Second, "a slave silent this long is lost and its programs run elsewhere")
	fs.StringVar(&c.Retain, "retain", "256MiB", "results of finished programs kept for clients that come back for them, in memory and again in the journal, oldest dropped first (their inputs are dropped at once)")
	fs.DurationVar(&c.RetainAge, "retain-age", 24*time.Hour, "finished programs older than this are forgotten (0: no age bound)")
	fs.IntVar(&c.MaxAttempts, "max-attempts", 3, "dispatches of a program whose node dies or hangs, or that was running when the master died, before it ends as crashed_node")
	fs.DurationVar(&c.Grace, "dispatch-grace", 30*time.Second, "added to a program's compile and run limits: a node with no answer by then loses it, and it runs again")
	c.Autoscale.flags(fs)
	fs.IntVar(&c.Pool, "pool", docker.DefaultConfig().PoolSize, "most warm sandbox containers kept ready per language: a pool grows to it with demand and shrinks when unused (0: none)")
	fs.StringVar(&c.DockerHost, "docker-host", "", "Docker engine address (default: $DOCKER_HOST or the local socket)")
	fs.StringVar(&c.ImageTag, "image-tag", "latest", "tag of the runtime images (runbox/runtime-LANG:TAG)")
	fs.StringVar(&c.Runtime, "runtime", "", "OCI runtime of the sandbox containers, e.g. runsc for gVisor when installed (default: the engine's)")
	fs.StringVar(&c.LogLevel, "log-level", "info", "debug, info, warn or error")
	fs.StringVar(&c.TLSDir, "tls-dir", "", "TLS directory made by 'runbox certs issue --role master': TLS 1.3 for every connection, slaves need a slave certificate or join token (empty: plaintext)")
	fs.IntVar(&c.ConnsPerAddr, "max-conns-per-address", transport.DefaultServerConfig().MaxConnsPerAddress, "connections from one IP address at once (clients and slaves); raise it for many users behind one NAT")
	fs.StringVar(&c.Tokens, "tokens", "", "tokens file: clients need a bearer token, with its limits (see 'runbox certs -h'; empty: no tokens)")
}

func newLogger(w io.Writer, level string) (*slog.Logger, error) {
	var l slog.Level
	if err := l.UnmarshalText([]byte(level)); err != nil {
		return nil, fmt.Errorf("bad --log-level %q: %v", level, err)
	}
	return slog.New(slog.NewTextHandler(w, &slog.HandlerOptions{Level: l})), nil
}

func runMaster(ctx context.Context, args []string, _ io.Reader, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("runbox master", flag.ContinueOnError)
	fs.SetOutput(stderr)
	var cfg masterConfig
	cfg.flags(fs)
	fs.Usage = func() {
		fmt.Fprintf(stderr, "Usage: runbox master [flags]\n\nRuns the master: accepts clients on --listen, runs up to --max-programs programs at\nonce in sandbox containers, queues up to --queue more, and answers busy past that.\n\nFlags:\n")
		fs.PrintDefaults()
	}
	if err := fs.Parse(args); err != nil {
		return exitUsage
	}
	if fs.NArg() > 0 {
		fmt.Fprintf(stderr, "runbox master: unexpected arguments %q\n", fs.Args())
		return exitUsage
	}
	log, err := newLogger(stderr, cfg.LogLevel)
	if err != nil {
		fmt.Fprintln(stderr, "runbox master:", err)
		return exitUsage
	}
	cfg.HTTPToken = os.Getenv(httpTokenEnv)
	if err := serveMaster(ctx, cfg, log, nil, nil); err != nil {
		log.Error("master stopped", "err", err)
		return exitUnavailable
	}
	return 0
}

// serveMaster runs a master until ctx ends. runner, when nil, is a Docker sandbox built
// from cfg; ready, when set, receives the bound cluster address once the master serves.
func serveMaster(ctx context.Context, cfg masterConfig, log *slog.Logger, runner sandbox.Runner, ready func(addr string)) error {
	// Listening comes first: the port is part of the sandbox owner's name.
	ln, err := net.Listen("tcp", cfg.Listen)
	if err != nil {
		return fmt.Errorf("listen %s: %w", cfg.Listen, err)
	}
	defer ln.Close() // on an early return; Shutdown closes it otherwise
	max := sandbox.MaxLimits()
	if runner == nil {
		// The owner label is the node name and the port: two masters on one engine never
		// reap each other's sandboxes, even with the same --node, and a master restarted
		// on its port removes what its previous run left.
		_, port, _ := net.SplitHostPort(ln.Addr().String())
		dr, err := newDockerRunner(ctx, cfg.Node+"-"+port, cfg.Pool, cfg.DockerHost, cfg.ImageTag, cfg.Runtime, log)
		if err != nil {
			return err
		}
		defer dr.Close()
		log.Info("sandbox ready", "component", "master", "languages", strings.Join(keys(dr.Images()), ","))
		runner, max = dr, docker.DefaultConfig().Max
	}
	if runner, err = withJudge(runner, cfg.MaxPrograms); err != nil {
		return err
	}

	scfg := scheduler.DefaultConfig()
	scfg.Node = cfg.Node
	scfg.MaxPrograms = cfg.MaxPrograms
	scfg.Queue = cfg.Queue
	scfg.CPUThreshold = cfg.CPUThreshold
	if cfg.Heartbeat > 0 {
		scfg.HeartbeatTimeout = cfg.Heartbeat
	}
	scfg.MaxLimits = max
	scfg.Logger = log
	retain := int64(scheduler.DefaultRetainBytes)
	if cfg.Retain != "" {
		if retain, err = parseSize(cfg.Retain); err != nil {
			return fmt.Errorf("--retain: %w", err)
		}
	}
	scfg.RetainBytes = retain
	scfg.RetainAge = cfg.RetainAge
	if cfg.MaxAttempts > 0 {
		scfg.MaxAttempts = cfg.MaxAttempts
	}
	if cfg.Grace > 0 {
		scfg.DispatchGrace = cfg.Grace
	}
	mcfg := monitor.DefaultConfig()
	mcfg.Title, mcfg.Logger = cfg.Node, log
	if mcfg.Token, err = httpToken(cfg); err != nil {
		return err
	}
	mon, err := monitor.New(mcfg, nil) // the scheduler is attached once it exists
	if err != nil {
		return err
	}
	scfg.Observer = mon
	mjcfg := scheduler.DefaultMemJournalConfig()
	mjcfg.RetainBytes, mjcfg.RetainAge = retain, cfg.RetainAge
	var journal scheduler.Journal
	if journal, err = scheduler.NewMemJournalWith(mjcfg); err != nil {
		return err
	}
	if cfg.Data != "" {
		bcfg := bolt.DefaultConfig(cfg.Data)
		bcfg.RetainBytes, bcfg.RetainAge, bcfg.Logger = retain, cfg.RetainAge, log
		bj, err := bolt.Open(bcfg)
		if err != nil {
			return err
		}
		journal = bj
	} else {
		log.Warn("no --data directory: accepted programs are lost if the master dies", "component", "master")
	}
	defer journal.Close()
	sched, err := scheduler.New(scfg, runner, journal)
	if err != nil {
		return err
	}
	defer sched.Close()
	stopLoad := reportLoad(ctx, psutil.New().Sample, sched.ReportLoad)
	defer stopLoad()

	tcfg := transport.DefaultServerConfig()
	tcfg.Node = cfg.Node
	tcfg.Logger = log
	tcfg.MuxLogger = muxLogger(log)
	if cfg.ConnsPerAddr > 0 {
		tcfg.MaxConnsPerAddress = cfg.ConnsPerAddr
	}
	if err := secureMaster(&tcfg, cfg.TLSDir, cfg.Tokens, log); err != nil {
		return err
	}
	creds, err := masterSlaveCredentials(cfg.Autoscale.JoinToken, cfg.Data, cfg.TLSDir, log)
	if err != nil {
		return err
	}
	tcfg.JoinTokens = creds.Store
	srv, err := transport.NewServer(tcfg, sched)
	if err != nil {
		return err
	}
	errc := make(chan error, 2)
	go func() { errc <- srv.Serve(ln) }()
	stopScaler, err := startAutoscaler(ctx, cfg, ln.Addr().String(), sched, creds, log)
	if err != nil {
		ln.Close()
		return err
	}
	defer stopScaler()

	var hsrv *http.Server
	var httpAddr string
	if cfg.HTTP != "" {
		hln, err := net.Listen("tcp", cfg.HTTP)
		if err != nil {
			ln.Close()
			return fmt.Errorf("listen http %s: %w", cfg.HTTP, err)
		}
		mon.Attach(sched)
		mctx, stopMon := context.WithCancel(ctx)
		monDone := make(chan struct{})
		go func() { defer close(monDone); mon.Run(mctx) }()
		defer func() { stopMon(); <-monDone }()
		hsrv = mon.Server()              // with the monitor's timeouts
		hsrv.RegisterOnShutdown(stopMon) // the dashboards' event streams end with the server
		go func() { errc <- hsrv.Serve(hln) }()
		httpAddr = hln.Addr().String()
		if mcfg.Token == "" && !isLoopback(hln.Addr()) {
			log.Warn("the dashboard, /api/status and /metrics are open to everyone on a non-loopback address: give a token (--http-token-file or $"+httpTokenEnv+")",
				"component", "master", "http", httpAddr)
		}
	}
	log.Info("master ready", "component", "master", "listen", ln.Addr().String(), "http", httpAddr,
		"max_programs", cfg.MaxPrograms, "queue", cfg.Queue)
	if ready != nil {
		ready(ln.Addr().String())
	}

	var serveErr error
	select {
	case <-ctx.Done():
	case serveErr = <-errc:
	}
	log.Info("master stopping", "component", "master")
	sctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	srv.Shutdown(sctx)
	if hsrv != nil {
		hsrv.Shutdown(sctx)
	}
	if errors.Is(serveErr, transport.ErrServerClosed) || errors.Is(serveErr, http.ErrServerClosed) {
		serveErr = nil
	}
	return serveErr
}

// httpTokenEnv names the environment variable of the dashboard's token.
const httpTokenEnv = "RUNBOX_HTTP_TOKEN"

// httpToken is the token of the dashboard and the HTTP API: the --http-token-file's line,
// else $RUNBOX_HTTP_TOKEN, else none.
func httpToken(cfg masterConfig) (string, error) {
	if cfg.HTTPTokenFile == "" {
		return cfg.HTTPToken, nil
	}
	tok, err := clientconf.ReadToken(cfg.HTTPTokenFile)
	if err != nil {
		return "", fmt.Errorf("--http-token-file: %w", err)
	}
	return tok, nil
}

// isLoopback says whether a listener's address is a loopback one (an unspecified
// address, 0.0.0.0 or ::, is every interface).
func isLoopback(a net.Addr) bool {
	ap, err := netip.ParseAddrPort(a.String())
	return err == nil && ap.Addr().IsLoopback()
}

// newDockerRunner is the Docker sandbox of a master or slave named node: its containers
// are labelled with owner runbox-NODE, so that each node reaps only its own leftovers.
func newDockerRunner(ctx context.Context, node string, pool int, host, tag, runtime string, log *slog.Logger) (*docker.Runner, error) {
	dcfg := docker.DefaultConfig()
	dcfg.Runtime = runtime
	dcfg.Host = host
	dcfg.Owner = "runbox-" + node
	dcfg.PoolSize = pool
	dcfg.ImageTag = tag
	dcfg.Logger = log
	return docker.New(ctx, dcfg)
}

// withJudge wraps a node's sandbox in the judge: a Spec with test cases is one job that
// compiles once and runs its cases in this node's sandboxes (sandbox/judge), at most
// maxPrograms of them at once (the node's own cap; at least 1).
func withJudge(r sandbox.Runner, maxPrograms int) (sandbox.Runner, error) {
	jcfg := judge.DefaultConfig()
	jcfg.Parallel = max(min(jcfg.Parallel, maxPrograms), 1)
	return judge.New(r, jcfg)
}

// reportLoad samples the load every second until ctx ends or the returned stop is
// called; stop waits for the sampling goroutine.
func reportLoad(ctx context.Context, sample func() scheduler.Load, report func(scheduler.Load)) (stop func()) {
	ctx, cancel := context.WithCancel(ctx)
	done := make(chan struct{})
	go func() {
		defer close(done)
		t := time.NewTicker(time.Second)
		defer t.Stop()
		for {
			select {
			case <-ctx.Done():
				return
			case <-t.C:
				report(sample())
			}
		}
	}()
	return func() { cancel(); <-done }
}

func keys(m map[string]string) []string { return slices.Sorted(maps.Keys(m)) }

// yamuxLogEnv, when set, sends the yamux sessions' own logs (keepalive failures, streams
// reset) to the process's log; they are discarded otherwise.
const yamuxLogEnv = "RUNBOX_YAMUX_LOG"

// muxLogger is the logger of the yamux sessions: log when $RUNBOX_YAMUX_LOG is set, else nil.
func muxLogger(log *slog.Logger) *slog.Logger {
	if os.Getenv(yamuxLogEnv) == "" {
		return nil
	}
	return log
}
