// Package health serves the probes every service has: /healthz (the process
// is alive) and /readyz (connected to NATS, subscribed and not draining).
package health

import (
	"net/http"
	"sync/atomic"
)

// Probe tracks readiness. Ready reports true only when the check passes and
// the service has not started to drain.
type Probe struct {
	draining atomic.Bool
	check    func() error
}

// New returns a probe whose readiness also requires check() == nil.
func New(check func() error) *Probe { return &Probe{check: check} }

// SetDraining turns readiness off for good: the service is shutting down.
func (p *Probe) SetDraining() { p.draining.Store(true) }

// Draining reports whether SetDraining was called.
func (p *Probe) Draining() bool { return p.draining.Load() }

// Ready returns nil when the service can take traffic.
func (p *Probe) Ready() error {
	if p.draining.Load() {
		return errDraining
	}
	return p.check()
}

type probeError string

func (e probeError) Error() string { return string(e) }

const errDraining = probeError("draining")

// Register adds /healthz and /readyz to mux.
func (p *Probe) Register(mux *http.ServeMux) {
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Content-Type", "text/plain; charset=utf-8")
		_, _ = w.Write([]byte("ok\n"))
	})
	mux.HandleFunc("GET /readyz", func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Content-Type", "text/plain; charset=utf-8")
		if err := p.Ready(); err != nil {
			w.WriteHeader(http.StatusServiceUnavailable)
			_, _ = w.Write([]byte("not ready: " + err.Error() + "\n"))
			return
		}
		_, _ = w.Write([]byte("ok\n"))
	})
}
