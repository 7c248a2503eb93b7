package main

import (
	"context"
	"net/netip"
	"net/url"

	"github.com/ctxprop/ctxprop/crdt"
	"github.com/ctxprop/ctxprop/localstore"
	"github.com/ctxprop/ctxprop/relay"
	peersync "github.com/ctxprop/ctxprop/sync"
)

// newRelay makes the replication between clusters of cfg.Relay over n.store, or returns
// nil without relay.urls. Call it once the store is open; the caller opens it.
func newRelay(n *node) (*relay.Relay, error) {
	c := n.cfg.Relay
	if len(c.URLs) == 0 {
		return nil, nil
	}
	if c.TLSCAFile == "" && c.CredsFile == "" && c.NKeyFile == "" && c.TokenFile == "" && c.User == "" {
		for _, raw := range c.URLs {
			if u, err := url.Parse(raw); err == nil && (u.Scheme == "nats" || u.Scheme == "ws") && !isLoopbackHost(u.Hostname()) {
				n.log.Warn("relay: NATS is reached in plaintext and without credentials; whoever reaches it can read and write every context of every cluster. Set relay.creds_file (or another way to authenticate) and a tls:// URL with relay.tls_ca_file", "url", raw)
				break
			}
		}
	}
	return relay.New(relay.Options{
		Store:         n.store,
		Logger:        n.log.Named("relay"),
		URLs:          c.URLs,
		Cluster:       c.Cluster,
		SubjectPrefix: c.SubjectPrefix,
		Stream:        c.Stream,
		Bucket:        c.Bucket,
		Retention:     c.Retention,
		StateInterval: c.StateInterval,
		FlushInterval: c.FlushInterval,
		AckWait:       c.AckWait,
		MaxInFlight:   c.MaxInFlight,
		MaxBatch:      c.MaxBatch,
		CredsFile:     c.CredsFile,
		NKeyFile:      c.NKeyFile,
		TokenFile:     c.TokenFile,
		User:          c.User,
		PasswordFile:  c.PasswordFile,
		CAFile:        c.TLSCAFile,
		CertFile:      c.TLSCertFile,
		KeyFile:       c.TLSKeyFile,
		ServerName:    c.TLSServerName,
		// A replica alive in another cluster is not in this cluster's membership; it
		// counts as alive for as long as retirement waits for a replica of this one.
		PresenceTTL: n.cfg.Sync.RetireAfter,
	})
}

// retirer is what the syncer folds replicas gone from the fleet with: the store, and
// with a relay only the replicas no cluster has heard from for sync.retire_after.
func (n *node) retirer() peersync.Retirer {
	if n.relay == nil {
		return n.store
	}
	return clusterRetirer{n.store, n.relay}
}

// clusterRetirer keeps the replicas alive in any cluster out of retirement: the gossip
// layer sees only its own cluster's members, and would otherwise fold every replica of
// the other clusters after sync.retire_after, and those sidecars, learning it, would
// stop and restart under new replica ids (README, "Multi-cluster").
type clusterRetirer struct {
	store *localstore.Store
	relay *relay.Relay
}

// CounterReplicas leaves out the replicas alive in some cluster, and every replica while
// the relay has not read the replicas bucket yet: nothing is retired on a guess.
func (r clusterRetirer) CounterReplicas() map[crdt.ReplicaID]int {
	alive, ok := r.relay.AliveReplicas()
	if !ok {
		return nil
	}
	holders := r.store.CounterReplicas()
	for id := range holders {
		if alive[id] {
			delete(holders, id)
		}
	}
	return holders
}

func (r clusterRetirer) Retire(ctx context.Context, from crdt.ReplicaID) (int, error) {
	return r.store.Retire(ctx, from)
}

var _ peersync.Retirer = clusterRetirer{}

// isLoopbackHost reports whether host is localhost or a loopback address.
func isLoopbackHost(host string) bool {
	if host == "localhost" {
		return true
	}
	ip, err := netip.ParseAddr(host)
	return err == nil && ip.IsLoopback()
}
