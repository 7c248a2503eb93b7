package discovery

import (
	"context"
	"errors"
	"fmt"
	"net"
	"slices"
	"strconv"
	"strings"
)

// ErrStale marks an error returned together with a non-empty peer list: the source
// could not refresh its answer (a DNS timeout, a broken xDS stream) and returned the
// last one it had. Callers should use the list and log the error; errors.Is(err,
// ErrStale) tells this case apart from a source that has nothing to offer.
var ErrStale = errors.New("peer list is stale")

// DefaultPort is the peer sync port of SPEC §2, used when a DNS name carries none.
const DefaultPort = 7403

// Static is a fixed list of peers, from config sync { peers = [...] }.
// Its zero value has no peers.
type Static struct {
	peers []string
}

// NewStatic validates every entry as host:port and returns the list as a Source.
// Duplicates are dropped.
func NewStatic(peers []string) (*Static, error) {
	s := &Static{peers: make([]string, 0, len(peers))}
	for i, p := range peers {
		if err := checkHostPort(p); err != nil {
			return nil, fmt.Errorf("static peer %d %q: %w", i+1, p, err)
		}
		s.peers = append(s.peers, p)
	}
	slices.Sort(s.peers)
	s.peers = slices.Compact(s.peers)
	return s, nil
}

// Peers returns a copy of the list, sorted. It fails only if ctx is already done.
func (s *Static) Peers(ctx context.Context) ([]string, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	return slices.Clone(s.peers), nil
}

// String names the source in logs and errors.
func (s *Static) String() string { return "static" }

// checkHostPort reports why addr is not a host:port a peer could listen on.
func checkHostPort(addr string) error {
	host, port, err := net.SplitHostPort(addr)
	if err != nil {
		return fmt.Errorf("want host:port such as \"10.0.0.7:%d\": %w", DefaultPort, err)
	}
	if host == "" {
		return fmt.Errorf("empty host; want host:port such as \"10.0.0.7:%d\"", DefaultPort)
	}
	if strings.ContainsFunc(host, func(r rune) bool { return r <= ' ' || r == '/' }) {
		return fmt.Errorf("host %q is not a host name or IP address", host)
	}
	if _, err := parsePort(port); err != nil {
		return err
	}
	return nil
}

// parsePort accepts a decimal TCP port, 1 to 65535.
func parsePort(s string) (uint16, error) {
	n, err := strconv.ParseUint(s, 10, 16)
	if err != nil || n == 0 {
		return 0, fmt.Errorf("port %q is not a number from 1 to 65535", s)
	}
	return uint16(n), nil
}
