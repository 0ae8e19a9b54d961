package sandboxtest

// Programs are the conformance suite's programs in one language: each behaves the same
// in every language, so each language's row of the table passes the same checks.
type Programs struct {
	// Hello prints "hello from LANG\n", then its stdin upper-cased, then "to stderr\n" on
	// stderr, and exits 0.
	Hello string
	// Exit prints "bye\n" and exits with code 3.
	Exit string
	// Crash prints "before\n" (flushed), then fails the language's way: an uncaught
	// exception or panic, or a segmentation fault. Where the language prints a message,
	// it holds "boom".
	Crash string
	// CompileError does not compile, for want of missing_symbol; empty for interpreted
	// languages.
	CompileError string
	// Loop prints "started\n" (flushed) and spins forever.
	Loop string
	// Memory allocates and touches 1 MiB blocks, and keeps them, forever: memory_limit.
	Memory string
	// HeapLimit, when set, says that the language's runtime caps its own heap below the
	// sandbox's memory limit: Memory then ends as a runtime_error with HeapLimit on stderr
	// (Java's OutOfMemoryError; see sandbox.Language's java row).
	HeapLimit string
	// Flood writes "x" to stdout forever.
	Flood string
}

// LanguagePrograms returns the Programs of every language of sandbox.Languages, by
// canonical name.
func LanguagePrograms() map[string]Programs {
	return map[string]Programs{
		"python": {
			Hello: "import sys\nprint('hello from python')\nsys.stdout.write(sys.stdin.read().upper())\nprint('to stderr', file=sys.stderr)\n",
			Exit:  "import sys\nprint('bye')\nsys.exit(3)\n",
			Crash: "print('before', flush=True)\nraise RuntimeError('boom')\n",
			Loop:  "print('started', flush=True)\nwhile True: pass\n",
			// bytes * n fills the block (a bytearray's calloc would not touch it).
			Memory: "keep = []\nwhile True: keep.append(b'x' * (1 << 20))\n",
			Flood:  "import sys\nwhile True: sys.stdout.write('x' * 4096)\n",
		},
		"c": {
			Hello: `#include <ctype.h>
#include <stdio.h>
int main(void) {
	puts("hello from c");
	for (int c; (c = getchar()) != EOF;) putchar(toupper(c));
	fputs("to stderr\n", stderr);
	return 0;
}
`,
			Exit: "#include <stdio.h>\nint main(void) { puts(\"bye\"); return 3; }\n",
			// volatile: a plain null store at -O2 becomes a trap instruction (SIGILL).
			Crash:        "#include <stdio.h>\nint main(void) { puts(\"before\"); fflush(stdout); *(volatile int *)0 = 1; return 0; }\n",
			CompileError: "int main(void) { return missing_symbol; }\n",
			Loop:         "#include <stdio.h>\nint main(void) { puts(\"started\"); fflush(stdout); for (volatile unsigned long n = 0;; n++) {} }\n",
			// The chain through a volatile global keeps the compiler from dropping the stores.
			Memory: `#include <stdlib.h>
#include <string.h>
void *volatile head;
int main(void) {
	for (;;) {
		void **p = malloc(1 << 20);
		if (!p) return 2;
		memset(p, 1, 1 << 20);
		*p = head;
		head = p;
	}
}
`,
			Flood: "#include <stdio.h>\n#include <string.h>\nint main(void) { char b[4096]; memset(b, 'x', sizeof b); for (;;) fwrite(b, 1, sizeof b, stdout); }\n",
		},
		"cpp": {
			Hello: `#include <cctype>
#include <iostream>
int main() {
	std::cout << "hello from cpp" << std::endl;
	for (char c; std::cin.get(c);) std::cout << char(std::toupper(static_cast<unsigned char>(c)));
	std::cerr << "to stderr" << std::endl;
}
`,
			Exit:         "#include <iostream>\nint main() { std::cout << \"bye\" << std::endl; return 3; }\n",
			Crash:        "#include <iostream>\n#include <stdexcept>\nint main() { std::cout << \"before\" << std::endl; throw std::runtime_error(\"boom\"); }\n",
			CompileError: "int main() { return missing_symbol; }\n",
			Loop:         "#include <iostream>\nint main() { std::cout << \"started\" << std::endl; for (volatile unsigned long n = 0;; n++) {} }\n",
			Memory: `#include <cstring>
#include <vector>
int main() {
	std::vector<char *> keep;
	for (;;) {
		char *p = new char[1 << 20];
		std::memset(p, 1, 1 << 20);
		keep.push_back(p);
	}
}
`,
			Flood: "#include <iostream>\n#include <string>\nint main() { std::string b(4096, 'x'); for (;;) std::cout << b; }\n",
		},
		"go": {
			Hello: `package main

import (
	"fmt"
	"io"
	"os"
	"strings"
)

func main() {
	fmt.Println("hello from go")
	in, _ := io.ReadAll(os.Stdin)
	fmt.Print(strings.ToUpper(string(in)))
	fmt.Fprintln(os.Stderr, "to stderr")
}
`,
			Exit:         "package main\n\nimport (\n\t\"fmt\"\n\t\"os\"\n)\n\nfunc main() {\n\tfmt.Println(\"bye\")\n\tos.Exit(3)\n}\n",
			Crash:        "package main\n\nimport \"fmt\"\n\nfunc main() {\n\tfmt.Println(\"before\")\n\tpanic(\"boom\")\n}\n",
			CompileError: "package main\n\nfunc main() {\n\tprintln(missing_symbol)\n}\n",
			Loop:         "package main\n\nimport \"fmt\"\n\nfunc main() {\n\tfmt.Println(\"started\")\n\tfor {\n\t}\n}\n",
			Memory: `package main

func main() {
	var keep [][]byte
	for {
		b := make([]byte, 1<<20)
		for i := range b {
			b[i] = 1
		}
		keep = append(keep, b)
	}
}
`,
			Flood: "package main\n\nimport (\n\t\"bytes\"\n\t\"os\"\n)\n\nfunc main() {\n\tb := bytes.Repeat([]byte(\"x\"), 4096)\n\tfor {\n\t\tos.Stdout.Write(b)\n\t}\n}\n",
		},
		"java": {
			Hello: `import java.io.*;

public class Main {
	public static void main(String[] args) throws IOException {
		System.out.println("hello from java");
		String in = new String(System.in.readAllBytes(), "UTF-8");
		System.out.print(in.toUpperCase());
		System.out.flush();
		System.err.println("to stderr");
	}
}
`,
			Exit:         "public class Main {\n\tpublic static void main(String[] args) {\n\t\tSystem.out.println(\"bye\");\n\t\tSystem.exit(3);\n\t}\n}\n",
			Crash:        "public class Main {\n\tpublic static void main(String[] args) {\n\t\tSystem.out.println(\"before\");\n\t\tthrow new RuntimeException(\"boom\");\n\t}\n}\n",
			CompileError: "public class Main {\n\tpublic static void main(String[] args) {\n\t\tSystem.out.println(missing_symbol);\n\t}\n}\n",
			Loop:         "public class Main {\n\tpublic static void main(String[] args) {\n\t\tSystem.out.println(\"started\");\n\t\tfor (long n = 0;; n++) {\n\t\t}\n\t}\n}\n",
			Memory: `import java.util.*;

public class Main {
	public static void main(String[] args) {
		List<byte[]> keep = new ArrayList<>();
		for (;;) {
			byte[] b = new byte[1 << 20];
			Arrays.fill(b, (byte) 1);
			keep.add(b);
		}
	}
}
`,
			HeapLimit: "java.lang.OutOfMemoryError",
			Flood:     "public class Main {\n\tpublic static void main(String[] args) {\n\t\tbyte[] b = \"x\".repeat(4096).getBytes();\n\t\tfor (;;) {\n\t\t\tSystem.out.write(b, 0, b.length);\n\t\t}\n\t}\n}\n",
		},
		"javascript": {
			Hello: `const fs = require('fs');
console.log('hello from javascript');
process.stdout.write(fs.readFileSync(0, 'utf8').toUpperCase());
console.error('to stderr');
`,
			Exit:  "console.log('bye');\nprocess.exit(3);\n",
			Crash: "console.log('before');\nthrow new Error('boom');\n",
			Loop:  "console.log('started');\nfor (;;) {}\n",
			// Arrays on the JavaScript heap, which V8 caps itself (see the language row).
			Memory: "const keep = [];\nfor (;;) keep.push(new Array(1 << 17).fill(1.5));\n",
			Flood:  "const b = 'x'.repeat(4096);\nfor (;;) process.stdout.write(b);\n",
		},
	}
}
