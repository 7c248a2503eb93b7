package main

import (
	"context"
	"errors"
	"fmt"
	"time"

	peersync "github.com/ctxprop/ctxprop/sync"
	"github.com/ctxprop/ctxprop/sync/discovery"
)

// syncPart is a node's replication layer (SPEC §7): the peer source and the syncer.
type syncPart struct {
	source *discovery.Multi
	syncer *peersync.Syncer
}

// startSync opens the peer source of cfg.Sync and the syncer over n.store. Call it once
// the store is open and before admin.New: the syncer is admin.Options.Peers.
func startSync(n *node) (*syncPart, error) {
	cfg := n.cfg
	xdsTLS, err := xdsTLSConfig(cfg.Sync, time.Now())
	if err != nil {
		return nil, err
	}
	if cfg.Sync.XDS != "" && cfg.Sync.XDSInsecure {
		n.log.Warn("sync.xds_insecure is true: the connection to the xDS server is plaintext, and whoever can change its answers on the way chooses this sidecar's peers; set sync.xds_ca_file unless a mesh encrypts it", "xds", cfg.Sync.XDS)
	}
	src, err := discovery.FromConfig(cfg.Sync.Peers, cfg.Sync.DNS, cfg.Sync.XDS, discovery.Options{
		NodeID: cfg.Node.Name,
		Logger: n.log.Named("discovery"),
		XDSTLS: xdsTLS,
		// Without TLS, config.Validate has checked that sync.xds is on loopback or that
		// sync.xds_insecure allows plaintext.
		XDSInsecure: xdsTLS == nil,
	})
	if err != nil {
		return nil, err
	}
	if err := src.Open(context.Background()); err != nil {
		return nil, fmt.Errorf("peer discovery: %w", err)
	}
	s, err := peersync.New(peersync.Options{
		Store:    n.store,
		Logger:   n.log.Named("sync"),
		Source:   src,
		Name:     cfg.Node.Name,
		Address:  cfg.Sync.Address,
		Interval: cfg.Sync.Interval,
		Fanout:   cfg.Sync.Fanout,
		Keyring:  n.keyring,
		MaxPeers: cfg.Sync.MaxPeers,
		// Per-peer metric series only when asked for (issue 11).
		PeerMetrics: cfg.Sync.PeerMetrics,
		// Replicas gone for sync.retire_after are folded into this one (SPEC §7).
		Retirer:     n.retirer(),
		RetireAfter: cfg.Sync.RetireAfter,
		// Spans of rounds that sent deltas and of push-pull exchanges.
		TracerProvider: n.tp,
	})
	if err == nil {
		err = s.Open()
	}
	if err != nil {
		return nil, errors.Join(err, src.Close())
	}
	return &syncPart{source: src, syncer: s}, nil
}

// close pushes the last deltas, leaves the fleet and stops discovery. Call it after the
// proxy and the admin API stopped taking writes and before the store closes.
func (p *syncPart) close(ctx context.Context) error {
	return errors.Join(p.syncer.Close(ctx), p.source.Close())
}
