package boxinit

import (
	"syscall"
	"unsafe"
)

// kernelSigaction is the kernel's struct sigaction on linux/amd64 and linux/arm64.
type kernelSigaction struct {
	handler  uintptr
	flags    uint64
	restorer uintptr
	mask     uint64
}

const sigIgn = 1

// resetIgnoredSignals gives back the default action to every signal that runbox-init
// inherited as ignored and that the Go runtime left alone (signal.Notify takes over the
// others). An ignored signal stays ignored across exec: without this, a program would
// start with, say, signal 32 ignored because whoever started runbox-init ignored it.
func resetIgnoredSignals() {
	for sig := 1; sig <= 64; sig++ {
		if sig == int(syscall.SIGKILL) || sig == int(syscall.SIGSTOP) {
			continue
		}
		var old kernelSigaction
		if _, _, e := syscall.RawSyscall6(syscall.SYS_RT_SIGACTION, uintptr(sig), 0, uintptr(unsafe.Pointer(&old)), 8, 0, 0); e != 0 {
			continue
		}
		if old.handler != sigIgn {
			continue
		}
		def := kernelSigaction{} // SIG_DFL, no flags, empty mask
		syscall.RawSyscall6(syscall.SYS_RT_SIGACTION, uintptr(sig), uintptr(unsafe.Pointer(&def)), 0, 8, 0, 0)
	}
}
