// Package stack starts the servers of a load run as child processes, so
// that each one's CPU and memory can be read from /proc: for wsgate a NATS
// server (bench/cmd/natsd), edges and a dispatcher; for Centrifugo the
// centrifugo binary with a generated configuration and, for RPCs, an echo
// backend (loadgen rpcecho) behind its RPC proxy.
package stack

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// Timing of starts and stops.
const (
	startTimeout = 30 * time.Second
	stopTimeout  = 15 * time.Second
	pollEvery    = 50 * time.Millisecond
)

// Config says which stack to start and where its programs are.
type Config struct {
	Gateway    string // wsgate or centrifugo
	Edges      int    // wsgate edges (hello needs 2)
	Dispatcher bool   // wsgate: start bin/dispatcher (echo, hello)
	RPCProxy   bool   // centrifugo: start the echo backend of its RPC proxy
	BinDir     string // wsgate: where edge and dispatcher are (bin/)
	NATSD      string // wsgate: the natsd wrapper
	Centrifugo string // centrifugo: its binary
	Self       string // the loadgen binary, for "loadgen rpcecho"
	Secret     string // HMAC secret of the connection tokens
	APIKey     string // centrifugo: HTTP API key
	SendQueue  int    // wsgate: EDGE_SEND_QUEUE
	// NATSNodes is the number of NATS servers (wsgate): 0 or 1 is one
	// server, more a cluster of that many natsd processes, edge i on node
	// i mod NATSNodes.
	NATSNodes int
	// JetStream turns JetStream on in every NATS server (storage under Dir),
	// which WS_HISTORY, WS_INBOUND and WS_PRESENCE need.
	JetStream bool
	// EdgeEnv and DispatcherEnv are added to the environment of every edge
	// and of the dispatcher (e.g. WS_HISTORY=memory), after the stack's own.
	EdgeEnv       []string
	DispatcherEnv []string
	// DispatcherPath, when set, is the program started as "dispatcher"
	// instead of BinDir/dispatcher (e.g. a handler built on the SDK), with
	// DispatcherArgs; it must log the service's "dispatcher subscribed".
	DispatcherPath string
	DispatcherArgs []string
	Dir            string // for generated files and the servers' logs
}

// Stack is a running set of servers.
type Stack struct {
	URLs    []string // WebSocket URL of each edge (or of Centrifugo)
	NATSURL string   // wsgate: for the publisher (the first node of a cluster)
	// NATSURLs are the client URLs of every NATS node, in order.
	NATSURLs []string
	APIURL   string  // centrifugo: http://host:port, for the publisher
	procs    []*proc // in start order
}

// Pids are the server processes whose CPU and memory the run reports.
func (s *Stack) Pids() []int {
	var pids []int
	for _, p := range s.procs {
		pids = append(pids, p.cmd.Process.Pid)
	}
	return pids
}

// Names are the servers in the order of Pids.
func (s *Stack) Names() []string {
	var names []string
	for _, p := range s.procs {
		names = append(names, p.name)
	}
	return names
}

type proc struct {
	name  string
	path  string
	args  []string
	env   []string
	ready func(context.Context, *proc) error // waits until it serves again after a restart
	cmd   *exec.Cmd
	lines chan string   // stdout lines until the match is found
	done  chan struct{} // closed when stdout reached EOF
	log   *os.File
}

// start runs name with env and sends its stdout lines to p.lines, then
// drains them once nobody listens (see waitLine).
func start(dir, name, path string, args, env []string) (*proc, error) {
	// Appended to, so that a restarted server's log follows its first life.
	logf, err := os.OpenFile(filepath.Join(dir, name+".log"), os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return nil, err
	}
	cmd := exec.Command(path, args...)
	cmd.Env = append(os.Environ(), env...)
	cmd.Stderr = logf
	out, err := cmd.StdoutPipe()
	if err != nil {
		logf.Close()
		return nil, err
	}
	if err := cmd.Start(); err != nil {
		logf.Close()
		return nil, fmt.Errorf("stack: start %s (%s): %w", name, path, err)
	}
	p := &proc{name: name, path: path, args: args, env: env, cmd: cmd, lines: make(chan string, 64), done: make(chan struct{}), log: logf}
	go func() {
		defer close(p.done)
		defer close(p.lines)
		sc := bufio.NewScanner(io.TeeReader(out, logf))
		sc.Buffer(make([]byte, 64<<10), 1<<20)
		for sc.Scan() {
			select {
			case p.lines <- sc.Text():
			default: // nobody waits for lines any more: keep draining
			}
		}
	}()
	return p, nil
}

// waitLine returns the first stdout line for which match returns a value.
func (p *proc) waitLine(ctx context.Context, match func(string) (string, bool)) (string, error) {
	ctx, cancel := context.WithTimeout(ctx, startTimeout)
	defer cancel()
	for {
		select {
		case line, ok := <-p.lines:
			if !ok {
				return "", fmt.Errorf("stack: %s exited before it was ready (see %s)", p.name, p.log.Name())
			}
			if v, ok := match(line); ok {
				return v, nil
			}
		case <-ctx.Done():
			return "", fmt.Errorf("stack: %s not ready within %s (see %s)", p.name, startTimeout, p.log.Name())
		}
	}
}

// logField matches a JSON log line with msg and returns its field key.
func logField(msg, key string) func(string) (string, bool) {
	return func(line string) (string, bool) {
		var m map[string]any
		if json.Unmarshal([]byte(line), &m) != nil || m["msg"] != msg {
			return "", false
		}
		v, _ := m[key].(string)
		return v, true
	}
}

func (p *proc) stop() error {
	_ = p.cmd.Process.Signal(syscall.SIGTERM)
	timer := time.AfterFunc(stopTimeout, func() { _ = p.cmd.Process.Kill() })
	defer timer.Stop()
	<-p.done
	err := p.cmd.Wait()
	p.log.Close()
	var ee *exec.ExitError
	if errors.As(err, &ee) && !ee.Exited() {
		return nil // ended by our signal
	}
	return err
}

// Start starts the stack of cfg.Gateway.
func Start(ctx context.Context, cfg Config) (*Stack, error) {
	if err := os.MkdirAll(cfg.Dir, 0o755); err != nil {
		return nil, err
	}
	s := &Stack{}
	var err error
	switch cfg.Gateway {
	case "wsgate":
		err = s.startWsgate(ctx, cfg)
	case "centrifugo":
		err = s.startCentrifugo(ctx, cfg)
	default:
		err = fmt.Errorf("stack: unknown gateway %q", cfg.Gateway)
	}
	if err != nil {
		_ = s.Stop()
		return nil, err
	}
	return s, nil
}

func (s *Stack) startWsgate(ctx context.Context, cfg Config) error {
	var err error
	if cfg.NATSNodes > 1 {
		err = s.startCluster(ctx, cfg)
	} else {
		err = s.startNATS(ctx, cfg)
	}
	if err != nil {
		return err
	}
	s.NATSURL = s.NATSURLs[0]
	return s.addWsgate(ctx, cfg)
}

func readyLine(l string) (string, bool) { return strings.CutPrefix(l, "ready ") }

// startNATS starts one NATS server.
func (s *Stack) startNATS(ctx context.Context, cfg Config) error {
	natsd, err := start(cfg.Dir, "natsd", cfg.NATSD, append([]string{"-addr", "127.0.0.1", "-port", "-1"}, jetStreamArgs(cfg, "natsd")...), nil)
	if err != nil {
		return err
	}
	s.procs = append(s.procs, natsd)
	u, err := natsd.waitLine(ctx, readyLine)
	if err != nil {
		return err
	}
	s.NATSURLs = []string{u}
	return nil
}

// startCluster starts cfg.NATSNodes natsd processes as one cluster: the
// first is the seed the others route to (the nodes then learn of each other
// by gossip), and each is ready once it is routed to all the others.
func (s *Stack) startCluster(ctx context.Context, cfg Config) error {
	n := cfg.NATSNodes
	var nodes []*proc
	var seed string
	for i := range n {
		name := "natsd" + strconv.Itoa(i+1)
		args := []string{"-addr", "127.0.0.1", "-port", "-1", "-cluster", "-name", name, "-peers", strconv.Itoa(n - 1)}
		if i > 0 {
			args = append(args, "-routes", seed)
		}
		args = append(args, jetStreamArgs(cfg, name)...)
		p, err := start(cfg.Dir, name, cfg.NATSD, args, nil)
		if err != nil {
			return err
		}
		s.procs = append(s.procs, p)
		nodes = append(nodes, p)
		if i == 0 {
			if seed, err = p.waitLine(ctx, func(l string) (string, bool) { return strings.CutPrefix(l, "cluster ") }); err != nil {
				return err
			}
		}
	}
	for _, p := range nodes {
		u, err := p.waitLine(ctx, readyLine)
		if err != nil {
			return err
		}
		s.NATSURLs = append(s.NATSURLs, u)
	}
	return nil
}

// jetStreamArgs are natsd's arguments for JetStream when cfg asks for it,
// with the store of node name in its own folder under cfg.Dir.
func jetStreamArgs(cfg Config, name string) []string {
	if !cfg.JetStream {
		return nil
	}
	return []string{"-jetstream", filepath.Join(cfg.Dir, "jetstream-"+name)}
}

// StartOnNATS starts the wsgate edges (and the dispatcher, when asked) of
// cfg on an existing NATS server; only they are stopped by Stop.
func StartOnNATS(ctx context.Context, cfg Config, natsURL string) (*Stack, error) {
	if err := os.MkdirAll(cfg.Dir, 0o755); err != nil {
		return nil, err
	}
	s := &Stack{NATSURL: natsURL, NATSURLs: []string{natsURL}}
	if err := s.addWsgate(ctx, cfg); err != nil {
		_ = s.Stop()
		return nil, err
	}
	return s, nil
}

func (s *Stack) addWsgate(ctx context.Context, cfg Config) error {
	common := []string{"LOG_LEVEL=info", "LOG_FORMAT=json", "WS_SUBJECT_PREFIX=ws"}
	for i := range max(cfg.Edges, 1) {
		name := "edge" + strconv.Itoa(i+1)
		env := append([]string{
			"NATS_URL=" + s.NATSURLs[i%len(s.NATSURLs)],
			"EDGE_ADDR=127.0.0.1:0", "EDGE_ID=" + name, "EDGE_JWT_SECRET=" + cfg.Secret,
			"EDGE_RATE_LIMIT=0", "EDGE_SEND_QUEUE=" + strconv.Itoa(max(cfg.SendQueue, 1)),
			"EDGE_DRAIN_TIMEOUT=1s", "EDGE_MAX_CONNECTIONS=0",
		}, common...)
		p, err := start(cfg.Dir, name, filepath.Join(cfg.BinDir, "edge"), nil, append(env, cfg.EdgeEnv...))
		if err != nil {
			return err
		}
		s.procs = append(s.procs, p)
		addr, err := p.waitLine(ctx, logField("edge listening", "addr"))
		if err != nil {
			return err
		}
		s.URLs = append(s.URLs, "ws://"+addr+"/ws")
		// A restarted edge listens on the address its clients know.
		p.env = append(p.env, "EDGE_ADDR="+addr)
		p.ready = func(ctx context.Context, p *proc) error {
			_, err := p.waitLine(ctx, logField("edge listening", "addr"))
			return err
		}
	}
	if cfg.Dispatcher {
		path := filepath.Join(cfg.BinDir, "dispatcher")
		if cfg.DispatcherPath != "" {
			path = cfg.DispatcherPath
		}
		p, err := start(cfg.Dir, "dispatcher", path, cfg.DispatcherArgs,
			append(append([]string{"DISPATCHER_ADDR=127.0.0.1:0", "NATS_URL=" + s.NATSURL}, common...), cfg.DispatcherEnv...))
		if err != nil {
			return err
		}
		s.procs = append(s.procs, p)
		p.ready = func(ctx context.Context, p *proc) error {
			_, err := p.waitLine(ctx, logField("dispatcher subscribed", "queue"))
			return err
		}
		if err := p.ready(ctx, p); err != nil {
			return err
		}
	}
	return nil
}

// Kill ends the server called name ("edge1", "dispatcher", …) with SIGKILL,
// as a crash would, and waits until it is gone.
func (s *Stack) Kill(name string) error {
	i := s.index(name)
	if i < 0 {
		return fmt.Errorf("stack: no server %q", name)
	}
	p := s.procs[i]
	_ = p.cmd.Process.Kill()
	<-p.done
	_ = p.cmd.Wait()
	return p.log.Close()
}

// Restart starts the server called name again after Kill, with the same
// program and environment (an edge on the same address), and waits until
// it serves.
func (s *Stack) Restart(ctx context.Context, name string) error {
	i := s.index(name)
	if i < 0 {
		return fmt.Errorf("stack: no server %q", name)
	}
	old := s.procs[i]
	if old.ready == nil {
		return fmt.Errorf("stack: %s cannot be restarted", name)
	}
	p, err := start(filepath.Dir(old.log.Name()), name, old.path, old.args, old.env)
	if err != nil {
		return err
	}
	p.ready = old.ready
	s.procs[i] = p
	return p.ready(ctx, p)
}

func (s *Stack) index(name string) int {
	for i, p := range s.procs {
		if p.name == name {
			return i
		}
	}
	return -1
}

// FreePort returns a loopback port that was free a moment ago, for servers
// that cannot report the port they bound.
func FreePort() (int, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, err
	}
	defer ln.Close()
	return ln.Addr().(*net.TCPAddr).Port, nil
}

// CentrifugoConfig is Centrifugo v6's configuration for a run: memory
// engine, one node, HMAC connection tokens, the HTTP API behind key, the
// namespaces of the tool's channels (connections are subscribed server
// side by their token's channels claim) and, when rpcURL is set, every RPC
// method proxied to it.
func CentrifugoConfig(port int, secret, apiKey, rpcURL string) ([]byte, error) {
	cfg := map[string]any{
		"log":         map[string]any{"level": "warn"},
		"http_server": map[string]any{"address": "127.0.0.1", "port": port},
		"engine":      map[string]any{"type": "memory"},
		"client": map[string]any{
			"token":           map[string]any{"hmac_secret_key": secret},
			"allowed_origins": []string{"*"},
			"channel_limit":   128,
		},
		"http_api": map[string]any{"key": apiKey},
		// Nothing leaves the machine: no anonymous usage statistics.
		"usage_stats": map[string]any{"disabled": true},
		"channel": map[string]any{
			"namespaces": []map[string]any{{"name": "bench"}, {"name": "user"}},
		},
	}
	if rpcURL != "" {
		cfg["rpc"] = map[string]any{
			"proxy":             map[string]any{"endpoint": rpcURL, "timeout": "5s"},
			"without_namespace": map[string]any{"proxy_enabled": true},
		}
	}
	return json.MarshalIndent(cfg, "", "  ")
}

func (s *Stack) startCentrifugo(ctx context.Context, cfg Config) error {
	rpcURL := ""
	if cfg.RPCProxy {
		p, err := start(cfg.Dir, "rpcecho", cfg.Self, []string{"rpcecho", "-addr", "127.0.0.1:0"}, nil)
		if err != nil {
			return err
		}
		s.procs = append(s.procs, p)
		if rpcURL, err = p.waitLine(ctx, func(l string) (string, bool) { return strings.CutPrefix(l, "ready ") }); err != nil {
			return err
		}
	}
	port, err := FreePort()
	if err != nil {
		return err
	}
	conf, err := CentrifugoConfig(port, cfg.Secret, cfg.APIKey, rpcURL)
	if err != nil {
		return err
	}
	path := filepath.Join(cfg.Dir, "centrifugo.json")
	if err := os.WriteFile(path, conf, 0o600); err != nil {
		return err
	}
	p, err := start(cfg.Dir, "centrifugo", cfg.Centrifugo, []string{"--config", path}, nil)
	if err != nil {
		return err
	}
	// The server processes come first in Pids: Centrifugo, then its backend.
	s.procs = append([]*proc{p}, s.procs...)
	base := "http://127.0.0.1:" + strconv.Itoa(port)
	if err := waitAPI(ctx, p, base, cfg.APIKey); err != nil {
		return err
	}
	s.APIURL = base
	s.URLs = []string{"ws://127.0.0.1:" + strconv.Itoa(port) + "/connection/websocket"}
	return nil
}

// waitAPI polls Centrifugo's info API until it answers.
func waitAPI(ctx context.Context, p *proc, base, key string) error {
	ctx, cancel := context.WithTimeout(ctx, startTimeout)
	defer cancel()
	for {
		req, _ := http.NewRequestWithContext(ctx, http.MethodPost, base+"/api/info", bytes.NewReader([]byte("{}")))
		req.Header.Set("X-API-Key", key)
		if resp, err := http.DefaultClient.Do(req); err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return nil
			}
		}
		select {
		case <-p.done:
			return fmt.Errorf("stack: centrifugo exited before it was ready (see %s)", p.log.Name())
		case <-ctx.Done():
			return fmt.Errorf("stack: centrifugo not ready within %s (see %s)", startTimeout, p.log.Name())
		case <-time.After(pollEvery):
		}
	}
}

// Stop stops the servers, the last started first.
func (s *Stack) Stop() error {
	var errs []error
	for i := len(s.procs) - 1; i >= 0; i-- {
		if s.procs[i].cmd.ProcessState != nil {
			continue // killed and not restarted
		}
		if err := s.procs[i].stop(); err != nil {
			errs = append(errs, fmt.Errorf("stack: %s: %w", s.procs[i].name, err))
		}
	}
	s.procs = nil
	return errors.Join(errs...)
}
