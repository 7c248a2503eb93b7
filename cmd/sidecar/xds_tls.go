package main

import (
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"os"
	"time"

	"github.com/ctxprop/ctxprop/config"
)

// xdsTLSConfig reads the TLS files of cfg for the connection to sync.xds. It returns nil
// when sync.xds_ca_file is empty: config.Validate allows that only for a loopback
// sync.xds or with sync.xds_insecure, and refuses the other TLS settings without it.
//
// The files are read once: rotating them takes a restart. A client certificate that has
// already expired is refused here, where the user sees it, rather than at every
// reconnect of a stream that runs in the background.
func xdsTLSConfig(cfg config.Sync, now time.Time) (*tls.Config, error) {
	if cfg.XDSCAFile == "" {
		return nil, nil
	}
	pem, err := os.ReadFile(cfg.XDSCAFile)
	if err != nil {
		return nil, fmt.Errorf("sync.xds_ca_file: %w; set it to the PEM file of the CA that signs the xDS server's certificate", err)
	}
	roots := x509.NewCertPool()
	if !roots.AppendCertsFromPEM(pem) {
		return nil, fmt.Errorf("sync.xds_ca_file %s: no PEM certificate in it; set it to the PEM file (-----BEGIN CERTIFICATE-----) of the CA that signs the xDS server's certificate", cfg.XDSCAFile)
	}
	tc := &tls.Config{
		RootCAs:    roots,
		ServerName: cfg.XDSServerName, // empty: gRPC checks the host of sync.xds
		MinVersion: tls.VersionTLS12,
	}
	if cfg.XDSCertFile != "" {
		cert, err := tls.LoadX509KeyPair(cfg.XDSCertFile, cfg.XDSKeyFile)
		if err != nil {
			return nil, fmt.Errorf("sync.xds_cert_file %s, sync.xds_key_file %s: %w; set them to the PEM client certificate and its private key", cfg.XDSCertFile, cfg.XDSKeyFile, err)
		}
		if leaf := cert.Leaf; leaf != nil && now.After(leaf.NotAfter) {
			return nil, fmt.Errorf("sync.xds_cert_file %s: the client certificate expired at %s; renew it", cfg.XDSCertFile, leaf.NotAfter.UTC().Format(time.RFC3339))
		}
		tc.Certificates = []tls.Certificate{cert}
	}
	return tc, nil
}
