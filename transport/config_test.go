package transport

import (
	"bytes"
	"go/ast"
	"go/parser"
	"go/token"
	"log/slog"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"runbox/sandbox/sandboxtest"
)

// Every Config: zero takes the default, a negative value is refused naming its field.
func TestClientAndSlaveConfigs(t *testing.T) {
	t.Parallel()
	if got, want := (ClientConfig{}).withDefaults(), DefaultClientConfig(); got.DialTimeout != want.DialTimeout ||
		got.KeepAlive != want.KeepAlive || got.Backoff != want.Backoff || got.MaxBackoff != want.MaxBackoff ||
		got.CancelGrace != want.CancelGrace || got.Role != RoleClient || got.Reconnect != 0 {
		t.Errorf("zero client config took %+v", got)
	}
	for name, set := range map[string]func(*ClientConfig){
		"DialTimeout": func(c *ClientConfig) { c.DialTimeout = -1 },
		"KeepAlive":   func(c *ClientConfig) { c.KeepAlive = -1 },
		"Reconnect":   func(c *ClientConfig) { c.Reconnect = -1 },
		"Backoff":     func(c *ClientConfig) { c.Backoff = -1 },
		"MaxBackoff":  func(c *ClientConfig) { c.MaxBackoff = -1 },
		"CancelGrace": func(c *ClientConfig) { c.CancelGrace = -1 },
		"Role":        func(c *ClientConfig) { c.Role = "admin" },
	} {
		cfg := DefaultClientConfig()
		set(&cfg)
		if err := cfg.Validate(); err == nil || !strings.Contains(err.Error(), name) {
			t.Errorf("client %s: %v", name, err)
		}
		if _, err := Dial(t.Context(), "127.0.0.1:1", cfg); err == nil || !strings.Contains(err.Error(), name) {
			t.Errorf("Dial with a bad %s: %v", name, err)
		}
	}

	sl := SlaveConfig{Master: "m:7700", Node: "n"}.withDefaults()
	def := DefaultSlaveConfig()
	if sl.Capacity != def.Capacity || sl.LoadInterval != def.LoadInterval || sl.FrameTimeout != def.FrameTimeout ||
		sl.Backoff != def.Backoff || sl.MaxBackoff != def.MaxBackoff || sl.Client.Role != RoleSlave || sl.Client.Name != "n" ||
		sl.Client.DialTimeout != DefaultClientConfig().DialTimeout {
		t.Errorf("zero slave config took %+v", sl)
	}
	for name, set := range map[string]func(*SlaveConfig){
		"Master":       func(c *SlaveConfig) { c.Master = "" },
		"Node":         func(c *SlaveConfig) { c.Node = "" },
		"Capacity":     func(c *SlaveConfig) { c.Capacity = -1 },
		"LoadInterval": func(c *SlaveConfig) { c.LoadInterval = -1 },
		"FrameTimeout": func(c *SlaveConfig) { c.FrameTimeout = -time.Second },
		"Backoff":      func(c *SlaveConfig) { c.Backoff = -1 },
		"KeepAlive":    func(c *SlaveConfig) { c.Client.KeepAlive = -1 },
	} {
		cfg := DefaultSlaveConfig()
		cfg.Master, cfg.Node = "m:7700", "n"
		set(&cfg)
		if err := cfg.Validate(); err == nil || !strings.Contains(err.Error(), name) {
			t.Errorf("slave %s: %v", name, err)
		}
		if _, err := NewSlave(cfg, &sandboxtest.Fake{}); err == nil {
			t.Errorf("NewSlave took a bad %s", name)
		}
	}

	for name, set := range map[string]func(*ServerConfig){
		"Node":           func(c *ServerConfig) { c.Node = "" },
		"ControlTimeout": func(c *ServerConfig) { c.ControlTimeout = -1 },
		"CancelGrace":    func(c *ServerConfig) { c.CancelGrace = -1 },
		"KeepAlive":      func(c *ServerConfig) { c.KeepAlive = -1 },
	} {
		cfg := DefaultServerConfig()
		set(&cfg)
		if err := cfg.Validate(); err == nil || !strings.Contains(err.Error(), name) {
			t.Errorf("server %s: %v", name, err)
		}
	}
	if got := (ServerConfig{Node: "m"}).withDefaults(); got.FirstFrameTimeout != DefaultServerConfig().FirstFrameTimeout ||
		got.ControlTimeout != DefaultServerConfig().ControlTimeout || got.CancelGrace != DefaultServerConfig().CancelGrace {
		t.Errorf("zero server timeouts took %+v", got)
	}
}

// yamux's own logs reach the MuxLogger through slog, at the level their prefix names, and
// are discarded without one.
func TestMuxLoggerIsSlog(t *testing.T) {
	t.Parallel()
	var buf bytes.Buffer
	log := slog.New(slog.NewTextHandler(&buf, &slog.HandlerOptions{Level: slog.LevelDebug}))
	cfg := ServerConfig{MuxLogger: log}.mux()
	cfg.Logger.Printf("[ERR] yamux: keepalive failed: %v", "i/o timeout")
	cfg.Logger.Println("[WARN] yamux: backlog exceeded")
	out := buf.String()
	for _, want := range []string{`level=ERROR msg="yamux: keepalive failed: i/o timeout" component=yamux`,
		`level=WARN msg="yamux: backlog exceeded" component=yamux`} {
		if !strings.Contains(out, want) {
			t.Errorf("log %q lacks %q", out, want)
		}
	}
	if cfg := (ClientConfig{}).mux(); cfg.LogOutput != nil || cfg.Logger == nil {
		t.Errorf("without a MuxLogger: LogOutput %v, Logger %v; want discarded through a logger", cfg.LogOutput, cfg.Logger)
	}
}

// The library reads no environment variable: cmd does, and sets Config fields.
func TestNoEnvironmentRead(t *testing.T) {
	t.Parallel()
	files, err := filepath.Glob("*.go")
	if err != nil {
		t.Fatal(err)
	}
	fset := token.NewFileSet()
	for _, name := range files {
		if strings.HasSuffix(name, "_test.go") {
			continue
		}
		f, err := parser.ParseFile(fset, name, nil, 0)
		if err != nil {
			t.Fatal(err)
		}
		ast.Inspect(f, func(n ast.Node) bool {
			sel, ok := n.(*ast.SelectorExpr)
			if !ok {
				return true
			}
			if id, isID := sel.X.(*ast.Ident); isID && id.Name == "os" &&
				(sel.Sel.Name == "Getenv" || sel.Sel.Name == "LookupEnv" || sel.Sel.Name == "Environ") {
				t.Errorf("%s: os.%s: read the environment in cmd, pass it in a Config", fset.Position(sel.Pos()), sel.Sel.Name)
			}
			return true
		})
	}
}
