package installer

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"

	"github.com/kdd-cni/kdd-cni/internal/atomicfile"
)

// copyFile installs src at dst atomically (safe while the old dst runs),
// skipping identical files, and verifies the result. It reports whether it
// wrote anything.
func copyFile(src, dst string) (bool, error) {
	same, err := identical(src, dst)
	if err != nil {
		return false, err
	}
	if same {
		return false, nil
	}
	fi, err := os.Stat(src)
	if err != nil {
		return false, err
	}
	in, err := os.Open(src)
	if err != nil {
		return false, err
	}
	defer in.Close()
	if err := atomicfile.Replace(dst, fi.Mode().Perm(), func(f *os.File) error {
		_, err := io.Copy(f, in)
		return err
	}); err != nil {
		return false, err
	}
	if same, err := identical(src, dst); err != nil || !same {
		return true, fmt.Errorf("failed to verify %s after copying: it differs from %s (%v)", dst, src, err)
	}
	return true, nil
}

// identical compares size, mode and bytes; a missing dst is not identical.
func identical(src, dst string) (bool, error) {
	si, err := os.Stat(src)
	if err != nil {
		return false, fmt.Errorf("failed to stat %s: %w", src, err)
	}
	di, err := os.Stat(dst)
	if errors.Is(err, fs.ErrNotExist) {
		return false, nil
	}
	if err != nil {
		return false, fmt.Errorf("failed to stat %s: %w", dst, err)
	}
	if si.Size() != di.Size() || si.Mode().Perm() != di.Mode().Perm() {
		return false, nil
	}
	a, err := os.Open(src)
	if err != nil {
		return false, err
	}
	defer a.Close()
	b, err := os.Open(dst)
	if err != nil {
		return false, err
	}
	defer b.Close()
	bufA, bufB := make([]byte, 64<<10), make([]byte, 64<<10)
	for {
		na, errA := io.ReadFull(a, bufA)
		nb, errB := io.ReadFull(b, bufB)
		if na != nb || !bytes.Equal(bufA[:na], bufB[:nb]) {
			return false, nil
		}
		if errA != nil || errB != nil {
			return errors.Is(errA, io.EOF) || errors.Is(errA, io.ErrUnexpectedEOF), nil
		}
	}
}

// writable reports whether files can be created in dir.
func writable(dir string) bool {
	f, err := os.CreateTemp(dir, ".kdd-cni-probe-")
	if err != nil {
		return false
	}
	f.Close()
	os.Remove(f.Name())
	return true
}
