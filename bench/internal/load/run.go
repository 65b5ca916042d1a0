package load

import (
	"context"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"os"
	"path/filepath"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/wsgate/wsgate/bench/internal/hist"
	"github.com/wsgate/wsgate/bench/internal/procstat"
	"github.com/wsgate/wsgate/bench/internal/proto"
	"github.com/wsgate/wsgate/bench/internal/stack"
)

// Scenarios.
const (
	Idle      = "idle"
	Broadcast = "broadcast"
	Unicast   = "unicast"
	Roundtrip = "roundtrip"
	Hello     = "hello"
)

// MaxPerWorker is the most connections one worker process holds (the open
// files limit here is 20,000 per process).
const MaxPerWorker = 15000

// Config is one run.
type Config struct {
	Scenario string
	Gateway  string
	Conns    int           // connections (hello: 2 per user)
	Workers  int           // worker processes; 0 runs the clients in this process
	LocalIPs int           // source addresses 127.0.0.2 … 127.0.0.(1+LocalIPs); 0 = the kernel's choice
	Ramp     float64       // connections opened per second, in all
	Inflight int           // handshakes in flight per worker
	Duration time.Duration // idle hold; sending time of unicast, roundtrip, hello; broadcast when Messages is 0
	Rate     float64       // messages or requests per second, in all
	Messages int           // broadcast: how many (0: Rate × Duration)
	Size     int           // payload bytes
	Drain    time.Duration // longest wait for the last messages after sending
	Edges    int           // wsgate edges started (hello uses 2)
	Client   string        // how the workers read: ClientEpoll (default) or ClientGorilla
	Compress bool          // gorilla clients offer permessage-deflate
	Text     bool          // payloads of application-like JSON (proto.AppendTextPayload), not one letter repeated
	Tabs     int           // idle: connections per user (users = Conns/Tabs, as browser tabs without a shared connection); 0 or 1: one
	// History is the WS_HISTORY of the edges (HistoryOff when empty): set
	// by the caller on Start's EdgeEnv, recorded in Params.
	History string
	// Presence (wsgate, with Start): presence and stored joins on
	// (WS_PRESENCE=memory on JetStream) and the dispatcher started, which
	// keeps presence's index and reaps dead edges (DESIGN §9).
	Presence bool
	// Reliable (wsgate roundtrip): requests carry message ids, the edges
	// store them in the inbound stream (WS_INBOUND=Inbound, memory unless
	// set) and acknowledge them; a started stack gets JetStream and
	// WS_INBOUND on its edges and dispatcher.
	Reliable bool
	Inbound  string
	// Publish is Centrifugo's publishing path (proto.PublishBatch by
	// default); wsgate publishes over NATS whatever it says.
	Publish proto.CentrifugoOptions

	// Target when the tool does not start the servers.
	URLs    []string
	NATSURL string // wsgate publisher
	APIURL  string // centrifugo publisher (http://host:port)
	APIKey  string
	Prefix  string // WS_SUBJECT_PREFIX
	Secret  string
	Pids    []int

	// Start, when set, starts the stack of Gateway for the run.
	Start *stack.Config
	Exe   string // this program, for worker processes

	Command  string
	Label    string
	Progress io.Writer // live counters, once a second
}

// Supported reports whether gateway has an equivalent of scenario, and why
// not when it has none.
func Supported(gateway, scenario string) (bool, string) {
	if gateway == "centrifugo" && scenario == Hello {
		return false, "Centrifugo has no server-side handler that fans a client's message out to the sender's other connections without an application backend publishing it; hello is the wsgate dispatcher's seed example"
	}
	return true, ""
}

func (c *Config) check() error {
	switch c.Scenario {
	case Idle, Broadcast, Unicast, Roundtrip, Hello:
	default:
		return fmt.Errorf("load: unknown scenario %q", c.Scenario)
	}
	if _, err := proto.ForGateway(c.Gateway); err != nil {
		return err
	}
	if c.Conns < 1 {
		return errors.New("load: -conns must be at least 1")
	}
	if c.Scenario == Hello && c.Conns%2 != 0 {
		c.Conns++
	}
	if c.Workers > 0 && (c.Conns+c.Workers-1)/c.Workers > MaxPerWorker {
		return fmt.Errorf("load: %d connections need at least %d workers (at most %d each)", c.Conns, (c.Conns+MaxPerWorker-1)/MaxPerWorker, MaxPerWorker)
	}
	if c.Workers == 0 && c.Conns > MaxPerWorker {
		return fmt.Errorf("load: more than %d connections need worker processes (-workers)", MaxPerWorker)
	}
	if c.Tabs > 1 && c.Scenario != Idle {
		return errors.New("load: -tabs applies to the idle scenario")
	}
	if c.Tabs > 1 && c.Conns%c.Tabs != 0 {
		return fmt.Errorf("load: -conns %d is not a multiple of -tabs %d", c.Conns, c.Tabs)
	}
	if c.Reliable && (c.Scenario != Roundtrip || c.Gateway != "wsgate") {
		return errors.New("load: -reliable is for the wsgate roundtrip scenario")
	}
	if c.Reliable && c.Inbound == "" {
		c.Inbound = "memory"
	}
	if c.Scenario != Idle && c.Rate <= 0 {
		return errors.New("load: -rate must be positive")
	}
	c.Size = max(c.Size, proto.MinPayload)
	if c.Ramp <= 0 {
		c.Ramp = 1000
	}
	if c.Inflight <= 0 {
		c.Inflight = 64
	}
	if c.Drain <= 0 {
		c.Drain = 15 * time.Second
	}
	if c.Prefix == "" {
		c.Prefix = "ws"
	}
	if c.History == "" {
		c.History = HistoryOff
	}
	if err := CheckHistory(c.Gateway, c.History); err != nil {
		return err
	}
	var err error
	if c.Client, err = checkClient(c.Client); err != nil {
		return err
	}
	if c.Publish, err = proto.CheckCentrifugoOptions(c.Publish); err != nil {
		return err
	}
	if c.Progress == nil {
		c.Progress = io.Discard
	}
	return nil
}

// workerState is the controller's view of one worker.
type workerState struct {
	h      *handle
	mu     sync.Mutex
	last   Counters
	hist   hist.Snapshot
	ready  bool
	result *Report
	ended  bool
}

func (ws *workerState) consume() {
	for r := range ws.h.reports {
		ws.mu.Lock()
		ws.last = r.Counters
		if r.Hist != nil {
			ws.hist = *r.Hist
		}
		switch r.Type {
		case reportReady:
			ws.ready = true
		case reportResult:
			rr := r
			ws.result = &rr
		}
		ws.mu.Unlock()
	}
	ws.mu.Lock()
	ws.ended = true
	ws.mu.Unlock()
}

type fleet []*workerState

func (f fleet) totals() (Counters, hist.Snapshot, int, int) {
	var c Counters
	var h hist.Snapshot
	ready, ended := 0, 0
	for _, w := range f {
		w.mu.Lock()
		c.Add(w.last)
		h.Merge(w.hist)
		if w.ready {
			ready++
		}
		if w.ended {
			ended++
		}
		w.mu.Unlock()
	}
	return c, h, ready, ended
}

func (f fleet) send(cmd string) {
	for _, w := range f {
		w.h.send(cmd)
	}
}

// waitAll polls until cond holds for the fleet or ctx ends.
func (f fleet) waitAll(ctx context.Context, cond func(Counters, int, int) bool) error {
	t := time.NewTicker(20 * time.Millisecond)
	defer t.Stop()
	for {
		c, _, ready, ended := f.totals()
		if cond(c, ready, ended) {
			return nil
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-t.C:
		}
	}
}

// Run runs one scenario and returns its record.
func Run(ctx context.Context, cfg Config) (*Result, error) {
	if err := cfg.check(); err != nil {
		return nil, err
	}
	tabs := 1
	if cfg.Scenario == Hello {
		tabs = 2
	}
	if cfg.Tabs > 1 {
		tabs = cfg.Tabs
	}
	res := &Result{
		Scenario: cfg.Scenario, Gateway: cfg.Gateway, Label: cfg.Label, Command: cfg.Command,
		startedAt: time.Now(),
		Params: Params{
			Conns: cfg.Conns, Users: cfg.Conns / tabs, Workers: cfg.Workers, LocalIPs: cfg.LocalIPs,
			Ramp: cfg.Ramp, Duration: cfg.Duration.String(), Rate: cfg.Rate, Messages: cfg.Messages, Size: cfg.Size,
			Edges: cfg.Edges, Client: cfg.Client, Compress: cfg.Compress, Text: cfg.Text, History: cfg.History, Presence: cfg.Presence, Reliable: cfg.Reliable,
		},
	}
	res.Started = res.startedAt.UTC().Format(time.RFC3339)
	if cfg.Gateway == "centrifugo" && (cfg.Scenario == Broadcast || cfg.Scenario == Unicast) {
		res.Params.Publish, res.Params.PublishInflight = cfg.Publish.Mode, cfg.Publish.Inflight
	}
	if ok, why := Supported(cfg.Gateway, cfg.Scenario); !ok {
		res.Unsupported = why
		return res, nil
	}

	pids := append([]int(nil), cfg.Pids...)
	var names []string
	if cfg.Start != nil {
		sc := *cfg.Start
		sc.Gateway = cfg.Gateway
		sc.Secret = cfg.Secret
		sc.APIKey = cfg.APIKey
		sc.Dispatcher = cfg.Scenario == Roundtrip || cfg.Scenario == Hello
		sc.RPCProxy = cfg.Scenario == Roundtrip
		if cfg.Scenario == Hello {
			sc.Edges = max(sc.Edges, 2)
		}
		if cfg.Presence {
			sc.JetStream, sc.Dispatcher = true, true
			sc.EdgeEnv = append(sc.EdgeEnv, "WS_PRESENCE=memory")
			sc.DispatcherEnv = append(sc.DispatcherEnv, "WS_PRESENCE=memory")
		}
		if cfg.Reliable {
			sc.JetStream = true
			sc.EdgeEnv = append(sc.EdgeEnv, "WS_INBOUND="+cfg.Inbound)
			sc.DispatcherEnv = append(sc.DispatcherEnv, "WS_INBOUND="+cfg.Inbound)
		}
		st, err := stack.Start(ctx, sc)
		if err != nil {
			return nil, err
		}
		defer func() {
			if err := st.Stop(); err != nil {
				fmt.Fprintln(cfg.Progress, "loadgen: stopping servers:", err)
			}
		}()
		cfg.URLs, cfg.NATSURL, cfg.APIURL = st.URLs, st.NATSURL, st.APIURL
		pids = append(pids, st.Pids()...)
		names = st.Names()
		res.Params.Edges = len(st.URLs)
		res.Params.NATSNodes = len(st.NATSURLs)
	}
	if len(cfg.URLs) == 0 {
		return nil, errors.New("load: no target: give -url or -start")
	}
	if cfg.Scenario == Hello && len(cfg.URLs) < 2 {
		fmt.Fprintln(cfg.Progress, "loadgen: hello with one edge: both tabs of each user are on it")
	}
	res.Target = cfg.URLs
	res.Server.Pids, res.Server.Names = pids, names

	sample := func() []procstat.Sample {
		var out []procstat.Sample
		for _, p := range pids {
			s, err := procstat.Read(p)
			if err != nil {
				fmt.Fprintln(cfg.Progress, "loadgen:", err)
			}
			out = append(out, s)
		}
		return out
	}
	res.Server.Before = sample()

	f, err := startFleet(ctx, cfg, tabs)
	if err != nil {
		return nil, err
	}
	defer func() {
		f.send(cmdQuit)
		for _, w := range f {
			_ = w.h.wait()
		}
	}()
	var published atomic.Uint64
	stopProgress := progress(cfg, f, tabs, &published)
	defer stopProgress()

	// Ramp: every worker opens its connections.
	rampStart := time.Now()
	rampLimit := time.Duration(float64(cfg.Conns)/cfg.Ramp*2*float64(time.Second)) + 60*time.Second
	rctx, cancel := context.WithTimeout(ctx, rampLimit)
	err = f.waitAll(rctx, func(_ Counters, ready, ended int) bool { return ready+ended == len(f) })
	cancel()
	if err != nil {
		return nil, fmt.Errorf("load: ramp did not finish within %s", rampLimit)
	}
	res.RampSecond = time.Since(rampStart).Seconds()
	// A progress report computed just before a worker's "ready" may arrive
	// just after it; two report periods later every count is current.
	sleep(ctx, 2*progressEvery)
	res.Server.AfterRamp = sample()
	clientStart := clientCPU(f)
	c0, _, _, _ := f.totals()

	runStart := time.Now()
	expected, sent, pubErrs, err := runPhase(ctx, cfg, f, c0, res, &published)
	if err != nil {
		return nil, err
	}
	res.Server.AfterRun = sample()
	clientEnd := clientCPU(f)
	runSecs := time.Since(runStart).Seconds()
	if cfg.History != HistoryOff && cfg.NATSURL != "" && sent > 0 {
		if res.HistoryStored, err = historyStored(ctx, cfg.NATSURL); err != nil {
			res.ErrorSamples = append(res.ErrorSamples, err.Error())
		}
	}

	f.send(cmdReport)
	rctx, cancel = context.WithTimeout(ctx, 30*time.Second)
	err = f.waitAll(rctx, func(Counters, int, int) bool {
		for _, w := range f {
			w.mu.Lock()
			done := w.result != nil || w.ended
			w.mu.Unlock()
			if !done {
				return false
			}
		}
		return true
	})
	cancel()
	if err != nil {
		return nil, errors.New("load: workers did not report")
	}
	var total Counters
	var h, ah hist.Snapshot
	for _, w := range f {
		if w.result == nil {
			total.Add(w.last)
			h.Merge(w.hist)
			res.ErrorSamples = append(res.ErrorSamples, "a worker ended before its report")
			continue
		}
		total.Add(w.result.Counters)
		h.Merge(*w.result.Hist)
		if w.result.AckHist != nil {
			ah.Merge(*w.result.AckHist)
		}
		for _, e := range w.result.Errors {
			if len(res.ErrorSamples) < 10 {
				res.ErrorSamples = append(res.ErrorSamples, e)
			}
		}
	}
	if cfg.Scenario == Roundtrip || cfg.Scenario == Hello {
		sent = total.Sent
		expected = total.Sent * uint64(tabs)
	}
	res.Connected, res.Failed, res.Dropped = c0.Connected, total.Failed, total.Dropped
	res.Sent, res.Expected, res.Received = sent, expected, total.Received
	if expected > total.Received {
		res.Lost = expected - total.Received
	} else {
		res.Duplicates = total.Received - expected
	}
	res.PublishErrors, res.ClientErrors = pubErrs, total.Errors
	res.WireBytes = total.WireBytes - min(c0.WireBytes, total.WireBytes)
	res.Latency = latencyOf(h)
	if cfg.Reliable {
		res.Acked, res.AckDuplicates = total.Acked, total.AckDuplicates
		res.Unacked = sent - min(total.Acked, sent)
		al := latencyOf(ah)
		res.AckLatency = &al
	}
	res.RunSeconds = runSecs
	first := res.firstSendUnixNs
	if first == 0 {
		first = total.FirstSendN
	}
	if first != 0 && total.LastRecvNs > first {
		res.DeliveriesPerS = float64(total.Received) / (float64(total.LastRecvNs-first) / 1e9)
	}
	derive(res, c0.Connected, runSecs, cfg, clientEnd-clientStart)
	if res.WireBytes > 0 && res.Received > 0 {
		res.Derived.WireBytesPerDelivery = float64(res.WireBytes) / float64(res.Received)
	}
	return res, nil
}

// runPhase does the scenario's work once every connection is open and
// returns how many messages the clients should receive, how many were sent
// (for publishing scenarios) and the publish errors.
func runPhase(ctx context.Context, cfg Config, f fleet, c0 Counters, res *Result, published *atomic.Uint64) (expected, sent, pubErrs uint64, err error) {
	switch cfg.Scenario {
	case Idle:
		sleep(ctx, cfg.Duration)
		return 0, 0, 0, nil
	case Roundtrip, Hello:
		f.send(cmdSend)
		sleep(ctx, cfg.Duration)
		f.send(cmdStop)
		// The workers' counters arrive with their next progress report.
		sleep(ctx, 2*progressEvery)
		c, _, _, _ := f.totals()
		want := c.Sent
		if cfg.Scenario == Hello {
			want *= 2
		}
		drain(ctx, cfg, f, want)
		return want, c.Sent, 0, nil
	}
	pub, err := newPublisher(cfg)
	if err != nil {
		return 0, 0, 0, err
	}
	total := cfg.Messages
	if cfg.Scenario == Unicast || total <= 0 {
		total = int(cfg.Rate * cfg.Duration.Seconds())
	}
	pubStart := time.Now()
	res.firstSendUnixNs = pubStart.UnixNano()
	n := publish(ctx, cfg, pub, total, c0.Connected, published)
	// Until the publisher took the last message: its Publish blocks while
	// as many requests as it may have in flight are unanswered, so a
	// gateway that answers slower than asked stretches this, and the
	// achieved rate shows it. The answers still outstanding then (at most
	// that many requests) are not counted: one slow answer to the last
	// broadcast would otherwise make a run short.
	res.PublishSeconds = time.Since(pubStart).Seconds()
	cctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	if err := pub.Close(cctx); err != nil {
		res.ErrorSamples = append(res.ErrorSamples, "publish: "+err.Error())
	}
	cancel()
	want := uint64(n)
	if cfg.Scenario == Broadcast {
		want = uint64(n) * uint64(c0.Connected)
	}
	drain(ctx, cfg, f, want)
	return want, uint64(n), pub.Errors(), nil
}

func newPublisher(cfg Config) (proto.Publisher, error) {
	if cfg.Gateway == "centrifugo" {
		if cfg.APIURL == "" {
			return nil, errors.New("load: centrifugo needs -api (http://host:port)")
		}
		return proto.NewCentrifugoPublisher(cfg.APIURL, cfg.APIKey, cfg.Publish)
	}
	if cfg.NATSURL == "" {
		return nil, errors.New("load: wsgate needs -nats")
	}
	return proto.NewNATSPublisher(cfg.NATSURL, cfg.Prefix)
}

// publish sends total messages at cfg.Rate (broadcast: to all; unicast: to
// random users among those connected) and returns how many it sent.
func publish(ctx context.Context, cfg Config, pub proto.Publisher, total int, users int64, published *atomic.Uint64) int {
	ticker := time.NewTicker(sendTick)
	defer ticker.Stop()
	start := time.Now()
	var batch []proto.Out
	var bufs [][]byte
	sent := 0
	r := rand.New(rand.NewPCG(uint64(start.UnixNano()), 42))
	for sent < total {
		select {
		case <-ctx.Done():
			return sent
		case now := <-ticker.C:
			due := min(int(cfg.Rate*now.Sub(start).Seconds()), total)
			batch = batch[:0]
			for k := 0; sent+k < due; k++ {
				if k >= len(bufs) {
					bufs = append(bufs, nil)
				}
				bufs[k] = appendPayload(cfg.Text, bufs[k][:0], time.Now().UnixNano(), uint64(sent+k), cfg.Size)
				o := proto.Out{Payload: bufs[k]}
				if cfg.Scenario == Unicast {
					o.User = User(r.IntN(int(max(users, 1))), 1)
				}
				batch = append(batch, o)
			}
			if len(batch) > 0 {
				// Publishers copy what they send before returning, so the
				// buffers are reused; failures are counted in pub.Errors.
				_ = pub.Publish(batch)
				sent += len(batch)
				published.Add(uint64(len(batch)))
			}
		}
	}
	return sent
}

// drain waits until the clients received want messages, or nothing has
// arrived for 3 s, or cfg.Drain has passed.
func drain(ctx context.Context, cfg Config, f fleet, want uint64) {
	ctx, cancel := context.WithTimeout(ctx, cfg.Drain)
	defer cancel()
	var last uint64
	lastChange := time.Now()
	_ = f.waitAll(ctx, func(c Counters, _, _ int) bool {
		if c.Received != last {
			last, lastChange = c.Received, time.Now()
		}
		return c.Received >= want || time.Since(lastChange) > 3*time.Second
	})
	// One more report period, so that counters sent just now are in.
	sleep(ctx, progressEvery)
}

func sleep(ctx context.Context, d time.Duration) {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
	case <-ctx.Done():
	}
}

func startFleet(ctx context.Context, cfg Config, tabs int) (fleet, error) {
	n := max(cfg.Workers, 1)
	var ips []string
	for i := range cfg.LocalIPs {
		ips = append(ips, "127.0.0."+strconv.Itoa(2+i%253))
	}
	var f fleet
	for k := range n {
		first := cfg.Conns * k / n
		last := cfg.Conns * (k + 1) / n
		// Users do not straddle workers, so tab 0 (the sender) of each is in one.
		first -= first % tabs
		last -= last % tabs
		job := Job{
			Gateway: cfg.Gateway, URLs: cfg.URLs, Secret: cfg.Secret,
			First: first, Count: last - first, Tabs: tabs, LocalIPs: ips,
			RampRate: cfg.Ramp / float64(n), Inflight: cfg.Inflight, Size: cfg.Size,
			Client: cfg.Client, Compress: cfg.Compress, Text: cfg.Text, Reliable: cfg.Reliable,
		}
		if cfg.Scenario == Roundtrip {
			job.Method, job.Rate = "echo", cfg.Rate*float64(job.Count)/float64(cfg.Conns)
		}
		if cfg.Scenario == Hello {
			job.Method, job.Rate = "hello", cfg.Rate*float64(job.Count)/float64(cfg.Conns)
		}
		var h *handle
		var err error
		if cfg.Workers == 0 {
			h, err = startLocal(ctx, job)
		} else {
			h, err = startProcess(ctx, cfg.Exe, job, os.Stderr)
		}
		if err != nil {
			f.send(cmdQuit)
			for _, w := range f {
				_ = w.h.wait()
			}
			return nil, err
		}
		ws := &workerState{h: h}
		go ws.consume()
		f = append(f, ws)
	}
	return f, nil
}

// clientCPU is the CPU time of this process and its worker processes.
func clientCPU(f fleet) int64 {
	var total int64
	if s, err := procstat.Read(os.Getpid()); err == nil {
		total += s.CPUus
	}
	for _, w := range f {
		if w.h.pid != 0 {
			if s, err := procstat.Read(w.h.pid); err == nil {
				total += s.CPUus
			}
		}
	}
	return total
}

func derive(res *Result, conns int64, runSecs float64, cfg Config, clientCPUus int64) {
	before := procstat.Sum(res.Server.Before)
	ramp := procstat.Sum(res.Server.AfterRamp)
	run := procstat.Sum(res.Server.AfterRun)
	d := &res.Derived
	d.RSSBeforeMiB = float64(before.RSSKiB) / 1024
	d.RSSAfterRampMiB = float64(ramp.RSSKiB) / 1024
	d.RampCPUms = float64(ramp.CPUus-before.CPUus) / 1000
	if conns > 0 {
		d.RSSPerConnKiB = float64(ramp.RSSKiB-before.RSSKiB) / float64(conns)
		if runSecs > 0 {
			d.CPUPerConnUsPerS = float64(run.CPUus-ramp.CPUus) / float64(conns) / runSecs
		}
	}
	if runSecs > 0 {
		d.ServerCPUPercent = float64(run.CPUus-ramp.CPUus) / (runSecs * 1e6) * 100
		d.ClientCPUPercent = float64(clientCPUus) / (runSecs * 1e6) * 100
	}
	if cfg.Scenario != Idle && runSecs > 0 && res.Sent > 0 {
		window := cfg.Duration.Seconds()
		if cfg.Scenario == Broadcast && cfg.Messages > 0 {
			window = float64(cfg.Messages) / cfg.Rate
		}
		// The publishing scenarios' window is the time until the publisher
		// took the last message (up to one send tick after it fell due when
		// the gateway keeps up); the requesters' is the sending time.
		if res.PublishSeconds > 0 {
			window = res.PublishSeconds
		}
		if window > 0 {
			res.AchievedRate = float64(res.Sent) / window
		}
	}
}

// progress prints the fleet's counters once a second until stopped.
func progress(cfg Config, f fleet, tabs int, published *atomic.Uint64) func() {
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	start := time.Now()
	go func() {
		defer close(done)
		t := time.NewTicker(time.Second)
		defer t.Stop()
		for {
			select {
			case <-ctx.Done():
				return
			case <-t.C:
			}
			c, h, ready, _ := f.totals()
			sent, want := c.Sent, c.Sent*uint64(tabs)
			if p := published.Load(); p > 0 {
				sent, want = p, p
				if cfg.Scenario == Broadcast {
					want = p * uint64(max(c.Connected, 0))
				}
			}
			missing := int64(want) - int64(c.Received)
			fmt.Fprintf(cfg.Progress, "[%4.0fs] %s %s connected %d/%d failed %d dropped %d | workers ready %d/%d | sent %d received %d lost-or-in-flight %d errors %d | p99 so far %.2fms max %.2fms\n",
				time.Since(start).Seconds(), cfg.Gateway, cfg.Scenario, c.Connected, cfg.Conns, c.Failed, c.Dropped,
				ready, len(f), sent, c.Received, max(missing, 0), c.Errors, float64(h.Quantile(0.99))/1000, float64(h.Max)/1000)
		}
	}()
	return func() { cancel(); <-done }
}

// DefaultWorkDir is where a run keeps the servers' logs and configuration.
func DefaultWorkDir() string { return filepath.Join(os.TempDir(), "wsgate-bench") }
