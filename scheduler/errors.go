package scheduler

import (
	"errors"
	"fmt"

	"runbox/sandbox"
)

// Sentinel errors of the scheduler.
var (
	// ErrBusy: every program slot and the queue are full; the client should try another server.
	ErrBusy = errors.New("server busy")
	// ErrNotFound: no job with that id (never accepted, or forgotten after retention).
	ErrNotFound = errors.New("job not found")
	// ErrCancelled: the client cancelled the job.
	ErrCancelled = errors.New("job cancelled")
	// ErrCrashedNode: the job's node died on every attempt.
	ErrCrashedNode = errors.New("node crashed while running the job")
	// ErrShuttingDown: the server is stopping; the job stays in the journal.
	ErrShuttingDown = errors.New("server shutting down")
	// ErrStorageFull: the journal cannot take the job (its disk is full, or it holds its
	// byte bound of unfinished jobs); nothing accepted is lost, new jobs are refused.
	ErrStorageFull = errors.New("storage full")
	// ErrNameTaken: a node asked to join under the name of a live node. Registering under a
	// live node's name would evict it (and take its jobs), so it is refused; the name is
	// free again once that node is lost or gone.
	ErrNameTaken = errors.New("node name taken")
	// ErrInternal: anything else.
	ErrInternal = errors.New("internal error")
)

// codes maps every sentinel that crosses a process boundary (the wire, the journal) to its
// stable code. The transport adds its own (unauthorized, ...) with RegisterCode.
var codes = []struct {
	code string
	err  error
}{
	{"busy", ErrBusy},
	{"not_found", ErrNotFound},
	{"cancelled", ErrCancelled},
	{"crashed_node", ErrCrashedNode},
	{"shutting_down", ErrShuttingDown},
	{"invalid_request", sandbox.ErrInvalidRequest},
	{"unknown_language", sandbox.ErrUnknownLanguage},
	{"too_large", sandbox.ErrTooLarge},
	{"unavailable", sandbox.ErrUnavailable},
	{"storage_full", ErrStorageFull},
	{"name_taken", ErrNameTaken},
	{"internal", ErrInternal},
}

// CodeOf returns the stable code of err's sentinel, "internal" when it has none.
func CodeOf(err error, extra ...CodedError) string {
	for _, c := range extra {
		if errors.Is(err, c.Err) {
			return c.Code
		}
	}
	for _, c := range codes {
		if errors.Is(err, c.err) {
			return c.code
		}
	}
	return "internal"
}

// CodedError pairs a code with its sentinel, for codes defined outside this package.
type CodedError struct {
	Code string
	Err  error
}

// ErrorOf rebuilds an error from its code and message: errors.Is works on it with the
// code's sentinel, and its text is the message.
func ErrorOf(code, message string, extra ...CodedError) error {
	sentinel := ErrInternal
	found := false
	for _, c := range extra {
		if c.Code == code {
			sentinel, found = c.Err, true
		}
	}
	for _, c := range codes {
		if !found && c.code == code {
			sentinel, found = c.err, true
		}
	}
	if !found {
		message = fmt.Sprintf("%s (%s)", message, code)
	}
	return &codedErr{sentinel: sentinel, msg: message}
}

type codedErr struct {
	sentinel error
	msg      string
}

func (e *codedErr) Error() string { return e.msg }
func (e *codedErr) Unwrap() error { return e.sentinel }
