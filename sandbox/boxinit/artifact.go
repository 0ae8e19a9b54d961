package boxinit

import (
	"archive/tar"
	"compress/gzip"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
)

// noFollow makes opening a symbolic link fail.
const noFollow = syscall.O_NOFOLLOW

// MaxArtifact caps a compiled program's artefact: the bytes of its files before
// compression, and the compressed stream.
const MaxArtifact = 64 << 20

// ErrArtifact is why a directory could not be packed or an artefact unpacked.
var ErrArtifact = errors.New("artefact")

// An artefact is the scratch directory after a successful compile, as a gzip-compressed
// tar stream: regular files (with their permission bits) and directories, no links, no
// devices, nothing else. Top-level entries whose names begin with '.' are left out: they
// are toolchain caches (Go's build cache, the warm-up's directory), not the program.

// PackDir writes dir's artefact to w. It refuses, before writing anything, a symbolic
// link or any file that is neither regular nor a directory, and files above max bytes in
// all; w gets at most max compressed bytes (more is an error, mid-stream).
func PackDir(dir string, max int64, w io.Writer) error {
	type entry struct {
		rel  string
		info fs.FileInfo
	}
	var entries []entry
	var total int64
	err := filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if p == dir {
			return nil
		}
		rel, err := filepath.Rel(dir, p)
		if err != nil {
			return err
		}
		rel = filepath.ToSlash(rel)
		if !strings.Contains(rel, "/") && strings.HasPrefix(rel, ".") {
			if d.IsDir() {
				return filepath.SkipDir
			}
			return nil
		}
		info, err := d.Info()
		if err != nil {
			return err
		}
		switch {
		case info.Mode().IsRegular():
			total += info.Size()
			if total > max {
				return fmt.Errorf("%w: the compiled program's files pass %d bytes", ErrArtifact, max)
			}
		case info.IsDir():
		default:
			return fmt.Errorf("%w: %s is a %s; a compiled program may only hold regular files and directories", ErrArtifact, rel, kind(info.Mode()))
		}
		entries = append(entries, entry{rel, info})
		return nil
	})
	if err != nil {
		return err
	}
	cw := &cappedWriter{w: w, left: max, max: max}
	zw, err := gzip.NewWriterLevel(cw, gzip.BestSpeed)
	if err != nil {
		return err
	}
	tw := tar.NewWriter(zw)
	for _, e := range entries {
		hdr := &tar.Header{Name: e.rel, Mode: int64(e.info.Mode().Perm()), ModTime: e.info.ModTime(), Format: tar.FormatPAX}
		if e.info.IsDir() {
			hdr.Typeflag, hdr.Name = tar.TypeDir, e.rel+"/"
			if err := tw.WriteHeader(hdr); err != nil {
				return err
			}
			continue
		}
		hdr.Typeflag, hdr.Size = tar.TypeReg, e.info.Size()
		if err := tw.WriteHeader(hdr); err != nil {
			return err
		}
		f, err := os.OpenFile(filepath.Join(dir, filepath.FromSlash(e.rel)), os.O_RDONLY|noFollow, 0)
		if err != nil {
			return err
		}
		// A file that changed size since the walk fails the copy (tar checks the size).
		_, err = io.Copy(tw, io.LimitReader(f, hdr.Size))
		f.Close()
		if err != nil {
			return err
		}
	}
	if err := tw.Close(); err != nil {
		return err
	}
	return zw.Close()
}

func kind(m fs.FileMode) string {
	switch {
	case m&fs.ModeSymlink != 0:
		return "symbolic link"
	case m&fs.ModeNamedPipe != 0:
		return "named pipe"
	case m&fs.ModeSocket != 0:
		return "socket"
	case m&fs.ModeDevice != 0:
		return "device"
	}
	return "special file"
}

// UnpackDir extracts an artefact made by PackDir into dir, which must exist. Entries are
// checked before anything is written for them: a name must be a local path (no "..", not
// absolute), its parent a directory the artefact made, the type a regular file or a
// directory, and the files' bytes at most max in all. Files are created exclusively and
// never through a symbolic link.
func UnpackDir(dir string, r io.Reader, max int64) error {
	zr, err := gzip.NewReader(r)
	if err != nil {
		return fmt.Errorf("%w: %v", ErrArtifact, err)
	}
	tr := tar.NewReader(zr)
	dirs := map[string]bool{".": true}
	var total int64
	for {
		hdr, err := tr.Next()
		if err == io.EOF {
			return nil
		}
		if err != nil {
			return fmt.Errorf("%w: %v", ErrArtifact, err)
		}
		name := strings.TrimSuffix(hdr.Name, "/")
		if name == "" || !filepath.IsLocal(name) || path.Clean(name) != name || strings.Contains(name, "\\") {
			return fmt.Errorf("%w: bad entry name %q", ErrArtifact, hdr.Name)
		}
		if !dirs[path.Dir(name)] {
			return fmt.Errorf("%w: %q comes before its directory", ErrArtifact, hdr.Name)
		}
		target := filepath.Join(dir, filepath.FromSlash(name))
		perm := os.FileMode(hdr.Mode).Perm() & 0o755
		switch hdr.Typeflag {
		case tar.TypeDir:
			if dirs[name] {
				return fmt.Errorf("%w: directory %q given twice", ErrArtifact, name)
			}
			if err := os.Mkdir(target, perm|0o700); err != nil {
				return fmt.Errorf("%w: %v", ErrArtifact, err)
			}
			dirs[name] = true
		case tar.TypeReg:
			total += hdr.Size
			if hdr.Size < 0 || total > max {
				return fmt.Errorf("%w: its files pass %d bytes", ErrArtifact, max)
			}
			f, err := os.OpenFile(target, os.O_WRONLY|os.O_CREATE|os.O_EXCL|noFollow, perm|0o600)
			if err != nil {
				return fmt.Errorf("%w: %v", ErrArtifact, err)
			}
			_, err = io.Copy(f, tr)
			if cerr := f.Close(); err == nil {
				err = cerr
			}
			if err != nil {
				return fmt.Errorf("%w: write %s: %v", ErrArtifact, name, err)
			}
		default:
			return fmt.Errorf("%w: %q is not a regular file or a directory", ErrArtifact, hdr.Name)
		}
	}
}

// cappedWriter fails a write that would pass its budget.
type cappedWriter struct {
	w         io.Writer
	left, max int64
}

func (c *cappedWriter) Write(p []byte) (int, error) {
	if int64(len(p)) > c.left {
		return 0, fmt.Errorf("%w: the compressed program passes %d bytes", ErrArtifact, c.max)
	}
	c.left -= int64(len(p))
	return c.w.Write(p)
}

// frameWriter cuts what is written to it into frames of type typ, at most ChunkSize each.
type frameWriter struct {
	send func(typ byte, payload []byte) error
	typ  byte
	n    int64
}

func (f *frameWriter) Write(p []byte) (int, error) {
	for chunk := range slices.Chunk(p, ChunkSize) {
		if err := f.send(f.typ, chunk); err != nil {
			return 0, err
		}
		f.n += int64(len(chunk))
	}
	return len(p), nil
}
