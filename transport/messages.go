package transport

import (
	"time"

	"runbox/sandbox"
)

// Hello is the client's handshake: who it is and its credentials.
type Hello struct {
	// Role is "client" or "slave".
	Role string `json:"role"`
	// Name identifies the peer in logs (a slave's node name).
	Name string `json:"name,omitempty"`
	// Token is a bearer token; empty when the server needs none.
	Token string `json:"token,omitempty"`
}

// Roles.
const (
	RoleClient = "client"
	RoleSlave  = "slave"
)

// Welcome is the server's handshake answer.
type Welcome struct {
	Version int    `json:"version"`
	Node    string `json:"node"`
}

// Submit asks to run a program. Interactive jobs take 'I' frames as live stdin until 'D'.
type Submit struct {
	Spec        sandbox.Spec `json:"spec"`
	Interactive bool         `json:"interactive,omitempty"`
}

// Wait resumes watching a job: the server replays its events from index From when Epoch
// is its own, else from the first (the master restarted and the job's log began again).
type Wait struct {
	ID    string `json:"id"`
	From  int    `json:"from"`
	Epoch string `json:"epoch,omitempty"`
}

// Cancel cancels a job by id from another stream or connection.
type Cancel struct {
	ID string `json:"id"`
}

// Accepted carries the job's id: from then on the job is journaled and will run. Epoch
// names the master's run, for resuming (see Wait).
type Accepted struct {
	ID    string `json:"id"`
	Epoch string `json:"epoch,omitempty"`
}

// Queued tells the job's 1-based position in the queue.
type Queued struct {
	Position int `json:"position"`
}

// Started tells where the job runs. A job whose node was lost starts again: output
// received before a Started frame belongs to an abandoned attempt.
type Started struct {
	Node string `json:"node"`
}

// Error is a refusal or a job that could not run.
type Error struct {
	Code    string `json:"code"`
	Message string `json:"message"`
}

// Result ends a job. The output is not repeated: it arrived in the 'O', 'E', 'C' frames.
type Result struct {
	Status      sandbox.Status `json:"status"`
	ExitCode    int            `json:"exit_code"`
	Signal      string         `json:"signal,omitempty"`
	Time        time.Duration  `json:"time_ns"`
	CPUTime     time.Duration  `json:"cpu_time_ns"`
	CompileTime time.Duration  `json:"compile_time_ns"`
	Memory      int64          `json:"memory_bytes"`
	Message     string         `json:"message,omitempty"`
	Node        string         `json:"node,omitempty"`
	Attempts    int            `json:"attempts,omitempty"`
	// Verdict and Cases end a judged job (a Spec with tests); absent otherwise.
	Verdict sandbox.Verdict `json:"verdict,omitempty"`
	Cases   []Case          `json:"cases,omitempty"`
	// Trace says where the job's time went, phase by phase (sandbox.Trace); absent when
	// not measured.
	Trace *sandbox.Trace `json:"trace,omitempty"`
}

// Case is one test case's result in a judged job's Result: sandbox.CaseResult's fields, in
// its order (so that each converts to the other), under the wire's names.
type Case struct {
	Name     string          `json:"name"`
	Verdict  sandbox.Verdict `json:"verdict"`
	ExitCode int             `json:"exit_code"`
	Signal   string          `json:"signal,omitempty"`
	Time     time.Duration   `json:"time_ns"`
	CPUTime  time.Duration   `json:"cpu_time_ns"`
	Memory   int64           `json:"memory_bytes"`
	Message  string          `json:"message,omitempty"`
	Diff     string          `json:"diff,omitempty"`
	Stderr   []byte          `json:"stderr,omitempty"`
}

func resultToWire(r *sandbox.Result) Result {
	w := Result{Status: r.Status, ExitCode: r.ExitCode, Signal: r.Signal, Time: r.Time, CPUTime: r.CPUTime,
		CompileTime: r.CompileTime, Memory: r.Memory, Message: r.Message, Node: r.Node, Attempts: r.Attempts,
		Verdict: r.Verdict, Trace: r.Trace}
	for _, c := range r.Cases {
		w.Cases = append(w.Cases, Case(c))
	}
	return w
}

// sandboxResult rebuilds a sandbox.Result from the wire result and the streamed output.
func (r Result) sandboxResult(stdout, stderr, compile []byte) sandbox.Result {
	return sandbox.Result{Status: r.Status, ExitCode: r.ExitCode, Signal: r.Signal, Stdout: stdout, Stderr: stderr,
		CompileOutput: compile, Time: r.Time, CPUTime: r.CPUTime, CompileTime: r.CompileTime, Memory: r.Memory,
		Message: r.Message, Node: r.Node, Attempts: r.Attempts, Verdict: r.Verdict, Cases: casesFromWire(r.Cases),
		Trace: r.Trace}
}

func casesFromWire(cases []Case) []sandbox.CaseResult {
	var out []sandbox.CaseResult
	for _, c := range cases {
		out = append(out, sandbox.CaseResult(c))
	}
	return out
}

// Capacity changes how many programs a slave takes.
type Capacity struct {
	Capacity int  `json:"capacity"`
	Draining bool `json:"draining,omitempty"`
}
