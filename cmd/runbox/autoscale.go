package main

import (
	"context"
	"flag"
	"fmt"
	"log/slog"
	"net"
	"strings"
	"time"

	"runbox/sandbox"
	"runbox/scheduler"
	dockerprov "runbox/scheduler/docker"
	swarmprov "runbox/scheduler/swarm"
)

// autoscaleConfig is the master's autoscaling flags.
type autoscaleConfig struct {
	Mode        string // off, docker, swarm
	Min, Max    int
	Capacity    int
	CPUs        float64
	Memory      string
	Network     string
	Advertise   string
	Image       string
	IdleAfter   time.Duration
	Cluster     string
	DockerSock  string
	SlaveImages string
	JoinToken   string // file
	QueueWait   time.Duration
	Headroom    float64
}

func (c *autoscaleConfig) flags(fs *flag.FlagSet) {
	fs.StringVar(&c.Mode, "autoscale", "off", "start and stop slaves with the load: off, docker (containers on this engine) or swarm (service replicas)")
	fs.IntVar(&c.Min, "min-slaves", 0, "autoscaling: slaves kept even when idle")
	fs.IntVar(&c.Max, "max-slaves", 4, "autoscaling: most slaves started")
	fs.IntVar(&c.Capacity, "slave-capacity", 2, "autoscaling: --max-programs of each started slave")
	fs.Float64Var(&c.CPUs, "slave-cpus", 1, "autoscaling: CPU limit of each slave container, in cores (0: none)")
	fs.StringVar(&c.Memory, "slave-memory", "1GiB", "autoscaling: memory limit of each slave container (0: none)")
	fs.StringVar(&c.Network, "slave-network", "host", "autoscaling: Docker network the slaves join (host, or the master's network)")
	fs.StringVar(&c.Advertise, "advertise", "", "autoscaling: the address slaves dial to reach this master (default: 127.0.0.1 and the --listen port)")
	fs.StringVar(&c.Image, "slave-image", "runbox/server:latest", "autoscaling: the server image slaves run")
	fs.DurationVar(&c.IdleAfter, "slave-idle", 30*time.Second, "autoscaling: a slave idle this long is drained and stopped")
	fs.StringVar(&c.Cluster, "cluster", "", "autoscaling: label of this cluster's slave containers (default: the node name)")
	fs.StringVar(&c.DockerSock, "docker-socket", "/var/run/docker.sock", "autoscaling: the engine socket on the host, mounted into slaves")
	fs.StringVar(&c.SlaveImages, "slave-image-tag", "", "autoscaling: --image-tag passed to the slaves (default: the master's)")
	fs.DurationVar(&c.QueueWait, "scale-queue-wait", time.Second, "autoscaling: start a slave only once the oldest waiting job has waited this long (0: as soon as one waits)")
	fs.Float64Var(&c.Headroom, "scale-headroom", 25, "autoscaling with --autoscale docker (slaves on this engine): start a slave only while this percentage of the host's CPU is idle (0: whatever the CPU)")
	fs.StringVar(&c.JoinToken, "join-token-file", "", "file holding the slaves' join token, which this master admits even without --tokens and gives to the slaves it starts (default: DATA/join-token, made at the first start; without --data, one for this run)")
}

// startAutoscaler starts the autoscaler the flags ask for; stop waits for it.
// bound is the address the master listens on (its port is what slaves dial by default).
// creds are what the slaves get to join: the join token in their environment (or a Swarm
// secret), the CA certificate as a file; never in their arguments.
func startAutoscaler(ctx context.Context, cfg masterConfig, bound string, sched *scheduler.Scheduler, creds slaveCredentials, log *slog.Logger) (stop func(), err error) {
	a := cfg.Autoscale
	switch a.Mode {
	case "", "off":
		return func() {}, nil
	case "docker", "swarm":
	default:
		return nil, fmt.Errorf("--autoscale %q: want off, docker or swarm", a.Mode)
	}
	advertise := a.Advertise
	if advertise == "" {
		_, port, err := net.SplitHostPort(bound)
		if err != nil {
			return nil, fmt.Errorf("listen address %q: %v", bound, err)
		}
		advertise = net.JoinHostPort("127.0.0.1", port)
	}
	cluster := a.Cluster
	if cluster == "" {
		cluster = cfg.Node
	}
	var mem int64
	if a.Memory != "" && a.Memory != "0" {
		if mem, err = parseSize(a.Memory); err != nil {
			return nil, fmt.Errorf("--slave-memory: %v", err)
		}
	}
	tag := a.SlaveImages
	if tag == "" {
		tag = cfg.ImageTag
	}
	pcfg := dockerprov.DefaultConfig()
	pcfg.Host = cfg.DockerHost
	pcfg.Cluster = cluster
	pcfg.Image = a.Image
	pcfg.Network = a.Network
	pcfg.Master = advertise
	pcfg.Capacity = a.Capacity
	pcfg.CPUs = a.CPUs
	pcfg.Memory = mem
	pcfg.DockerSocket = a.DockerSock
	pcfg.Args = []string{"--image-tag", tag}
	pcfg.JoinToken, pcfg.CA = creds.Token, creds.CA
	if a.Mode == "docker" {
		// Slaves run as an unprivileged user in the socket's group; when this process
		// cannot see the socket (a remote engine), as root, still without capabilities.
		if pcfg.SocketGID, err = dockerprov.SocketGroup(a.DockerSock); err != nil {
			log.Warn("slaves run as root (without capabilities): the Docker socket's group is unknown", "component", "autoscaler", "err", err)
		}
	}
	var prov scheduler.Provisioner
	if a.Mode == "swarm" {
		// One Swarm service per slave, on any node of the swarm; --slave-network is "host"
		// or an overlay network the master is on, --advertise what slaves dial there.
		scfg := swarmprov.DefaultConfig()
		scfg.SlaveTemplate, scfg.Host = pcfg.SlaveTemplate, pcfg.Host
		sp, err := swarmprov.New(ctx, scfg)
		if err != nil {
			return nil, err
		}
		prov = sp
	} else {
		dp, err := dockerprov.New(pcfg)
		if err != nil {
			return nil, err
		}
		prov = dp
	}
	policy := scalePolicy(cfg)
	scaler, err := scheduler.NewAutoscaler(sched, prov, policy, strings.TrimSuffix(cluster, "-")+"-slave", log)
	if err != nil {
		return nil, err
	}
	ctx, cancel := context.WithCancel(ctx)
	done := make(chan struct{})
	go func() {
		defer close(done)
		if err := scaler.Run(ctx, 100*time.Millisecond); err != nil {
			log.Error("autoscaler stopped", "component", "autoscaler", "err", err)
		}
	}()
	log.Info("autoscaler on", "component", "autoscaler", "mode", a.Mode, "min", a.Min, "max", a.Max, "advertise", advertise, "network", a.Network,
		"queue_wait", a.QueueWait, "headroom", a.Headroom, "shared_engine", policy.SharedEngine)
	return func() { cancel(); <-done }, nil
}

// scalePolicy is the autoscaler's policy from the master's flags.
func scalePolicy(cfg masterConfig) scheduler.ScalePolicy {
	a := cfg.Autoscale
	policy := scheduler.DefaultScalePolicy()
	policy.MinSlaves, policy.MaxSlaves, policy.SlaveCapacity = a.Min, a.Max, a.Capacity
	policy.IdleAfter = a.IdleAfter
	policy.DownCooldown = min(policy.DownCooldown, a.IdleAfter)
	policy.CPUThreshold = cfg.CPUThreshold
	// Docker slaves run on this master's engine: they add slots, not cores.
	policy.QueueWait, policy.Headroom, policy.SharedEngine = a.QueueWait, a.Headroom, a.Mode == "docker"
	return policy
}

// parseSize reads a size such as 512MiB, 1GiB or plain bytes.
func parseSize(s string) (int64, error) { return sandbox.ParseSize(s) }
