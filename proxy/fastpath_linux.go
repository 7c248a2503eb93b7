package proxy

import "syscall"

// peekClosed peeks at the socket fd without blocking: an orderly close (EOF), a reset,
// or bytes the app sent unasked all make a pooled connection unusable.
func peekClosed(fd uintptr) bool {
	var b [1]byte
	n, _, err := syscall.Recvfrom(int(fd), b[:], syscall.MSG_PEEK|syscall.MSG_DONTWAIT)
	if err == syscall.EAGAIN || err == syscall.EWOULDBLOCK || err == syscall.EINTR {
		return false
	}
	return err != nil || n >= 0
}
