package sandbox

import (
	"fmt"
	"time"
)

// Limits caps one program. Every field has a server default (used when a request leaves it
// zero) and a server maximum (a request above it is refused with ErrInvalidRequest, never
// silently cut). The first group is enforced inside the container by runbox-init, the second
// by the container itself (cgroups, tmpfs, rlimits).
type Limits struct {
	// CompileTime is the compile phase's wall-time limit.
	CompileTime time.Duration `json:"compile_time"`
	// CompileMemory caps memory+swap of the compile phase in bytes (the compiler needs more
	// than most programs: g++ with the usual headers passes 128 MiB).
	CompileMemory int64 `json:"compile_memory,omitempty"`
	// RunTime is the run phase's wall-time limit.
	RunTime time.Duration `json:"run_time"`
	// Output caps stdout+stderr bytes of the run (and separately the compiler's output);
	// what came before the cap is kept.
	Output int64 `json:"output"`

	// CPUs is the CPU quota in cores (0.5 = half a core).
	CPUs float64 `json:"cpus"`
	// Memory caps memory+swap in bytes; passing it is status memory_limit.
	Memory int64 `json:"memory"`
	// Pids caps the number of processes and threads.
	Pids int64 `json:"pids"`
	// Disk caps the scratch tmpfs (/tmp, the only writable place) in bytes.
	Disk int64 `json:"disk"`
	// OpenFiles caps open file descriptors per process.
	OpenFiles int64 `json:"open_files"`
	// FileSize caps the size of any one file a process writes.
	FileSize int64 `json:"file_size"`
}

// Size units.
const (
	KiB int64 = 1 << 10
	MiB int64 = 1 << 20
	GiB int64 = 1 << 30
)

// DefaultLimits are what a request gets for the fields it leaves zero.
func DefaultLimits() Limits {
	return Limits{
		CompileTime:   10 * time.Second,
		CompileMemory: 512 * MiB,
		RunTime:       5 * time.Second,
		Output:        1 * MiB,
		CPUs:          1,
		Memory:        256 * MiB,
		Pids:          64,
		Disk:          64 * MiB,
		OpenFiles:     64,
		FileSize:      16 * MiB,
	}
}

// MaxLimits are the default server maxima.
func MaxLimits() Limits {
	return Limits{
		CompileTime:   60 * time.Second,
		CompileMemory: 2 * GiB,
		RunTime:       60 * time.Second,
		Output:        16 * MiB,
		CPUs:          2,
		Memory:        2 * GiB,
		Pids:          512,
		Disk:          1 * GiB,
		OpenFiles:     1024,
		FileSize:      1 * GiB,
	}
}

// WithDefaults returns l with every zero field taken from def.
func (l Limits) WithDefaults(def Limits) Limits {
	if l.CompileTime == 0 {
		l.CompileTime = def.CompileTime
	}
	if l.CompileMemory == 0 {
		l.CompileMemory = def.CompileMemory
	}
	if l.RunTime == 0 {
		l.RunTime = def.RunTime
	}
	if l.Output == 0 {
		l.Output = def.Output
	}
	if l.CPUs == 0 {
		l.CPUs = def.CPUs
	}
	if l.Memory == 0 {
		l.Memory = def.Memory
	}
	if l.Pids == 0 {
		l.Pids = def.Pids
	}
	if l.Disk == 0 {
		l.Disk = def.Disk
	}
	if l.OpenFiles == 0 {
		l.OpenFiles = def.OpenFiles
	}
	if l.FileSize == 0 {
		l.FileSize = def.FileSize
	}
	return l
}

// Floors below which a program cannot even start; a request under them is invalid.
var minLimits = Limits{
	CompileTime:   100 * time.Millisecond,
	CompileMemory: 16 * MiB,
	RunTime:       10 * time.Millisecond,
	Output:        1,
	CPUs:          0.05,
	Memory:        16 * MiB,
	Pids:          4,
	Disk:          1 * MiB,
	OpenFiles:     8,
	FileSize:      1,
}

// Check reports, as ErrInvalidRequest, the first field of l that is negative, under the
// floor a program needs, or above max. Zero fields are allowed (they take defaults).
func (l Limits) Check(max Limits) error {
	type field struct {
		name          string
		v, lo, hi     float64
		isDur, isSize bool
	}
	fields := []field{
		{"compile time", float64(l.CompileTime), float64(minLimits.CompileTime), float64(max.CompileTime), true, false},
		{"compile memory", float64(l.CompileMemory), float64(minLimits.CompileMemory), float64(max.CompileMemory), false, true},
		{"run time", float64(l.RunTime), float64(minLimits.RunTime), float64(max.RunTime), true, false},
		{"output", float64(l.Output), float64(minLimits.Output), float64(max.Output), false, true},
		{"cpus", l.CPUs, minLimits.CPUs, max.CPUs, false, false},
		{"memory", float64(l.Memory), float64(minLimits.Memory), float64(max.Memory), false, true},
		{"pids", float64(l.Pids), float64(minLimits.Pids), float64(max.Pids), false, false},
		{"disk", float64(l.Disk), float64(minLimits.Disk), float64(max.Disk), false, true},
		{"open files", float64(l.OpenFiles), float64(minLimits.OpenFiles), float64(max.OpenFiles), false, false},
		{"file size", float64(l.FileSize), float64(minLimits.FileSize), float64(max.FileSize), false, true},
	}
	for _, f := range fields {
		if f.v == 0 {
			continue
		}
		show := func(v float64) string {
			switch {
			case f.isDur:
				return time.Duration(v).String()
			case f.isSize:
				return FormatSize(int64(v))
			}
			return fmt.Sprint(v)
		}
		if f.v < f.lo {
			return fmt.Errorf("%w: %s limit %s is below the minimum %s", ErrInvalidRequest, f.name, show(f.v), show(f.lo))
		}
		if f.hi > 0 && f.v > f.hi {
			return fmt.Errorf("%w: %s limit %s is above the server maximum %s", ErrInvalidRequest, f.name, show(f.v), show(f.hi))
		}
	}
	return nil
}

// FormatSize prints n bytes with a binary unit: 512B, 64KiB, 1.5MiB.
func FormatSize(n int64) string {
	switch {
	case n >= GiB && n%GiB == 0:
		return fmt.Sprintf("%dGiB", n/GiB)
	case n >= GiB:
		return fmt.Sprintf("%.1fGiB", float64(n)/float64(GiB))
	case n >= MiB && n%MiB == 0:
		return fmt.Sprintf("%dMiB", n/MiB)
	case n >= MiB:
		return fmt.Sprintf("%.1fMiB", float64(n)/float64(MiB))
	case n >= KiB && n%KiB == 0:
		return fmt.Sprintf("%dKiB", n/KiB)
	case n >= KiB:
		return fmt.Sprintf("%.1fKiB", float64(n)/float64(KiB))
	}
	return fmt.Sprintf("%dB", n)
}
