package edge_test

import (
	"bytes"
	"context"
	"fmt"
	"net"
	"net/http"
	"os"
	"runtime"
	"runtime/debug"
	"slices"
	"strconv"
	"time"

	"github.com/golang-jwt/jwt/v5"
	"github.com/gorilla/websocket"
)

// Helpers of the load tests (slow consumer, flood, soak): lightweight raw
// clients, safe to use off the test goroutine, and resource figures.

// signToken is edgetest.Token without a testing.TB, for client goroutines.
func signToken(claims jwt.MapClaims) (string, error) {
	if _, ok := claims["exp"]; !ok {
		claims["exp"] = time.Now().Add(time.Hour).Unix()
	}
	return jwt.NewWithClaims(jwt.SigningMethodHS256, claims).SignedString([]byte(secret))
}

// okFrame is the edge's answer to a successful authentication.
var okFrame = []byte(`["Client/authentication","ok"]`)

// rawDial opens a bare gorilla connection with tok in the Authorization
// header and reads up to the unprompted ok. dialer may be nil. It returns
// how many frames came before the ok: traffic routed to the connection
// while the edge confirmed its subscriptions (broadcasts, say) reaches it
// before the ok.
func rawDial(ctx context.Context, dialer *websocket.Dialer, url, tok string) (*websocket.Conn, int, error) {
	if dialer == nil {
		dialer = &websocket.Dialer{HandshakeTimeout: 10 * time.Second}
	}
	ws, resp, err := dialer.DialContext(ctx, url, http.Header{"Authorization": {"Bearer " + tok}})
	if err != nil {
		status := 0
		if resp != nil {
			status = resp.StatusCode
		}
		return nil, 0, fmt.Errorf("dial: %w (HTTP %d)", err, status)
	}
	_ = ws.SetReadDeadline(time.Now().Add(10 * time.Second))
	early := 0
	for {
		_, data, err := ws.ReadMessage()
		if err != nil {
			_ = ws.Close()
			return nil, early, fmt.Errorf("authentication: %w", err)
		}
		if bytes.Equal(data, okFrame) {
			break
		}
		if bytes.HasPrefix(data, []byte(`["Client/authentication:error"`)) {
			_ = ws.Close()
			return nil, early, fmt.Errorf("authentication: %s", data)
		}
		early++
	}
	_ = ws.SetReadDeadline(time.Time{})
	return ws, early, nil
}

// smallReceiveBuffer is a dialer whose TCP connections have a receive
// buffer of a few KB, so that a peer that stops reading stops taking data
// early.
func smallReceiveBuffer(bytes int) *websocket.Dialer {
	return &websocket.Dialer{
		HandshakeTimeout: 10 * time.Second,
		NetDialContext: func(ctx context.Context, network, addr string) (net.Conn, error) {
			c, err := (&net.Dialer{}).DialContext(ctx, network, addr)
			if err != nil {
				return nil, err
			}
			if err := c.(*net.TCPConn).SetReadBuffer(bytes); err != nil {
				_ = c.Close()
				return nil, err
			}
			return c, nil
		},
	}
}

// resources is what the process holds at one moment.
type resources struct {
	goroutines int
	fds        int
	heapInuse  uint64
}

// measure collects garbage first, so that heap figures compare live data.
func measure() (resources, error) {
	http.DefaultClient.CloseIdleConnections() // the /metrics scrapes' keep-alive connections
	runtime.GC()
	debug.FreeOSMemory()
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	fds, err := os.ReadDir("/proc/self/fd")
	if err != nil {
		return resources{}, err
	}
	return resources{goroutines: runtime.NumGoroutine(), fds: len(fds), heapInuse: ms.HeapInuse}, nil
}

func (r resources) String() string {
	return fmt.Sprintf("%d goroutines, %d fds, heap in use %.1f MiB", r.goroutines, r.fds, float64(r.heapInuse)/(1<<20))
}

// percentile returns the p-th percentile (0 < p <= 100) of sorted samples.
func percentile(sorted []time.Duration, p float64) time.Duration {
	if len(sorted) == 0 {
		return 0
	}
	i := int(float64(len(sorted))*p/100+0.5) - 1
	return sorted[min(max(i, 0), len(sorted)-1)]
}

// latencies summarises round-trip samples.
type latencies []time.Duration

func (l latencies) summary() (p50, p99, maxRT time.Duration) {
	s := slices.Clone(l)
	slices.Sort(s)
	if len(s) == 0 {
		return 0, 0, 0
	}
	return percentile(s, 50), percentile(s, 99), s[len(s)-1]
}

func (l latencies) String() string {
	p50, p99, mx := l.summary()
	return "p50 " + ms(p50) + " p99 " + ms(p99) + " max " + ms(mx) + " (n=" + strconv.Itoa(len(l)) + ")"
}

func ms(d time.Duration) string {
	return strconv.FormatFloat(float64(d)/float64(time.Millisecond), 'f', 2, 64) + "ms"
}
