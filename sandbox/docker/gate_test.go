package docker

import (
	"context"
	"encoding/json"
	"io"
	"net"
	"slices"
	"sync"
	"testing"

	"github.com/docker/docker/pkg/stdcopy"

	"runbox/sandbox"
	"runbox/sandbox/boxinit"
	"runbox/sandbox/sandboxtest"
)

// gated plays a container whose runbox-init honours the gate: it reads the request, and
// when the request asks for a gate, says so and waits for the go before it answers.
// It records the requests it got.
type gated struct {
	mu   sync.Mutex
	reqs []boxinit.Request
}

func (g *gated) serve(c net.Conn) {
	w := stdcopy.NewStdWriter(c, stdcopy.Stdout)
	req, ok := readRequest(c)
	if !ok {
		return
	}
	g.mu.Lock()
	g.reqs = append(g.reqs, req)
	g.mu.Unlock()
	if req.Gate {
		boxinit.WriteFrame(w, boxinit.FrameGate, nil)
		for {
			typ, _, err := boxinit.ReadFrame(c, boxinit.MaxFrame)
			if err != nil {
				return
			}
			if typ == boxinit.FrameGo {
				break
			}
		}
	}
	go io.Copy(io.Discard, c)
	w.Write(frame(boxinit.FrameStarted, ""))
	w.Write(resultFrame(okResult))
}

// readRequest reads the request a played container gets first.
func readRequest(c net.Conn) (boxinit.Request, bool) {
	var req boxinit.Request
	typ, p, err := boxinit.ReadFrame(c, boxinit.MaxFrame)
	if err != nil || typ != boxinit.FrameRequest {
		return req, false
	}
	return req, json.Unmarshal(p, &req) == nil
}

// The compile phase has its own memory limit: a program that compiles gets a container
// with CompileMemory (or its Memory, when larger), and the Runner sets the program's
// Memory at runbox-init's gate, before the run phase. A program that does not compile
// can take a pooled box of another memory limit: the gate sets its own.
func TestCompileMemoryThenProgramMemory(t *testing.T) {
	t.Parallel()
	f := newFakeEngine()
	g := &gated{}
	f.serve = g.serve
	f.created = make(chan string, 16)
	r, _ := newFakeRunner(t, f, nil)
	def := r.cfg.Defaults
	for _, c := range []struct {
		name   string
		spec   sandbox.Spec
		memory []int64 // at create, then at the gate
		gate   bool
	}{
		{"c, default limits", sandboxtest.Program("c", "int main(void){return 0;}"), []int64{def.CompileMemory, def.Memory}, true},
		{"c, 128 MiB", withMemory(sandboxtest.Program("c", "int main(void){return 0;}"), 128<<20), []int64{def.CompileMemory, 128 << 20}, true},
		{"c, more memory than the compiler's", withMemory(sandboxtest.Program("c", "int main(void){return 0;}"), def.CompileMemory+1<<20), []int64{def.CompileMemory + 1<<20}, false},
		{"python", sandboxtest.Program("python", "print(1)"), []int64{def.Memory}, false},
	} {
		res, err := r.Run(context.Background(), c.spec, nil)
		if err != nil || res.Status != sandbox.StatusOK {
			t.Errorf("%s: %v %+v", c.name, err, res)
			continue
		}
		id := <-f.created
		if got := f.memoryOf(id); !slices.Equal(got, c.memory) {
			t.Errorf("%s: memory limits %v, want %v", c.name, got, c.memory)
		}
		g.mu.Lock()
		req := g.reqs[len(g.reqs)-1]
		g.mu.Unlock()
		if req.Gate != c.gate {
			t.Errorf("%s: gate %v, want %v", c.name, req.Gate, c.gate)
		}
	}
}

func withMemory(s sandbox.Spec, m int64) sandbox.Spec {
	s.Limits.Memory = m
	return s
}
