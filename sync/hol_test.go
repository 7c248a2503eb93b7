package peersync

import (
	"context"
	"crypto/rand"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"log"
	"net"
	"path/filepath"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/ctxprop/ctxprop/localstore"
	"github.com/ctxprop/ctxprop/ops"
	"github.com/hashicorp/memberlist"
	"github.com/prometheus/client_golang/prometheus"
)

// blackHole is a memberlist transport for a peer that is reachable by UDP, so it answers
// memberlist's probes and stays alive, and unreachable by TCP: its TCP port listens with
// a full accept queue, so the kernel drops every SYN and a dial to it hangs until the
// dialer's timeout, as a dial to a host behind a DROP rule does. It dials out normally
// (to join).
type blackHole struct {
	udp     *net.UDPConn
	tcp     net.Listener
	held    net.Conn // the one connection that fills the accept queue
	packets chan *memberlist.Packet
	streams chan net.Conn
	done    chan struct{}
	wg      sync.WaitGroup
}

var _ memberlist.Transport = (*blackHole)(nil)

func newBlackHole(t *testing.T) *blackHole {
	t.Helper()
	tcp, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	rc, err := tcp.(*net.TCPListener).SyscallConn()
	if err != nil {
		t.Fatal(err)
	}
	var lerr error
	if err := rc.Control(func(fd uintptr) { lerr = syscall.Listen(int(fd), 0) }); err != nil || lerr != nil {
		t.Fatalf("listen with backlog 0: %v %v", err, lerr)
	}
	held, err := net.DialTimeout("tcp", tcp.Addr().String(), 5*time.Second)
	if err != nil {
		t.Fatalf("fill the accept queue: %v", err)
	}
	// The queue is full: a second dial must hang, or the test proves nothing.
	if c, err := net.DialTimeout("tcp", tcp.Addr().String(), 300*time.Millisecond); err == nil {
		c.Close()
		t.Fatal("a dial to the black hole completed: the kernel does not drop SYNs to a full accept queue here")
	}
	udp, err := net.ListenUDP("udp", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1), Port: tcp.Addr().(*net.TCPAddr).Port})
	if err != nil {
		t.Fatal(err)
	}
	b := &blackHole{udp: udp, tcp: tcp, held: held, packets: make(chan *memberlist.Packet), streams: make(chan net.Conn), done: make(chan struct{})}
	b.wg.Add(1)
	go b.read()
	return b
}

func (b *blackHole) read() {
	defer b.wg.Done()
	for {
		buf := make([]byte, 65536)
		n, from, err := b.udp.ReadFrom(buf)
		if err != nil {
			return // closed by Shutdown; memberlist stops reading the channel then too
		}
		select {
		case b.packets <- &memberlist.Packet{Buf: buf[:n], From: from, Timestamp: time.Now()}:
		case <-b.done:
			return
		}
	}
}

func (b *blackHole) addr() string { return b.tcp.Addr().String() }

func (b *blackHole) FinalAdvertiseAddr(string, int) (net.IP, int, error) {
	a := b.udp.LocalAddr().(*net.UDPAddr)
	return a.IP, a.Port, nil
}

func (b *blackHole) WriteTo(p []byte, addr string) (time.Time, error) {
	to, err := net.ResolveUDPAddr("udp", addr)
	if err != nil {
		return time.Time{}, err
	}
	_, err = b.udp.WriteTo(p, to)
	return time.Now(), err
}

func (b *blackHole) PacketCh() <-chan *memberlist.Packet { return b.packets }

func (b *blackHole) DialTimeout(addr string, timeout time.Duration) (net.Conn, error) {
	return net.DialTimeout("tcp", addr, timeout)
}

func (b *blackHole) StreamCh() <-chan net.Conn { return b.streams }

func (b *blackHole) Shutdown() error {
	close(b.done)
	err := errors.Join(b.udp.Close(), b.tcp.Close(), b.held.Close())
	b.wg.Wait()
	return err
}

// startBlackHoled starts a bare memberlist member named like a sidecar over a blackHole
// and joins it to join; its own messages it drops (no delegate).
func startBlackHoled(t *testing.T, name string, key []byte, join string) *memberlist.Memberlist {
	t.Helper()
	bh := newBlackHole(t)
	mc := memberlist.DefaultLANConfig()
	mc.Name = name
	mc.Transport = bh
	mc.BindAddr, mc.AdvertiseAddr = "127.0.0.1", "127.0.0.1"
	mc.BindPort = bh.udp.LocalAddr().(*net.UDPAddr).Port
	mc.AdvertisePort = mc.BindPort
	mc.Logger = log.New(testWriter{t}, name+" ", 0)
	if key != nil {
		kr, err := memberlist.NewKeyring(nil, key)
		if err != nil {
			t.Fatal(err)
		}
		mc.Keyring = kr
	}
	ml, err := memberlist.Create(mc)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		_ = ml.Shutdown()
	})
	if _, err := ml.Join([]string{join}); err != nil {
		t.Fatal(err)
	}
	return ml
}

// bigValue is a map value whose delta is over one UDP packet (maxPacket), so it is sent
// by TCP: random, so deflate does not shrink it.
func bigValue(t *testing.T) json.RawMessage {
	t.Helper()
	b := make([]byte, 1536)
	if _, err := rand.Read(b); err != nil {
		t.Fatal(err)
	}
	v, _ := json.Marshal(base64.StdEncoding.EncodeToString(b))
	return v
}

// TestSyncer_UnreachablePeerDelaysNoOther: node0 has two peers, node1 and a peer whose
// TCP dials hang (SPEC §7: "Sends to one slow or unreachable peer never delay sends to
// others"; issue 11). Every delta is over one UDP packet, so every push goes by TCP, and
// the dial timeout is a minute: deltas written one after the other on node0 must all
// reach node1 while node0's first send to the unreachable peer is still pending. Before
// the per-peer send queues, the round waited on that dial and node1 got nothing.
// Anti-entropy, which would repair node1 in the end, is kept out of the way.
func TestSyncer_UnreachablePeerDelaysNoOther(t *testing.T) {
	key := []byte("0123456789abcdef0123456789abcdef")
	addrs := []string{freeAddr(t), freeAddr(t)}
	mod := func(o *Options) {
		o.TCPTimeout = time.Minute
		o.PushPullInterval = time.Hour
	}
	nodes := make([]*testNode, len(addrs))
	for i := range nodes {
		nodes[i] = startNodeWith(t, fmt.Sprintf("node%d", i), filepath.Join(t.TempDir(), "ctx.db"), addrs[i], addrs, key, mod)
	}
	// Named to sort before node1: the engine sends to the peers of a round in name order.
	const ghost = "a-ghost/00000000000000ff"
	startBlackHoled(t, ghost, key, addrs[0])
	ghostStatus := func() (alive bool, errs uint64) {
		for _, p := range nodes[0].sync.Peers() {
			if p.Name == ghost {
				return p.State == StateAlive, p.Errors
			}
		}
		return false, 0
	}
	waitFor(t, 30*time.Second, "node0 to see node1 and the black-holed peer alive", func() bool {
		alive, _ := ghostStatus()
		return alive && nodes[0].sync.engine.Established(ghost) && len(nodes[0].sync.Peers()) == 2
	})

	ctx := context.Background()
	const n = 20
	for i := range n {
		name := fmt.Sprintf("hol-%d", i)
		list := []ops.Op{{Kind: ops.Put, Map: "m", Key: "v", Value: bigValue(t)}}
		if _, err := nodes[0].store.Apply(ctx, name, list, localstore.Durable); err != nil {
			t.Fatal(err)
		}
		waitFor(t, 30*time.Second, fmt.Sprintf("write %d of %d on node1", i+1, n), func() bool {
			_, err := nodes[1].store.Get(name)
			return err == nil
		})
	}
	// The property holds only if the black-holed peer was sent to and still is: alive,
	// and no send to it has failed yet (its dial has not timed out).
	alive, errs := ghostStatus()
	if !alive || errs != 0 || !nodes[0].sync.engine.out.Load().busy(ghost) {
		t.Fatalf("black-holed peer: alive %v, %d failed sends, send in progress %v; want alive with its first send pending",
			alive, errs, nodes[0].sync.engine.out.Load().busy(ghost))
	}
	// Its deltas meanwhile wait joined in one message, not one per round, as a scrape
	// of the metrics shows.
	reg := prometheus.NewRegistry()
	reg.MustRegister(nodes[0].sync)
	coalesced, dropped := -1.0, -1.0
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		for _, m := range mf.GetMetric() {
			switch {
			case mf.GetName() == "ctxprop_sync_send_coalesced_deltas_total":
				coalesced = m.GetCounter().GetValue()
			case mf.GetName() == "ctxprop_sync_send_dropped_messages_total" && m.GetLabel()[0].GetValue() == "delta":
				dropped = m.GetCounter().GetValue()
			}
		}
	}
	if coalesced <= 0 || dropped != 0 {
		t.Errorf("deltas for the black-holed peer: %v coalesced, %v dropped; want them joined, none dropped", coalesced, dropped)
	}
}
