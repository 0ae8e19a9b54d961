// The programs in examples/ are sent to runbox, not built here. This file makes
// examples/ a module of its own, so that hello.go (next to C files) is no package
// of the runbox module: `go build ./...` and `go vet ./...` at the root skip it.
module examples

go 1.19
