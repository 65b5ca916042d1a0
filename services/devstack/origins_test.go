package devstack_test

// A new user's application page on its own origin, against `make run`: the
// seed's example page served from a second local port loads /client.js from
// wsgate-dev and connects. The edge refuses it (403) until
// EDGE_ALLOWED_ORIGINS names that origin, as the banner says.

import (
	"html/template"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"

	"github.com/wsgate/wsgate/services/edge/edgetest"
)

// seedSite serves testdata/seed.html at /seed.html, unchanged but for the
// client's URL and the token, from its own port: another origin than the
// edge's.
type seedSite struct {
	*httptest.Server
	edge  atomic.Value // http://host:port of the wsgate-dev edge the page uses
	token atomic.Value // the token the page carries (data-token)
}

func startSeedSite(t *testing.T) *seedSite {
	t.Helper()
	page := template.Must(template.ParseFiles("testdata/seed.html"))
	s := &seedSite{}
	s.Server = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path != "/seed.html" {
			http.NotFound(w, r)
			return
		}
		data := struct{ ClientJS, Token string }{s.edge.Load().(string) + "/client.js", s.token.Load().(string)}
		w.Header().Set("Content-Type", "text/html; charset=utf-8")
		if err := page.Execute(w, data); err != nil {
			http.Error(w, err.Error(), http.StatusInternalServerError)
		}
	}))
	t.Cleanup(s.Close)
	return s
}

// use points the page at the wsgate-dev whose banner is given.
func (s *seedSite) use(t *testing.T, banner string) {
	t.Helper()
	s.edge.Store(strings.TrimSuffix(bannerField(t, banner, `demo page\s+(\S+)`), "/"))
	s.token.Store(bannerField(t, banner, `token \(user 42, 24 h\):\n\s+(\S+)`))
}

// dialFrom opens /ws of the wsgate-dev whose banner is given as a browser
// on origin does, and returns the HTTP status of the upgrade (101 on success).
func dialFrom(t *testing.T, banner, origin string) int {
	t.Helper()
	wsURL := bannerField(t, banner, `WebSocket\s+(\S+)`)
	tok := bannerField(t, banner, `token \(user 42, 24 h\):\n\s+(\S+)`)
	c, resp, err := edgetest.TryDial(t, wsURL, http.Header{"Origin": {origin}, "Authorization": {"Bearer " + tok}})
	if err != nil {
		if resp == nil {
			t.Fatalf("dial %s from %s: %v", wsURL, origin, err)
		}
		return resp.StatusCode
	}
	c.ExpectOK()
	return http.StatusSwitchingProtocols
}

// TestWsgateDev_OtherOriginNeedsAllowedOrigins checks what the banner says
// about pages on another origin: refused with 403 by default, let in once
// EDGE_ALLOWED_ORIGINS names the origin.
func TestWsgateDev_OtherOriginNeedsAllowedOrigins(t *testing.T) {
	site := startSeedSite(t)
	banner := startWsgateDev(t, "EDGE_ALLOWED_ORIGINS=")
	for _, want := range []string{"EDGE_ALLOWED_ORIGINS=http://localhost:3000 make run", "other origins none"} {
		if !strings.Contains(banner, want) {
			t.Errorf("banner lacks %q:\n%s", want, banner)
		}
	}
	if got := dialFrom(t, banner, site.URL); got != http.StatusForbidden {
		t.Fatalf("upgrade from %s without EDGE_ALLOWED_ORIGINS answered %d, want 403", site.URL, got)
	}

	banner = startWsgateDev(t, "EDGE_ALLOWED_ORIGINS="+site.URL)
	if want := "other origins " + site.URL; !strings.Contains(banner, want) {
		t.Errorf("banner lacks %q:\n%s", want, banner)
	}
	if got := dialFrom(t, banner, site.URL); got != http.StatusSwitchingProtocols {
		t.Fatalf("upgrade from %s with EDGE_ALLOWED_ORIGINS=%[1]s answered %d, want 101", site.URL, got)
	}
	if got := dialFrom(t, banner, "http://other.example"); got != http.StatusForbidden {
		t.Fatalf("upgrade from an origin not listed answered %d, want 403", got)
	}
}

// TestBrowser_SeedPageFromOtherOrigin runs the seed's example page, served
// from a second local port, in Chromium against wsgate-dev: without
// EDGE_ALLOWED_ORIGINS its client never authenticates and no alert shows;
// with it, the same page says hello.
func TestBrowser_SeedPageFromOtherOrigin(t *testing.T) {
	site := startSeedSite(t)
	b := newBrowser(t)

	site.use(t, startWsgateDev(t, "EDGE_ALLOWED_ORIGINS="))
	refused := b.tab("refused")
	refused.navigate(site.URL + "/seed.html")
	refused.waitFor("the client's failed first attempt", `cs.WebSockets.state === "reconnecting"`)
	if got := evalJS[int](refused, `alerts.length`); got != 0 {
		t.Fatalf("refused page shows %d alerts", got)
	}

	site.use(t, startWsgateDev(t, "EDGE_ALLOWED_ORIGINS="+site.URL))
	allowed := b.tab("allowed")
	allowed.navigate(site.URL + "/seed.html")
	allowed.waitFor("the seed's alert", `alerts.length === 1`)
	if got := evalJS[[]string](allowed, `alerts`); len(got) != 1 || got[0] != "Hello, world!" {
		t.Fatalf("alerts %q, want [Hello, world!]", got)
	}
}
