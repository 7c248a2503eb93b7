package relay_test

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"math/big"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/ctxprop/ctxprop/ops"
	"github.com/ctxprop/ctxprop/relay"
	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nkeys"
)

// startNATSWith runs a real NATS server with JetStream and the options edit sets.
func startNATSWith(t *testing.T, edit func(*server.Options)) *server.Server {
	t.Helper()
	o := &server.Options{Host: "127.0.0.1", Port: -1, JetStream: true, StoreDir: t.TempDir(), NoLog: true, NoSigs: true}
	edit(o)
	s, err := server.NewServer(o)
	if err != nil {
		t.Fatal(err)
	}
	go s.Start()
	if !s.ReadyForConnections(10 * time.Second) {
		t.Fatal("nats-server did not start")
	}
	t.Cleanup(func() { s.Shutdown(); s.WaitForShutdown() })
	return s
}

func writeFile(t *testing.T, name, content string) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), name)
	if err := os.WriteFile(p, []byte(content), 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

// testCA makes a CA and a server certificate for the DNS name host, and writes the CA's
// PEM to a file.
func testCA(t *testing.T, host string) (caFile string, serverCert tls.Certificate) {
	t.Helper()
	caKey, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	ca := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "test CA"}, NotBefore: time.Now().Add(-time.Hour),
		NotAfter: time.Now().Add(time.Hour), IsCA: true, KeyUsage: x509.KeyUsageCertSign, BasicConstraintsValid: true}
	caDER, err := x509.CreateCertificate(rand.Reader, ca, ca, &caKey.PublicKey, caKey)
	if err != nil {
		t.Fatal(err)
	}
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	leaf := &x509.Certificate{SerialNumber: big.NewInt(2), Subject: pkix.Name{CommonName: host}, DNSNames: []string{host},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour), ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}}
	caCert, _ := x509.ParseCertificate(caDER)
	leafDER, err := x509.CreateCertificate(rand.Reader, leaf, caCert, &key.PublicKey, caKey)
	if err != nil {
		t.Fatal(err)
	}
	caFile = writeFile(t, "ca.pem", string(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: caDER})))
	return caFile, tls.Certificate{Certificate: [][]byte{leafDER}, PrivateKey: key}
}

// TestRelay_Auth the relay authenticates to a real server with a token file, a user and
// password file, an nkey seed file, or over TLS checked against relay.tls_ca_file and tls_server_name, and
// replicates; with the wrong secret or name it never gets connected.
func TestRelay_Auth(t *testing.T) {
	caFile, cert := testCA(t, "nats.test")
	tlsServer := func(o *server.Options) {
		o.TLS = true
		o.TLSConfig = &tls.Config{Certificates: []tls.Certificate{cert}, MinVersion: tls.VersionTLS12}
		o.TLSTimeout = 2
	}
	// An nkey user: the server knows the public key, the relay holds the seed.
	nkeySeed := func(t *testing.T) (public string, seed []byte) {
		kp, err := nkeys.CreateUser()
		if err != nil {
			t.Fatal(err)
		}
		public, err = kp.PublicKey()
		if err != nil {
			t.Fatal(err)
		}
		seed, err = kp.Seed()
		if err != nil {
			t.Fatal(err)
		}
		return public, seed
	}
	nkeyPub, nkeyGood := nkeySeed(t)
	_, nkeyOther := nkeySeed(t)
	for _, tt := range []struct {
		name   string
		server func(*server.Options)
		scheme string
		good   func(*relay.Options)
		bad    func(*relay.Options)
	}{
		{"token", func(o *server.Options) { o.Authorization = "s3cret" }, "nats",
			func(o *relay.Options) { o.TokenFile = writeFile(t, "token", "s3cret\n") },
			func(o *relay.Options) { o.TokenFile = writeFile(t, "token", "wrong\n") }},
		{"user and password", func(o *server.Options) { o.Username, o.Password = "ctxprop", "pa55" }, "nats",
			func(o *relay.Options) { o.User, o.PasswordFile = "ctxprop", writeFile(t, "pw", "pa55") },
			func(o *relay.Options) { o.User, o.PasswordFile = "ctxprop", writeFile(t, "pw", "nope") }},
		{"nkey", func(o *server.Options) { o.Nkeys = []*server.NkeyUser{{Nkey: nkeyPub}} }, "nats",
			func(o *relay.Options) { o.NKeyFile = writeFile(t, "user.nk", string(nkeyGood)+"\n") },
			func(o *relay.Options) { o.NKeyFile = writeFile(t, "other.nk", string(nkeyOther)+"\n") }},
		{"tls server name", tlsServer, "tls",
			func(o *relay.Options) { o.CAFile, o.ServerName = caFile, "nats.test" },
			func(o *relay.Options) { o.CAFile = caFile }}, // 127.0.0.1 is not in the certificate
	} {
		t.Run(tt.name, func(t *testing.T) {
			ns := startNATSWith(t, tt.server)
			url := tt.scheme + "://" + ns.Addr().String()
			a, b, c := openStore(t, "a"), openStore(t, "b"), openStore(t, "c")
			ra := startRelay(t, url, "east", a, tt.good)
			rb := startRelay(t, url, "west", b, tt.good)
			rc := startRelay(t, url, "north", c, tt.bad)
			eventually(t, 10*time.Second, "relays with the right secret connect", func() error { return errors.Join(ra.Ready(), rb.Ready()) })
			apply(t, a, "c", ops.Op{Kind: ops.Incr, Key: "n", By: 2})
			eventually(t, 10*time.Second, "replicated", counterIs(b, "c", "n", 2))
			eventually(t, 10*time.Second, "the relay with the wrong secret or name fails to connect", func() error {
				if metric(t, rc, "ctxprop_relay_errors_total") < 1 {
					return errors.New("no error counted")
				}
				return nil
			})
			if err := rc.Ready(); err == nil {
				t.Fatal("the relay with the wrong secret or name is connected")
			}
		})
	}
}
