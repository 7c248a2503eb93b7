package k8s

import (
	"crypto/tls"
	"fmt"
	"os"
	"sync"

	"github.com/hashicorp/go-hclog"
)

// certReloader serves a key pair from files and picks up new files without a restart, as
// cert-manager or a Secret update writes them. Every handshake stats both files (cheap, and an
// admission webhook sees few connections) and reloads when either changed; a pair that does
// not load yet, such as a certificate written before its key, leaves the old pair in service
// and is tried again on the next handshake.
type certReloader struct {
	certFile, keyFile string
	logger            hclog.Logger

	mu        sync.Mutex
	cert      *tls.Certificate
	certStamp os.FileInfo
	keyStamp  os.FileInfo
}

func newCertReloader(certFile, keyFile string, logger hclog.Logger) (*certReloader, error) {
	r := &certReloader{certFile: certFile, keyFile: keyFile, logger: logger}
	certInfo, keyInfo, err := r.stat()
	if err != nil {
		return nil, err
	}
	if err := r.load(certInfo, keyInfo); err != nil {
		return nil, err
	}
	return r, nil
}

func (r *certReloader) stat() (cert, key os.FileInfo, err error) {
	if cert, err = os.Stat(r.certFile); err != nil {
		return nil, nil, fmt.Errorf("webhook certificate: %w; set -cert-file to the PEM certificate", err)
	}
	if key, err = os.Stat(r.keyFile); err != nil {
		return nil, nil, fmt.Errorf("webhook key: %w; set -key-file to the PEM private key", err)
	}
	return cert, key, nil
}

func (r *certReloader) load(certInfo, keyInfo os.FileInfo) error {
	pair, err := tls.LoadX509KeyPair(r.certFile, r.keyFile)
	if err != nil {
		return fmt.Errorf("webhook key pair %s, %s: %w", r.certFile, r.keyFile, err)
	}
	r.cert, r.certStamp, r.keyStamp = &pair, certInfo, keyInfo
	return nil
}

func changed(old, cur os.FileInfo) bool {
	// SameFile catches a symlink swapped to a new file (how the kubelet updates a mounted
	// Secret) even when size and time match.
	return !os.SameFile(old, cur) || !old.ModTime().Equal(cur.ModTime()) || old.Size() != cur.Size()
}

// GetCertificate is a tls.Config.GetCertificate; it is safe for concurrent use.
func (r *certReloader) GetCertificate(*tls.ClientHelloInfo) (*tls.Certificate, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	certInfo, keyInfo, err := r.stat()
	if err != nil {
		r.logger.Warn("cannot check the key pair for changes; serving the loaded one", "error", err)
		return r.cert, nil
	}
	if changed(r.certStamp, certInfo) || changed(r.keyStamp, keyInfo) {
		if err := r.load(certInfo, keyInfo); err != nil {
			r.logger.Warn("new key pair does not load yet; serving the previous one", "error", err)
		} else {
			r.logger.Info("reloaded the key pair", "cert_file", r.certFile)
		}
	}
	return r.cert, nil
}
