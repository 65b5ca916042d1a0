package auth_test

import (
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"encoding/base64"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"runtime"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/wsgate/wsgate/services/edge/internal/auth"
)

// slowIdP serves a one-key set; once blocked, each request waits until
// released (or its client gives up).
type slowIdP struct {
	doc      []byte
	fetches  atomic.Int64
	blocked  atomic.Bool
	inFlight atomic.Int64
	release  chan struct{}
}

func (p *slowIdP) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	p.fetches.Add(1)
	if p.blocked.Load() {
		p.inFlight.Add(1)
		defer p.inFlight.Add(-1)
		select {
		case <-p.release:
		case <-r.Context().Done():
			return
		}
	}
	_, _ = w.Write(p.doc)
}

// TestJWKS_FetchIsSharedAndHoldsNoLock: while a refetch is in flight, a
// token whose key is known is verified at once (the fetch holds no lock
// others wait on), concurrent misses share that one fetch, and a caller
// waits for it no longer than its own context allows.
func TestJWKS_FetchIsSharedAndHoldsNoLock(t *testing.T) {
	pub, _, _ := ed25519.GenerateKey(rand.Reader)
	doc, _ := json.Marshal(map[string]any{"keys": []map[string]string{{
		"kty": "OKP", "crv": "Ed25519", "kid": "k1", "x": base64.RawURLEncoding.EncodeToString(pub),
	}}})
	idp := &slowIdP{doc: doc, release: make(chan struct{})}
	srv := httptest.NewServer(idp)
	defer srv.Close()
	set := auth.NewJWKS(srv.URL, time.Hour, 0, nil)
	ctx := context.Background()
	if _, _, err := set.Key(ctx, "k1"); err != nil {
		t.Fatalf("first fetch: %v", err)
	}

	idp.blocked.Store(true)
	const misses = 20
	var wg sync.WaitGroup
	for range misses {
		wg.Go(func() {
			if _, _, err := set.Key(ctx, "unknown"); err == nil {
				t.Error("unknown kid found")
			}
		})
	}
	deadline := time.Now().Add(10 * time.Second)
	for idp.inFlight.Load() == 0 && time.Now().Before(deadline) {
		runtime.Gosched()
	}
	if idp.inFlight.Load() == 0 {
		t.Fatal("no fetch started for the unknown kid")
	}
	if _, _, err := set.Key(ctx, "k1"); err != nil {
		t.Fatalf("known kid during the fetch: %v", err)
	}
	if idp.inFlight.Load() != 1 {
		t.Fatal("the known kid was answered only after the fetch ended: it waited for the fetch")
	}
	short, cancel := context.WithTimeout(ctx, 50*time.Millisecond)
	defer cancel()
	if _, _, err := set.Key(short, "unknown-too"); err == nil {
		t.Fatal("unknown kid found")
	}
	if idp.inFlight.Load() != 1 {
		t.Fatal("a caller with a short context waited for the whole fetch")
	}
	close(idp.release)
	wg.Wait()
	if got := idp.fetches.Load(); got != 2 {
		t.Fatalf("%d fetches, want 2: %d concurrent misses share one", got, misses)
	}
}
