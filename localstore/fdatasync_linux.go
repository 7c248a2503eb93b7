package localstore

import (
	"os"
	"syscall"
)

// fdatasync flushes f's data without its metadata: the log never changes size, so that is
// all a record needs, and it skips the inode write fsync would add.
func fdatasync(f *os.File) error { return syscall.Fdatasync(int(f.Fd())) }
