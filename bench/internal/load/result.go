package load

import (
	"fmt"
	"strings"
	"time"

	"github.com/wsgate/wsgate/bench/internal/hist"
	"github.com/wsgate/wsgate/bench/internal/procstat"
)

// Params are the scenario's parameters as given.
type Params struct {
	Conns    int     `json:"conns"`
	Users    int     `json:"users"`
	Workers  int     `json:"workers"`
	LocalIPs int     `json:"local_ips"`
	Ramp     float64 `json:"ramp_per_s"`
	Duration string  `json:"duration"`
	Rate     float64 `json:"rate_per_s"`
	Messages int     `json:"messages,omitempty"`
	Size     int     `json:"size_bytes"`
	Edges    int     `json:"edges,omitempty"`
	Client   string  `json:"client,omitempty"`
	// Compress: the clients offered permessage-deflate (loadgen -compress).
	Compress bool `json:"compress,omitempty"`
	// Text: payloads of application-like JSON (loadgen -payload text).
	Text bool `json:"text,omitempty"`
	// Publish and PublishInflight are Centrifugo's publishing path.
	Publish         string `json:"publish,omitempty"`
	PublishInflight int    `json:"publish_inflight,omitempty"`
	// NATSNodes is the number of NATS servers the run started (a cluster
	// when more than one).
	NATSNodes int `json:"nats_nodes,omitempty"`
	// History is WS_HISTORY of the edges: off, memory or file.
	History string `json:"history"`
	// Presence: the run had presence on (loadgen -presence).
	Presence bool `json:"presence,omitempty"`
	// Reliable: requests carried message ids (DESIGN.md §8).
	Reliable bool `json:"reliable,omitempty"`
}

// Latency is the distribution of message latencies, in milliseconds.
type Latency struct {
	Count uint64  `json:"count"`
	P50   float64 `json:"p50_ms"`
	P90   float64 `json:"p90_ms"`
	P99   float64 `json:"p99_ms"`
	P999  float64 `json:"p999_ms"`
	Max   float64 `json:"max_ms"`
	Mean  float64 `json:"mean_ms"`
}

func latencyOf(s hist.Snapshot) Latency {
	ms := func(us int64) float64 { return float64(us) / 1000 }
	return Latency{
		Count: s.Count, P50: ms(s.Quantile(0.5)), P90: ms(s.Quantile(0.9)), P99: ms(s.Quantile(0.99)),
		P999: ms(s.Quantile(0.999)), Max: ms(s.Max), Mean: s.Mean() / 1000,
	}
}

// Server is what /proc says about the servers at each step of the run.
type Server struct {
	Pids      []int             `json:"pids"`
	Names     []string          `json:"names,omitempty"`
	Before    []procstat.Sample `json:"before"`     // before any connection
	AfterRamp []procstat.Sample `json:"after_ramp"` // every connection open
	AfterRun  []procstat.Sample `json:"after_run"`  // after the messages (or the idle hold)
}

// Derived are the figures computed from the raw ones.
type Derived struct {
	RSSBeforeMiB     float64 `json:"rss_before_mib"`
	RSSAfterRampMiB  float64 `json:"rss_after_ramp_mib"`
	RSSPerConnKiB    float64 `json:"rss_per_conn_kib"`
	CPUPerConnUsPerS float64 `json:"cpu_us_per_conn_per_s"` // over the run phase (the hold, when idle)
	ServerCPUPercent float64 `json:"server_cpu_percent"`    // of one core, over the run phase
	ClientCPUPercent float64 `json:"client_cpu_percent"`    // the tool and its workers, same phase
	RampCPUms        float64 `json:"ramp_cpu_ms"`           // server CPU spent accepting the connections
	// WireBytesPerDelivery is WireBytes per message received (gorilla).
	WireBytesPerDelivery float64 `json:"wire_bytes_per_delivery,omitempty"`
}

// Result is the record of one run.
type Result struct {
	Scenario   string   `json:"scenario"`
	Gateway    string   `json:"gateway"`
	Target     []string `json:"target"`
	Label      string   `json:"label,omitempty"`
	Started    string   `json:"started"`
	Command    string   `json:"command"`
	Params     Params   `json:"params"`
	Connected  int64    `json:"connected"`
	Failed     int64    `json:"failed"`
	Dropped    int64    `json:"dropped"`
	RampSecond float64  `json:"ramp_seconds"`
	// Sent is what the run sent: requests (roundtrip, hello) or published
	// messages (broadcast, unicast); Expected the messages the clients
	// should have received for it.
	Sent         uint64  `json:"sent"`
	Expected     uint64  `json:"expected"`
	Received     uint64  `json:"received"`
	Lost         uint64  `json:"lost"`
	Duplicates   uint64  `json:"duplicates"`
	AchievedRate float64 `json:"achieved_rate_per_s"`
	// PublishSeconds is the time from the first publish until the
	// publisher took the last message, with no more requests unanswered
	// than it may have in flight (broadcast, unicast).
	PublishSeconds float64 `json:"publish_seconds,omitempty"`
	DeliveriesPerS float64 `json:"deliveries_per_s"`
	// HistoryStored is what the history stream held after a run with
	// history on: the run's messages (broadcast, unicast) all went
	// through it when it equals Sent.
	HistoryStored uint64 `json:"history_stored,omitempty"`
	// WireBytes (gorilla client) are the bytes the clients' sockets read
	// from the ramp's end to the run's: frames as sent, compressed or not,
	// with their headers, and pings.
	WireBytes uint64  `json:"wire_bytes,omitempty"`
	Latency   Latency `json:"latency"`
	// Reliable runs: Server/ack received (duplicates among them), requests
	// never acknowledged, and the latency from send to ack (the echo
	// reply's is Latency).
	Acked           uint64   `json:"acked,omitempty"`
	AckDuplicates   uint64   `json:"ack_duplicates,omitempty"`
	Unacked         uint64   `json:"unacked,omitempty"`
	AckLatency      *Latency `json:"ack_latency,omitempty"`
	PublishErrors   uint64   `json:"publish_errors"`
	ClientErrors    uint64   `json:"client_errors"`
	ErrorSamples    []string `json:"error_samples,omitempty"`
	Server          Server   `json:"server"`
	Derived         Derived  `json:"derived"`
	RunSeconds      float64  `json:"run_seconds"`
	Unsupported     string   `json:"unsupported,omitempty"`
	startedAt       time.Time
	firstSendUnixNs int64
}

// OK reports whether the run lost nothing and saw no error.
func (r *Result) OK() bool {
	return r.Unsupported == "" && r.Lost == 0 && r.Failed == 0 && r.Dropped == 0 &&
		r.PublishErrors == 0 && r.ClientErrors == 0 && r.Unacked == 0
}

// Summary is the one-line outcome of the run.
func (r *Result) Summary() string {
	if r.Unsupported != "" {
		return fmt.Sprintf("%s %s: n/a (%s)", r.Gateway, r.Scenario, r.Unsupported)
	}
	var b strings.Builder
	fmt.Fprintf(&b, "%s %s conns=%d/%d failed=%d dropped=%d", r.Gateway, r.Scenario, r.Connected, r.Params.Conns, r.Failed, r.Dropped)
	if r.Scenario != "idle" {
		fmt.Fprintf(&b, " rate=%.0f/%.0f/s sent=%d recv=%d/%d lost=%d deliveries/s=%.0f p50=%.2fms p90=%.2fms p99=%.2fms max=%.2fms",
			r.AchievedRate, r.Params.Rate, r.Sent, r.Received, r.Expected, r.Lost, r.DeliveriesPerS,
			r.Latency.P50, r.Latency.P90, r.Latency.P99, r.Latency.Max)
	}
	if r.WireBytes > 0 && r.Received > 0 {
		fmt.Fprintf(&b, " wire-bytes/delivery=%.0f", r.Derived.WireBytesPerDelivery)
	}
	if a := r.AckLatency; a != nil {
		fmt.Fprintf(&b, " acked=%d unacked=%d duplicate-acks=%d ack-p50=%.2fms ack-p99=%.2fms", r.Acked, r.Unacked, r.AckDuplicates, a.P50, a.P99)
	}
	fmt.Fprintf(&b, " rss=%.1fMiB rss/conn=%.2fKiB server-cpu=%.1f%%", r.Derived.RSSAfterRampMiB, r.Derived.RSSPerConnKiB, r.Derived.ServerCPUPercent)
	if r.Scenario == "idle" {
		fmt.Fprintf(&b, " cpu/conn/s=%.2fus", r.Derived.CPUPerConnUsPerS)
	}
	fmt.Fprintf(&b, " client-cpu=%.0f%% errors=%d", r.Derived.ClientCPUPercent, r.PublishErrors+r.ClientErrors)
	return b.String()
}
