// Command runbox-init is PID 1 of every runbox sandbox container. It serves one program
// over its stdin and stdout with the framed protocol of package boxinit, then exits.
//
// It is built statically (CGO_ENABLED=0) and copied into every runtime image by
// `make images`; nobody runs it by hand.
package main

import (
	"encoding/json"
	"flag"
	"fmt"
	"os"
	"time"

	"runbox/sandbox/boxinit"
)

func main() {
	idle := flag.Duration("idle", 10*time.Minute, "exit when no request arrives within this time (a pooled container left behind by a crashed server goes away by itself)")
	warmJSON := flag.String("warm", "", "a command, as a JSON array, to run while waiting for the request (loads the toolchain into the file cache); killed when the request arrives")
	prestartJSON := flag.String("prestart", "", "an interpreter, as a JSON array, to start while waiting for the request; its prelude runs the program's main file, named on fd 3 (see boxinit.Config.Prestart)")
	flag.Parse()

	if err := boxinit.Harden(); err != nil {
		fmt.Fprintln(os.Stderr, "runbox-init:", err)
		os.Exit(2)
	}
	cfg := boxinit.DefaultConfig()
	if *warmJSON != "" {
		if err := json.Unmarshal([]byte(*warmJSON), &cfg.Warm); err != nil {
			fmt.Fprintln(os.Stderr, "runbox-init: --warm:", err)
			os.Exit(2)
		}
	}
	if *prestartJSON != "" {
		if err := json.Unmarshal([]byte(*prestartJSON), &cfg.Prestart); err != nil {
			fmt.Fprintln(os.Stderr, "runbox-init: --prestart:", err)
			os.Exit(2)
		}
	}
	if *idle > 0 {
		t := time.AfterFunc(*idle, func() { os.Exit(0) })
		cfg.OnRequest = func() { t.Stop() }
	}
	if err := boxinit.Serve(os.Stdin, os.Stdout, cfg); err != nil {
		fmt.Fprintln(os.Stderr, "runbox-init:", err)
		os.Exit(1)
	}
}
