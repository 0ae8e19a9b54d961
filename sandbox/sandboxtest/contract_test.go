package sandboxtest

import "testing"

// The contract over the Fake: the Fake is what the layers above the sandbox test with,
// so it must keep the contract that they rely on.
func TestFakeKeepsTheContract(t *testing.T) {
	t.Parallel()
	f := &Fake{}
	Contract(t, f, ContractConfig{Programs: FakePrograms(), Idle: func() bool { return f.Running() == 0 }})
}
