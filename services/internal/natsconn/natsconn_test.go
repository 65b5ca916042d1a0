package natsconn_test

import (
	"bytes"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"log/slog"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/jwt/v2"
	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nkeys"
	"go.uber.org/goleak"

	"github.com/wsgate/wsgate/services/internal/logging"
	"github.com/wsgate/wsgate/services/internal/natsconn"
	"github.com/wsgate/wsgate/services/internal/testkit"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}

// wait is how long a test waits for what should happen at once on loopback.
const wait = 5 * time.Second

// syncBuffer is a bytes.Buffer safe for the NATS client's goroutines.
type syncBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *syncBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *syncBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

// writeFile writes data to name in dir and returns its path.
func writeFile(t *testing.T, dir, name string, data []byte) string {
	t.Helper()
	path := filepath.Join(dir, name)
	if err := os.WriteFile(path, data, 0o600); err != nil {
		t.Fatal(err)
	}
	return path
}

// userNKey returns a new user NKey's public key and seed.
func userNKey(t *testing.T) (string, []byte) {
	t.Helper()
	kp, err := nkeys.CreateUser()
	if err != nil {
		t.Fatal(err)
	}
	pub, err := kp.PublicKey()
	if err != nil {
		t.Fatal(err)
	}
	seed, err := kp.Seed()
	if err != nil {
		t.Fatal(err)
	}
	return pub, seed
}

// operator is an operator and one account, as a server in operator mode
// trusts them.
type operator struct {
	pub     string
	account nkeys.KeyPair
}

// newOperator returns an operator with one account, and the server options
// that trust it, the account's JWT in a memory resolver.
func newOperator(t *testing.T) (operator, server.Options) {
	t.Helper()
	okp, err := nkeys.CreateOperator()
	if err != nil {
		t.Fatal(err)
	}
	akp, err := nkeys.CreateAccount()
	if err != nil {
		t.Fatal(err)
	}
	opub, _ := okp.PublicKey()
	apub, _ := akp.PublicKey()
	ajwt, err := jwt.NewAccountClaims(apub).Encode(okp)
	if err != nil {
		t.Fatal(err)
	}
	resolver := &server.MemAccResolver{}
	if err := resolver.Store(apub, ajwt); err != nil {
		t.Fatal(err)
	}
	return operator{pub: opub, account: akp}, server.Options{TrustedKeys: []string{opub}, AccountResolver: resolver}
}

// creds returns a credentials file (user JWT + seed) of a new user of
// account, and the user's seed.
func creds(t *testing.T, account nkeys.KeyPair) ([]byte, string) {
	t.Helper()
	upub, seed := userNKey(t)
	ujwt, err := jwt.NewUserClaims(upub).Encode(account)
	if err != nil {
		t.Fatal(err)
	}
	file, err := jwt.FormatUserConfig(ujwt, seed)
	if err != nil {
		t.Fatal(err)
	}
	return file, string(seed)
}

// pkiFiles are the PEM files of a test PKI.
type pkiFiles struct {
	ca, serverCert, serverKey, clientCert, clientKey string
	// strangerCert and strangerKey are a client certificate signed by
	// another CA.
	strangerCert, strangerKey string
}

// newPKI writes a CA, a server certificate for 127.0.0.1 and a client
// certificate signed by it, and a client certificate signed by another CA,
// to dir as PEM files.
func newPKI(t *testing.T, dir string) pkiFiles {
	t.Helper()
	ca, caKey := newCert(t, "wsgate test CA", nil, nil, nil)
	other, otherKey := newCert(t, "another CA", nil, nil, nil)
	srv, srvKey := newCert(t, "nats", ca, caKey, []net.IP{net.ParseIP("127.0.0.1")})
	cli, cliKey := newCert(t, "wsgate-dispatcher", ca, caKey, nil)
	str, strKey := newCert(t, "stranger", other, otherKey, nil)
	return pkiFiles{
		ca:           writeFile(t, dir, "ca.pem", certPEM(ca)),
		serverCert:   writeFile(t, dir, "server.pem", certPEM(srv)),
		serverKey:    writeFile(t, dir, "server-key.pem", keyPEM(t, srvKey)),
		clientCert:   writeFile(t, dir, "client.pem", certPEM(cli)),
		clientKey:    writeFile(t, dir, "client-key.pem", keyPEM(t, cliKey)),
		strangerCert: writeFile(t, dir, "stranger.pem", certPEM(str)),
		strangerKey:  writeFile(t, dir, "stranger-key.pem", keyPEM(t, strKey)),
	}
}

// newCert returns an ECDSA P-256 certificate for name: a CA when parent is
// nil (self-signed), else a leaf signed by parent, for ips when given (a
// server) or for client authentication.
func newCert(t *testing.T, name string, parent *x509.Certificate, parentKey *ecdsa.PrivateKey, ips []net.IP) (*x509.Certificate, *ecdsa.PrivateKey) {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	serial, err := rand.Int(rand.Reader, big.NewInt(1<<62))
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: serial,
		Subject:      pkix.Name{CommonName: name},
		NotBefore:    time.Now().Add(-time.Hour),
		NotAfter:     time.Now().Add(time.Hour),
		KeyUsage:     x509.KeyUsageDigitalSignature,
		IPAddresses:  ips,
	}
	switch {
	case parent == nil:
		tmpl.IsCA, tmpl.BasicConstraintsValid = true, true
		tmpl.KeyUsage |= x509.KeyUsageCertSign
		parent, parentKey = tmpl, key
	case len(ips) > 0:
		tmpl.ExtKeyUsage = []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}
	default:
		tmpl.ExtKeyUsage = []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, parent, &key.PublicKey, parentKey)
	if err != nil {
		t.Fatal(err)
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		t.Fatal(err)
	}
	return cert, key
}

func certPEM(c *x509.Certificate) []byte {
	return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: c.Raw})
}

func keyPEM(t *testing.T, key *ecdsa.PrivateKey) []byte {
	t.Helper()
	der, err := x509.MarshalECPrivateKey(key)
	if err != nil {
		t.Fatal(err)
	}
	return pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: der})
}

// tlsServer returns server options that require TLS with the PKI's server
// certificate and a client certificate signed by its CA.
func tlsServer(t *testing.T, p pkiFiles) server.Options {
	t.Helper()
	tc, err := server.GenTLSConfig(&server.TLSConfigOpts{
		CertFile: p.serverCert, KeyFile: p.serverKey, CaFile: p.ca, Verify: true,
	})
	if err != nil {
		t.Fatal(err)
	}
	return server.Options{TLSConfig: tc, TLSVerify: true, TLSTimeout: 2}
}

// TestConnect_EachCredentialKindIsAcceptedAndAWrongOneNamesTheProblem: each
// way natsconn authenticates (user/password, token, NKey seed file, creds
// file, mutual TLS) connects to a server that requires it; a wrong or
// missing credential fails Connect at once with an error that names the
// problem and the variables in use, and neither the error nor the logs hold
// a secret.
func TestConnect_EachCredentialKindIsAcceptedAndAWrongOneNamesTheProblem(t *testing.T) {
	dir := t.TempDir()
	nkeyPub, nkeySeed := userNKey(t)
	_, strangerSeed := userNKey(t)
	op, operatorOpts := newOperator(t)
	goodCreds, goodCredsSeed := creds(t, op.account)
	otherOp, _ := newOperator(t) // an account the server does not trust
	badCreds, badCredsSeed := creds(t, otherOp.account)
	pki := newPKI(t, dir)

	type attempt struct {
		name string
		cfg  natsconn.Config
		want []string // substrings of Connect's error; none: it connects
	}
	tests := []struct {
		name     string
		server   server.Options
		secrets  []string // never in an error or a log line
		attempts []attempt
	}{
		{
			name:    "user and password",
			server:  server.Options{Username: "wsgate", Password: "pass-0123456789"},
			secrets: []string{"pass-0123456789", "wrong-pass-987654"},
			attempts: []attempt{
				{"right", natsconn.Config{User: "wsgate", Password: "pass-0123456789"}, nil},
				{"wrong password", natsconn.Config{User: "wsgate", Password: "wrong-pass-987654"},
					[]string{"authorization violation", "(using NATS_USER, NATS_PASSWORD)"}},
				{"none", natsconn.Config{}, []string{"authorization violation", "(no credentials or TLS configured)"}},
			},
		},
		{
			name:    "token",
			server:  server.Options{Authorization: "token-0123456789"},
			secrets: []string{"token-0123456789", "wrong-token-987654"},
			attempts: []attempt{
				{"right", natsconn.Config{Token: "token-0123456789"}, nil},
				{"wrong token", natsconn.Config{Token: "wrong-token-987654"},
					[]string{"authorization violation", "(using NATS_TOKEN)"}},
			},
		},
		{
			name:    "nkey seed file",
			server:  server.Options{Nkeys: []*server.NkeyUser{{Nkey: nkeyPub}}},
			secrets: []string{string(nkeySeed), string(strangerSeed), "SUAGARBAGE"},
			attempts: []attempt{
				{"right", natsconn.Config{NKeyFile: writeFile(t, dir, "user.nk", nkeySeed)}, nil},
				{"unknown key", natsconn.Config{NKeyFile: writeFile(t, dir, "stranger.nk", strangerSeed)},
					[]string{"authorization violation", "(using NATS_NKEY_FILE)"}},
				{"not a seed", natsconn.Config{NKeyFile: writeFile(t, dir, "garbage.nk", []byte("SUAGARBAGE\n"))},
					[]string{"NATS_NKEY_FILE: "}},
				{"missing file", natsconn.Config{NKeyFile: filepath.Join(dir, "absent.nk")},
					[]string{"NATS_NKEY_FILE: ", "no such file"}},
			},
		},
		{
			name:    "creds file",
			server:  operatorOpts,
			secrets: []string{goodCredsSeed, badCredsSeed},
			attempts: []attempt{
				{"right", natsconn.Config{Creds: writeFile(t, dir, "user.creds", goodCreds)}, nil},
				{"untrusted account", natsconn.Config{Creds: writeFile(t, dir, "other.creds", badCreds)},
					[]string{"authorization violation", "(using NATS_CREDS)"}},
				{"missing file", natsconn.Config{Creds: filepath.Join(dir, "absent.creds")},
					[]string{"NATS_CREDS: ", "no such file"}},
			},
		},
		{
			name:   "mutual TLS",
			server: tlsServer(t, pki),
			attempts: []attempt{
				{"right", natsconn.Config{TLSCA: pki.ca, TLSCert: pki.clientCert, TLSKey: pki.clientKey}, nil},
				{"server CA unknown", natsconn.Config{TLSCert: pki.clientCert, TLSKey: pki.clientKey},
					[]string{"certificate signed by unknown authority", "(using NATS_TLS_CERT, NATS_TLS_KEY)"}},
				{"no client certificate", natsconn.Config{TLSCA: pki.ca},
					[]string{"tls", "(using NATS_TLS_CA)"}},
				{"client certificate of another CA", natsconn.Config{TLSCA: pki.ca, TLSCert: pki.strangerCert, TLSKey: pki.strangerKey},
					[]string{"tls", "(using NATS_TLS_CA, NATS_TLS_CERT, NATS_TLS_KEY)"}},
				{"key without certificate", natsconn.Config{TLSCA: pki.ca, TLSKey: pki.clientKey},
					[]string{"NATS_TLS_CERT and NATS_TLS_KEY must be set together"}},
			},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			srv := testkit.RunNATS(t, &tt.server)
			for _, a := range tt.attempts {
				t.Run(a.name, func(t *testing.T) {
					var logs syncBuffer
					log := slog.New(slog.NewTextHandler(&logs, &slog.HandlerOptions{Level: slog.LevelDebug}))
					cfg := a.cfg
					cfg.URL = srv.ClientURL()
					nc, err := natsconn.Connect(cfg, "natsconn-test", log, natsconn.Hooks{})
					if err == nil {
						defer nc.Close()
					}
					switch {
					case len(a.want) == 0 && err != nil:
						t.Fatalf("Connect: %v", err)
					case len(a.want) == 0:
						if !nc.IsConnected() {
							t.Fatalf("Connect returned a connection in state %v", nc.Status())
						}
						if err := nc.Flush(); err != nil {
							t.Fatalf("flush: %v", err)
						}
					case err == nil:
						t.Fatalf("Connect succeeded (state %v), want an error naming %q; logs:\n%s", nc.Status(), a.want, logs.String())
					default:
						for _, w := range a.want {
							if !strings.Contains(strings.ToLower(err.Error()), strings.ToLower(w)) {
								t.Errorf("Connect: %v\nwant it to contain %q", err, w)
							}
						}
					}
					for _, secret := range tt.secrets {
						if err != nil && strings.Contains(err.Error(), secret) {
							t.Errorf("the error holds a secret: %v", err)
						}
						if strings.Contains(logs.String(), secret) {
							t.Errorf("the logs hold a secret:\n%s", logs.String())
						}
					}
				})
			}
		})
	}
}

// TestConnect_MutualTLSIsInUse: the connection accepted by a server that
// requires client certificates runs over TLS, verified against NATS_TLS_CA.
func TestConnect_MutualTLSIsInUse(t *testing.T) {
	pki := newPKI(t, t.TempDir())
	opts := tlsServer(t, pki)
	srv := testkit.RunNATS(t, &opts)
	nc, err := natsconn.Connect(natsconn.Config{
		URL: srv.ClientURL(), TLSCA: pki.ca, TLSCert: pki.clientCert, TLSKey: pki.clientKey,
	}, "natsconn-test", nil, natsconn.Hooks{})
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	state, err := nc.TLSConnectionState()
	if err != nil {
		t.Fatalf("TLS state: %v", err)
	}
	if !state.HandshakeComplete || len(state.VerifiedChains) == 0 {
		t.Fatalf("TLS handshake complete %v, verified chains %d", state.HandshakeComplete, len(state.VerifiedChains))
	}
	if cn := state.PeerCertificates[0].Subject.CommonName; cn != "nats" {
		t.Fatalf("server certificate %q", cn)
	}
}

// freePort returns a loopback port that nothing listens on now.
func freePort(t *testing.T) int {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().(*net.TCPAddr).Port
}

// TestConnect_WaitsForNATSAndSurvivesARestart: Connect does not fail while
// no server listens; the connection comes up once one does, and after the
// server restarts on the same port it reconnects by itself, with its
// subscriptions, telling the hooks.
func TestConnect_WaitsForNATSAndSurvivesARestart(t *testing.T) {
	port := freePort(t)
	disconnected, reconnected := make(chan struct{}, 1), make(chan struct{}, 1)
	signal := func(ch chan struct{}) {
		select {
		case ch <- struct{}{}:
		default:
		}
	}
	nc, err := natsconn.Connect(natsconn.Config{URL: "nats://127.0.0.1:" + strconv.Itoa(port)}, "natsconn-test", nil, natsconn.Hooks{
		Disconnected: func(error) { signal(disconnected) },
		Reconnected:  func() { signal(reconnected) },
	})
	if err != nil {
		t.Fatalf("Connect with no server up: %v", err)
	}
	defer nc.Close()
	if nc.IsConnected() {
		t.Fatal("connected to nothing")
	}
	if nc.Opts.MaxReconnect != -1 || !nc.Opts.IgnoreAuthErrorAbort {
		t.Fatalf("MaxReconnect %d, IgnoreAuthErrorAbort %v: want reconnecting forever", nc.Opts.MaxReconnect, nc.Opts.IgnoreAuthErrorAbort)
	}

	first := testkit.RunNATS(t, &server.Options{Port: port})
	testkit.EventuallyWithin(t, wait, "the first connection", nc.IsConnected)
	msgs := make(chan *nats.Msg, 8)
	sub, err := nc.ChanSubscribe("natsconn.test", msgs)
	if err != nil {
		t.Fatal(err)
	}
	defer sub.Unsubscribe()
	if err := nc.Flush(); err != nil {
		t.Fatal(err)
	}

	first.Shutdown()
	first.WaitForShutdown()
	receive(t, "the disconnected hook", disconnected)
	testkit.RunNATS(t, &server.Options{Port: port})
	receive(t, "the reconnected hook", reconnected)
	if err := nc.Publish("natsconn.test", []byte("after the restart")); err != nil {
		t.Fatal(err)
	}
	select {
	case m := <-msgs:
		if string(m.Data) != "after the restart" {
			t.Fatalf("got %q", m.Data)
		}
	case <-time.After(wait):
		t.Fatal("the subscription did not survive the restart")
	}
}

// receive waits for a signal on ch, or fails the test after wait.
func receive(t *testing.T, what string, ch <-chan struct{}) {
	t.Helper()
	select {
	case <-ch:
	case <-time.After(wait):
		t.Fatalf("after %v: %s was not called", wait, what)
	}
}

// TestAttrs_MasksNATSSecrets: the configuration logged at start shows the
// NATS settings by variable name, with the password, the token and the user
// information of NATS_URL masked, and the paths of key files (never their
// contents) as they are.
func TestAttrs_MasksNATSSecrets(t *testing.T) {
	cfg := natsconn.Config{
		URL:      "nats://alice:url-pass-0123@nats-1:4222, tls://url-token-0123@nats-2:4222,nats://nats-3:4222",
		Creds:    "/etc/nats/user.creds",
		NKeyFile: "/etc/nats/user.nk",
		User:     "alice",
		Password: "pass-0123456789",
		Token:    "token-0123456789",
		TLSKey:   "/etc/nats/tls.key",
	}
	var out bytes.Buffer
	slog.New(slog.NewJSONHandler(&out, nil)).Info("starting", logging.Attrs(cfg)...)
	line := out.String()
	for _, secret := range []string{"url-pass-0123", "url-token-0123", "pass-0123456789", "token-0123456789"} {
		if strings.Contains(line, secret) {
			t.Errorf("logged config holds %q:\n%s", secret, line)
		}
	}
	for _, want := range []string{
		`"NATS_URL":"nats://[redacted]@nats-1:4222, tls://[redacted]@nats-2:4222,nats://nats-3:4222"`,
		`"NATS_PASSWORD":"[redacted]"`,
		`"NATS_TOKEN":"[redacted]"`,
		`"NATS_USER":"alice"`,
		`"NATS_CREDS":"/etc/nats/user.creds"`,
		`"NATS_NKEY_FILE":"/etc/nats/user.nk"`,
		`"NATS_TLS_KEY":"/etc/nats/tls.key"`,
	} {
		if !strings.Contains(line, want) {
			t.Errorf("logged config lacks %s:\n%s", want, line)
		}
	}
}
