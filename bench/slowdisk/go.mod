module github.com/ctxprop/ctxprop/bench/slowdisk

go 1.26.0

require (
	github.com/hanwen/go-fuse/v2 v2.12.1
	go.etcd.io/bbolt v1.5.0
	golang.org/x/sys v0.48.0
)
