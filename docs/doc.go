// Package docs is runbox's documentation: the Markdown guides in this directory. It has no
// code of its own. Its test, docs_test.go, runs every command block of install.md and
// usage.md that is marked runnable, against a runbox binary built from this checkout and the
// real Docker daemon, so that the guides stay true to the code.
//
// A runnable block is a ```sh fence directly after an HTML comment:
//
//	<!-- runnable -->
//	<!-- runnable expect="exit code 75" expect='"code":"busy"' -->
//
// Each expect="..." (or expect='...') is a text that must appear in the block's output
// (stdout and stderr together). The blocks of one file run in order in one bash process (set -euo pipefail),
// so a later block may use a server an earlier one started; the working directory is a
// scratch directory holding a copy of examples/, as the repository root would.
package docs
