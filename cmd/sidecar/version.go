package main

import (
	"context"
	"fmt"
	"io"
	"runtime/debug"
)

// version is set at build time with -ldflags "-X main.version=v1.2.3"; otherwise the
// module version or VCS revision recorded by the Go toolchain is shown.
var version = ""

func runVersion(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	v, rev := version, ""
	if info, ok := debug.ReadBuildInfo(); ok {
		if v == "" {
			v = info.Main.Version
		}
		for _, s := range info.Settings {
			if s.Key == "vcs.revision" {
				rev = s.Value
			}
		}
		fmt.Fprintf(stdout, "sidecar %s", orDevel(v))
		if rev != "" {
			fmt.Fprintf(stdout, " (%.12s)", rev)
		}
		fmt.Fprintf(stdout, " %s\n", info.GoVersion)
		return nil
	}
	fmt.Fprintf(stdout, "sidecar %s\n", orDevel(v))
	return nil
}

func orDevel(v string) string {
	if v == "" || v == "(devel)" {
		return "devel"
	}
	return v
}
