package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"runtime"

	"runbox/internal/clientconf"
	"runbox/sandbox"
	"runbox/sandbox/docker"
	"runbox/scheduler/psutil"
	"runbox/transport"
)

// slaveConfig is `runbox slave`'s flags.
type slaveConfig struct {
	Master      string
	Node        string
	MaxPrograms int
	Pool        int
	Token       string
	TokenFile   string
	DockerHost  string
	ImageTag    string
	Runtime     string
	LogLevel    string
	TLSDir      string // security: see certs.go
	TLSCA       string
}

func runSlave(ctx context.Context, args []string, _ io.Reader, _, stderr io.Writer) int {
	fs := flag.NewFlagSet("runbox slave", flag.ContinueOnError)
	fs.SetOutput(stderr)
	node := os.Getenv("RUNBOX_NODE") // set per task by a Swarm service: {{.Service.Name}}-{{.Task.Slot}}
	if node == "" {
		node, _ = os.Hostname()
	}
	var cfg slaveConfig
	fs.StringVar(&cfg.Master, "master", os.Getenv("RUNBOX_MASTER"), "master address HOST:PORT (default from $RUNBOX_MASTER)")
	fs.StringVar(&cfg.Node, "node", node, "this slave's name in the cluster, unique (default from $RUNBOX_NODE, else the hostname)")
	fs.IntVar(&cfg.MaxPrograms, "max-programs", runtime.NumCPU(), "programs run at once on this slave")
	fs.IntVar(&cfg.Pool, "pool", docker.DefaultConfig().PoolSize, "most warm sandbox containers kept ready per language: a pool grows to it with demand and shrinks when unused (0: none)")
	fs.StringVar(&cfg.Token, "token", os.Getenv("RUNBOX_TOKEN"), "join token of a secured cluster (default from $RUNBOX_TOKEN; --token-file keeps it out of ps)")
	fs.StringVar(&cfg.TokenFile, "token-file", os.Getenv("RUNBOX_TOKEN_FILE"), "file holding the join token, e.g. a Docker secret (default from $RUNBOX_TOKEN_FILE)")
	fs.StringVar(&cfg.DockerHost, "docker-host", "", "Docker engine address (default: $DOCKER_HOST or the local socket)")
	fs.StringVar(&cfg.ImageTag, "image-tag", "latest", "tag of the runtime images (runbox/runtime-LANG:TAG)")
	fs.StringVar(&cfg.Runtime, "runtime", "", "OCI runtime of the sandbox containers, e.g. runsc for gVisor when installed (default: the engine's)")
	fs.StringVar(&cfg.LogLevel, "log-level", "info", "debug, info, warn or error")
	fs.StringVar(&cfg.TLSDir, "tls-dir", os.Getenv("RUNBOX_TLS_DIR"), "TLS directory made by 'runbox certs issue --role slave': TLS to the master with this slave's certificate (default from $RUNBOX_TLS_DIR)")
	fs.StringVar(&cfg.TLSCA, "tls-ca", os.Getenv("RUNBOX_TLS_CA"), "CA certificate of a TLS cluster, for a slave joining with a --token instead of a certificate (default from $RUNBOX_TLS_CA)")
	fs.Usage = func() {
		fmt.Fprintf(stderr, "Usage: runbox slave --master HOST:PORT [flags]\n\nRuns a slave: it dials the master (no inbound port needed), registers, reports its load\nevery second and runs the programs the master delegates to it in its own sandbox\ncontainers. It reconnects when the master goes away; on SIGTERM it finishes what it\nruns, then leaves.\n\nFlags:\n")
		fs.PrintDefaults()
	}
	if err := fs.Parse(args); err != nil {
		return exitUsage
	}
	if cfg.Master == "" || fs.NArg() > 0 || cfg.MaxPrograms < 1 {
		fmt.Fprintln(stderr, "runbox slave: --master HOST:PORT and --max-programs of at least 1 are needed; see runbox slave -h")
		return exitUsage
	}
	log, err := newLogger(stderr, cfg.LogLevel)
	if err != nil {
		fmt.Fprintln(stderr, "runbox slave:", err)
		return exitUsage
	}
	if cfg.Token, err = slaveToken(cfg.Token, cfg.TokenFile); err != nil {
		fmt.Fprintln(stderr, "runbox slave:", err)
		return exitUsage
	}
	if err := serveSlave(ctx, cfg, log, nil); err != nil {
		log.Error("slave stopped", "err", err)
		return exitCodeOf(err)
	}
	return 0
}

// slaveToken is the join token of --token or of --token-file (one of them at most).
func slaveToken(token, file string) (string, error) {
	switch {
	case file == "":
		return token, nil
	case token != "":
		return "", errors.New("give the join token with --token ($RUNBOX_TOKEN) or --token-file ($RUNBOX_TOKEN_FILE), not both")
	}
	tok, err := clientconf.ReadToken(file)
	if err != nil {
		return "", fmt.Errorf("--token-file: %w", err)
	}
	return tok, nil
}

// serveSlave runs a slave until ctx ends; runner nil means the Docker sandbox.
func serveSlave(ctx context.Context, cfg slaveConfig, log *slog.Logger, runner sandbox.Runner) error {
	langs := map[string]string{}
	if runner == nil {
		dr, err := newDockerRunner(ctx, cfg.Node, cfg.Pool, cfg.DockerHost, cfg.ImageTag, cfg.Runtime, log)
		if err != nil {
			return err
		}
		defer dr.Close()
		runner, langs = dr, dr.Images()
	}
	runner, err := withJudge(runner, cfg.MaxPrograms)
	if err != nil {
		return err
	}
	ccfg := transport.DefaultClientConfig()
	ccfg.Token = cfg.Token
	ccfg.MuxLogger = muxLogger(log)
	tlsCfg, err := slaveTLS(cfg.TLSDir, cfg.TLSCA)
	if err != nil {
		return err
	}
	ccfg.TLS = tlsCfg
	sampler := psutil.New()
	sl, err := transport.NewSlave(transport.SlaveConfig{
		Master: cfg.Master, Node: cfg.Node, Capacity: cfg.MaxPrograms, Languages: langs,
		Client: ccfg, Load: sampler.Sample, Logger: log,
	}, runner)
	if err != nil {
		return err
	}
	log.Info("slave starting", "component", "slave", "node", cfg.Node, "master", cfg.Master, "max_programs", cfg.MaxPrograms)
	return sl.Run(ctx)
}
