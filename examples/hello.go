package main

import (
	"fmt"
	"runtime"
)

func main() {
	fmt.Println("Hello from runbox, in Go", runtime.Version())
}
