package vmm

import (
	"errors"
	"fmt"
	"io"
	"os"

	"github.com/microvm-dev/microvm/internal/vmm/boot"
	"golang.org/x/sys/unix"
)

// Kernel is a validated kernel image with its file open: Load reads it
// straight into guest memory, never into the heap (it would count as VMM
// overhead).
type Kernel struct {
	*boot.Kernel
	file *os.File
}

// OpenKernel opens and validates the kernel image at path without reading
// all of it; Load then reads it into guest memory. Close releases the file.
func OpenKernel(path string) (*Kernel, error) {
	f, size, err := openInput("Kernel", path)
	if err != nil {
		return nil, err
	}
	head := make([]byte, min(size, boot.MaxSetupBytes))
	if _, err := f.ReadAt(head, 0); err != nil {
		f.Close()
		return nil, inputErr("Kernel", "%s: cannot read: %v", path, err)
	}
	bk, err := boot.ParseKernelAt(path, head, f, size)
	if err != nil {
		f.Close()
		return nil, &InputError{What: "Kernel", Msg: err.Error()}
	}
	return &Kernel{Kernel: bk, file: f}, nil
}

// Close releases the image file, if any.
func (k *Kernel) Close() {
	if k.file != nil {
		k.file.Close()
		k.file = nil
	}
}

// openInput opens a regular input file, with errors that name the flag.
func openInput(what, path string) (*os.File, int64, error) {
	st, err := os.Stat(path)
	if err != nil {
		if errors.Is(err, os.ErrNotExist) {
			return nil, 0, inputErr(what, "%s: no such file", path)
		}
		return nil, 0, inputErr(what, "%s: %v", path, errors.Unwrap(err))
	}
	if st.IsDir() {
		return nil, 0, inputErr(what, "%s is a directory, not a file", path)
	}
	f, err := os.Open(path)
	if err != nil {
		return nil, 0, inputErr(what, "%s: cannot read: %v", path, errors.Unwrap(err))
	}
	if st.Mode().IsRegular() {
		return f, st.Size(), nil
	}
	// A pipe or FIFO (--kernel <(curl ...)) has no size and no ReadAt:
	// take it into an anonymous memory file first.
	defer f.Close()
	fd, err := unix.MemfdCreate("microvm-input", unix.MFD_CLOEXEC)
	if err != nil {
		return nil, 0, fmt.Errorf("%s %s: memfd_create: %w", what, path, err)
	}
	mf := os.NewFile(uintptr(fd), path)
	n, err := io.Copy(mf, io.LimitReader(f, maxStreamInput+1))
	switch {
	case err != nil:
		mf.Close()
		return nil, 0, inputErr(what, "%s: cannot read: %v", path, err)
	case n > maxStreamInput:
		mf.Close()
		return nil, 0, inputErr(what, "%s: a stream over %d GiB", path, maxStreamInput>>30)
	}
	return mf, n, nil
}

// maxStreamInput bounds a kernel or initrd read from a pipe.
const maxStreamInput = 4 << 30
