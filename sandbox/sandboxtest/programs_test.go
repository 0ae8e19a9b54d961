package sandboxtest

import (
	"testing"

	"runbox/sandbox"
)

// TestEveryLanguageHasItsPrograms: the language suite needs Docker, but whether each row
// of the table has its programs does not: a new row without them fails here, at once.
func TestEveryLanguageHasItsPrograms(t *testing.T) {
	t.Parallel()
	progs := LanguagePrograms()
	for _, l := range sandbox.Languages() {
		p, ok := progs[l.Name]
		if !ok {
			t.Errorf("%s: no Programs in LanguagePrograms (see docs/add-a-language.md)", l.Name)
			continue
		}
		delete(progs, l.Name)
		for field, src := range map[string]string{"Hello": p.Hello, "Exit": p.Exit, "Crash": p.Crash, "Loop": p.Loop, "Memory": p.Memory, "Flood": p.Flood} {
			if src == "" {
				t.Errorf("%s: no %s program", l.Name, field)
			}
		}
		if l.Compiled() != (p.CompileError != "") {
			t.Errorf("%s: compiled %v, but a CompileError program: %v", l.Name, l.Compiled(), p.CompileError != "")
		}
	}
	for name := range progs {
		t.Errorf("programs for %s, which the language table does not have", name)
	}
}
