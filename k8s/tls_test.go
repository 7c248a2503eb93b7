package k8s

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"testing"
	"time"
)

// testCA is a certificate authority made by a test, standing in for cert-manager.
type testCA struct {
	cert    *x509.Certificate
	key     *ecdsa.PrivateKey
	certPEM []byte
	serial  int64
}

func newTestCA(t *testing.T) *testCA {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber:          big.NewInt(1),
		Subject:               pkix.Name{CommonName: "ctxprop test CA"},
		NotBefore:             time.Now().Add(-time.Hour),
		NotAfter:              time.Now().Add(24 * time.Hour),
		IsCA:                  true,
		BasicConstraintsValid: true,
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageDigitalSignature,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		t.Fatal(err)
	}
	return &testCA{cert: cert, key: key, certPEM: pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), serial: 1}
}

// issue returns a serving key pair for 127.0.0.1 in PEM and the certificate's serial number.
func (ca *testCA) issue(t *testing.T) (certPEM, keyPEM []byte, serial int64) {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	ca.serial++
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(ca.serial),
		Subject:      pkix.Name{CommonName: "ctxprop-webhook"},
		NotBefore:    time.Now().Add(-time.Hour),
		NotAfter:     time.Now().Add(24 * time.Hour),
		IPAddresses:  []net.IP{net.IPv4(127, 0, 0, 1)},
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca.cert, &key.PublicKey, ca.key)
	if err != nil {
		t.Fatal(err)
	}
	keyDER, err := x509.MarshalECPrivateKey(key)
	if err != nil {
		t.Fatal(err)
	}
	return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}),
		pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: keyDER}), ca.serial
}

// secretDir lays out key pairs the way the kubelet mounts a Secret: tls.crt and tls.key are
// symlinks through ..data, which is swapped atomically to a new timestamped folder.
type secretDir struct {
	dir string
	gen int
}

func (s *secretDir) write(t *testing.T, certPEM, keyPEM []byte) {
	t.Helper()
	s.gen++
	ts := filepath.Join(s.dir, "..gen"+string(rune('0'+s.gen)))
	if err := os.Mkdir(ts, 0o755); err != nil {
		t.Fatal(err)
	}
	for name, b := range map[string][]byte{"tls.crt": certPEM, "tls.key": keyPEM} {
		if err := os.WriteFile(filepath.Join(ts, name), b, 0o600); err != nil {
			t.Fatal(err)
		}
	}
	tmp := filepath.Join(s.dir, "..data_tmp")
	if err := os.Symlink(filepath.Base(ts), tmp); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(tmp, filepath.Join(s.dir, "..data")); err != nil {
		t.Fatal(err)
	}
	for _, name := range []string{"tls.crt", "tls.key"} {
		link := filepath.Join(s.dir, name)
		if _, err := os.Lstat(link); err == nil {
			continue
		}
		if err := os.Symlink(filepath.Join("..data", name), link); err != nil {
			t.Fatal(err)
		}
	}
}

func (s *secretDir) certFile() string { return filepath.Join(s.dir, "tls.crt") }
func (s *secretDir) keyFile() string  { return filepath.Join(s.dir, "tls.key") }

// servedSerial opens a new TLS connection and returns the serial number of the certificate
// the server presents, verified against the CA.
func servedSerial(t *testing.T, addr string, ca *testCA) int64 {
	t.Helper()
	pool := x509.NewCertPool()
	pool.AddCert(ca.cert)
	conn, err := tls.Dial("tcp", addr, &tls.Config{RootCAs: pool, ServerName: "127.0.0.1"})
	if err != nil {
		t.Fatalf("TLS dial %s: %v", addr, err)
	}
	defer conn.Close()
	return conn.ConnectionState().PeerCertificates[0].SerialNumber.Int64()
}

func TestServer_CertReload(t *testing.T) {
	ca := newTestCA(t)
	secret := &secretDir{dir: t.TempDir()}
	certPEM, keyPEM, first := ca.issue(t)
	secret.write(t, certPEM, keyPEM)

	cfg := DefaultServerConfig()
	cfg.Address = "127.0.0.1:0"
	cfg.CertFile, cfg.KeyFile = secret.certFile(), secret.keyFile()
	cfg.Logger = testLogger(t)
	srv, err := NewServer(cfg)
	if err != nil {
		t.Fatal(err)
	}
	if err := srv.Open(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		if err := srv.Close(ctx); err != nil {
			t.Error(err)
		}
		select {
		case <-srv.Done():
		default:
			t.Error("Done not closed after Close: the serve goroutine is still running")
		}
		if err := srv.Close(ctx); err != nil {
			t.Errorf("second Close: %v", err)
		}
	})
	addr := srv.Addr().String()

	if got, want := servedSerial(t, addr, ca), first; got != want {
		t.Fatalf("served serial %d, want %d", got, want)
	}

	// Rotation the kubelet's way: both files change at once through the ..data symlink.
	certPEM, keyPEM, second := ca.issue(t)
	secret.write(t, certPEM, keyPEM)
	if got, want := servedSerial(t, addr, ca), second; got != want {
		t.Errorf("after rotation: served serial %d, want %d", got, want)
	}

	// A half-written rotation (new certificate, old key) keeps the working pair in service
	// until the key arrives.
	certPEM, keyPEM, third := ca.issue(t)
	if err := os.WriteFile(filepath.Join(secret.dir, "..data", "tls.crt"), certPEM, 0o600); err != nil {
		t.Fatal(err)
	}
	if got, want := servedSerial(t, addr, ca), second; got != want {
		t.Errorf("with a mismatched pair: served serial %d, want the previous %d", got, want)
	}
	if err := os.WriteFile(filepath.Join(secret.dir, "..data", "tls.key"), keyPEM, 0o600); err != nil {
		t.Fatal(err)
	}
	if got, want := servedSerial(t, addr, ca), third; got != want {
		t.Errorf("after the key arrived: served serial %d, want %d", got, want)
	}
}

func TestNewServer_Errors(t *testing.T) {
	dir := t.TempDir()
	tests := []struct {
		name   string
		change func(*ServerConfig)
		want   string
	}{
		{"no cert flags", func(c *ServerConfig) { c.CertFile = "" }, "set -cert-file and -key-file"},
		{"missing cert", func(c *ServerConfig) { c.CertFile = filepath.Join(dir, "nope.crt") }, "set -cert-file"},
		{"bad address", func(c *ServerConfig) { c.Address = "8443" }, "address"},
		{"unannotated", func(c *ServerConfig) { c.Inject.InjectUnannotated = true }, "annotate pods"},
		{"bad inject config", func(c *ServerConfig) { c.Inject.Image = "" }, "image is empty"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			cfg := DefaultServerConfig()
			cfg.CertFile, cfg.KeyFile = filepath.Join(dir, "tls.crt"), filepath.Join(dir, "tls.key")
			tt.change(&cfg)
			_, err := NewServer(cfg)
			if err == nil || !contains(err.Error(), tt.want) {
				t.Fatalf("err = %v, want it to contain %q", err, tt.want)
			}
		})
	}
}
