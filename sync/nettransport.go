package peersync

import (
	"context"
	"errors"
	"fmt"
	"log"
	"net"
	"strings"
	"time"

	"github.com/hashicorp/memberlist"
)

// netTransport is memberlist's NetTransport with two changes to the streams it dials
// (issue 11): a dial ends when the transport shuts down, so that Close does not wait out
// the dial timeout of a peer that is cut off; and a stream gets a deadline of the dial
// timeout, because memberlist writes a user message (SendReliable) without one, and a
// peer that accepts and never reads would hold the sender for good.
type netTransport struct {
	*memberlist.NetTransport
	ctx    context.Context
	cancel context.CancelFunc
}

var _ memberlist.NodeAwareTransport = (*netTransport)(nil)

// newNetTransport listens on host:port, TCP and UDP. Port 0 picks a port free for both,
// retrying as memberlist does: the port the kernel gave the TCP listener may be taken
// for UDP.
func newNetTransport(host string, port int, logger *log.Logger) (*netTransport, error) {
	cfg := &memberlist.NetTransportConfig{BindAddrs: []string{host}, BindPort: port, Logger: logger}
	tries := 1
	if port == 0 {
		tries = 10
	}
	var err error
	for range tries {
		var nt *memberlist.NetTransport
		if nt, err = memberlist.NewNetTransport(cfg); err == nil {
			ctx, cancel := context.WithCancel(context.Background())
			return &netTransport{NetTransport: nt, ctx: ctx, cancel: cancel}, nil
		}
		if !strings.Contains(err.Error(), "address already in use") {
			break
		}
	}
	return nil, fmt.Errorf("could not set up network transport: %w", err)
}

// DialTimeout implements memberlist.Transport.
func (t *netTransport) DialTimeout(addr string, timeout time.Duration) (net.Conn, error) {
	return t.DialAddressTimeout(memberlist.Address{Addr: addr}, timeout)
}

// DialAddressTimeout implements memberlist.NodeAwareTransport: NetTransport's own calls
// its own DialTimeout, not this one.
func (t *netTransport) DialAddressTimeout(a memberlist.Address, timeout time.Duration) (net.Conn, error) {
	d := net.Dialer{Timeout: timeout}
	conn, err := d.DialContext(t.ctx, "tcp", a.Addr)
	if err != nil {
		return nil, err
	}
	if err := conn.SetDeadline(time.Now().Add(timeout)); err != nil {
		return nil, fmt.Errorf("set deadline on stream to %s: %w", a.Addr, errors.Join(err, conn.Close()))
	}
	return conn, nil
}

// Shutdown implements memberlist.Transport: it ends the dials in progress, then closes
// the listeners.
func (t *netTransport) Shutdown() error {
	t.cancel()
	return t.NetTransport.Shutdown()
}
