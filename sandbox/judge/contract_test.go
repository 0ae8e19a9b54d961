package judge

import (
	"testing"

	"runbox/sandbox/sandboxtest"
)

// The judge is a Runner too: a Spec without tests passes through it, and it keeps the
// contract of the Runner it wraps.
func TestJudgeKeepsTheContract(t *testing.T) {
	t.Parallel()
	f := &sandboxtest.Fake{}
	r, err := New(f, DefaultConfig())
	if err != nil {
		t.Fatal(err)
	}
	sandboxtest.Contract(t, r, sandboxtest.ContractConfig{Programs: sandboxtest.FakePrograms(), Judges: true, Idle: func() bool { return f.Running() == 0 }})
}
