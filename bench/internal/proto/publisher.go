package proto

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"sync"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go"
)

// Out is one message to publish: to every connection (User empty) or to
// every connection of User.
type Out struct {
	User    string
	Payload []byte
}

// Publisher is the server side that pushes messages to the gateway.
type Publisher interface {
	// Publish sends a batch of messages that fell due together. It may
	// return before they reach the gateway; Close waits for that.
	Publish(batch []Out) error
	// Errors is the number of messages the gateway refused or that could
	// not be sent.
	Errors() uint64
	// Close sends what is pending and releases the publisher.
	Close(ctx context.Context) error
}

// NATSPublisher publishes to wsgate's NATS subjects (DESIGN §4).
type NATSPublisher struct {
	nc     *nats.Conn
	prefix string
	errs   atomic.Uint64
	buf    []byte
}

var _ Publisher = (*NATSPublisher)(nil)

// NewNATSPublisher connects to url; prefix is WS_SUBJECT_PREFIX.
func NewNATSPublisher(url, prefix string) (*NATSPublisher, error) {
	nc, err := nats.Connect(url, nats.Name("wsgate-loadgen"), nats.ReconnectBufSize(64<<20))
	if err != nil {
		return nil, fmt.Errorf("proto: nats connect %s: %w", url, err)
	}
	return &NATSPublisher{nc: nc, prefix: prefix}, nil
}

// AppendOutbound appends a wsgate outbound message carrying payload.
func AppendOutbound(dst, payload []byte) []byte {
	dst = append(dst, `{"action":"`+WsgateAction+`","details":`...)
	dst = append(dst, payload...)
	return append(dst, '}')
}

// Publish implements Publisher. Not safe for concurrent use.
func (p *NATSPublisher) Publish(batch []Out) error {
	for _, o := range batch {
		subject := p.prefix + ".send.all"
		if o.User != "" {
			subject = p.prefix + ".send.user." + o.User
		}
		p.buf = AppendOutbound(p.buf[:0], o.Payload)
		if err := p.nc.Publish(subject, p.buf); err != nil {
			p.errs.Add(1)
			return fmt.Errorf("proto: publish %s: %w", subject, err)
		}
	}
	return nil
}

// Errors implements Publisher.
func (p *NATSPublisher) Errors() uint64 { return p.errs.Load() }

// Close implements Publisher.
func (p *NATSPublisher) Close(ctx context.Context) error {
	defer p.nc.Close()
	if _, ok := ctx.Deadline(); !ok {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, 30*time.Second)
		defer cancel()
	}
	return p.nc.FlushWithContext(ctx)
}

// Centrifugo's publishing paths (its server API, HTTP).
const (
	// PublishBatch sends the messages that fell due together in one
	// /api/batch request (one /api/publish when alone): the pipelining the
	// server API documentation recommends against a round trip per command.
	PublishBatch = "batch"
	// PublishParallel is PublishBatch with "parallel": true, which has
	// Centrifugo process a batch's commands concurrently.
	PublishParallel = "parallel"
	// PublishSingle sends every message in a request of its own to
	// /api/publish, as a backend that publishes one event at a time does.
	PublishSingle = "single"
)

// CentrifugoOptions choose the publishing path.
type CentrifugoOptions struct {
	Mode     string // PublishBatch (default), PublishParallel or PublishSingle
	Inflight int    // HTTP requests in flight at most (default 4)
}

// DefaultInflight is the number of requests in flight unless told.
const DefaultInflight = 4

// CheckCentrifugoOptions fills the defaults of o and checks it.
func CheckCentrifugoOptions(o CentrifugoOptions) (CentrifugoOptions, error) {
	switch o.Mode {
	case "":
		o.Mode = PublishBatch
	case PublishBatch, PublishParallel, PublishSingle:
	default:
		return o, fmt.Errorf("proto: unknown publish mode %q (batch, parallel or single)", o.Mode)
	}
	if o.Inflight < 0 {
		return o, fmt.Errorf("proto: publish inflight %d must not be negative", o.Inflight)
	}
	if o.Inflight == 0 {
		o.Inflight = DefaultInflight
	}
	return o, nil
}

// CentrifugoPublisher publishes through Centrifugo's HTTP API, with at most
// Inflight requests in flight over as many kept-alive connections, as an
// application's backend would.
type CentrifugoPublisher struct {
	api    string // base URL, e.g. http://127.0.0.1:8000/api
	key    string
	opt    CentrifugoOptions
	client *http.Client
	jobs   chan []byte // request bodies, path encoded in the first byte
	wg     sync.WaitGroup
	errs   atomic.Uint64
	first  atomic.Pointer[error]
}

var _ Publisher = (*CentrifugoPublisher)(nil)

// NewCentrifugoPublisher publishes to the API at base (http://host:port)
// with key, the way opt says.
func NewCentrifugoPublisher(base, key string, opt CentrifugoOptions) (*CentrifugoPublisher, error) {
	opt, err := CheckCentrifugoOptions(opt)
	if err != nil {
		return nil, err
	}
	p := &CentrifugoPublisher{
		api: base + "/api", key: key, opt: opt,
		client: &http.Client{
			Timeout:   10 * time.Second,
			Transport: &http.Transport{MaxIdleConnsPerHost: opt.Inflight, MaxConnsPerHost: opt.Inflight},
		},
		// Unbuffered: Publish returns once a poster took the request, so
		// at most Inflight requests are unanswered when it returns.
		jobs: make(chan []byte),
	}
	for range opt.Inflight {
		p.wg.Go(p.post)
	}
	return p, nil
}

const (
	pathPublish = 'p'
	pathBatch   = 'b'
)

// AppendCentrifugoBatch appends the body of an API request for batch: a
// publish, or a batch of publishes (its first byte tells which path),
// processed concurrently by Centrifugo when parallel is set.
func AppendCentrifugoBatch(dst []byte, batch []Out, parallel bool) []byte {
	one := func(dst []byte, o Out) []byte {
		ch := CentrifugoAllChannel
		if o.User != "" {
			ch = CentrifugoUserChannel + o.User
		}
		dst = append(dst, `{"channel":"`...)
		dst = append(dst, ch...)
		dst = append(dst, `","data":`...)
		dst = append(dst, o.Payload...)
		return append(dst, '}')
	}
	if len(batch) == 1 {
		return one(append(dst, pathPublish), batch[0])
	}
	dst = append(dst, pathBatch)
	dst = append(dst, `{"commands":[`...)
	for i, o := range batch {
		if i > 0 {
			dst = append(dst, ',')
		}
		dst = append(dst, `{"publish":`...)
		dst = one(dst, o)
		dst = append(dst, '}')
	}
	if parallel {
		return append(dst, `],"parallel":true}`...)
	}
	return append(dst, `]}`...)
}

// Publish implements Publisher; it blocks while every poster is busy, so a
// slow API lowers the achieved rate rather than queueing without bound.
func (p *CentrifugoPublisher) Publish(batch []Out) error {
	if len(batch) == 0 {
		return nil
	}
	if p.opt.Mode == PublishSingle {
		for i := range batch {
			p.jobs <- AppendCentrifugoBatch(nil, batch[i:i+1], false)
		}
		return nil
	}
	p.jobs <- AppendCentrifugoBatch(nil, batch, p.opt.Mode == PublishParallel)
	return nil
}

func (p *CentrifugoPublisher) post() {
	for body := range p.jobs {
		path, n := "/publish", uint64(1)
		if body[0] == pathBatch {
			path, n = "/batch", uint64(bytes.Count(body, []byte(`{"publish":`)))
		}
		if err := p.do(path, body[1:]); err != nil {
			p.errs.Add(n)
			p.first.CompareAndSwap(nil, &err)
		}
	}
}

func (p *CentrifugoPublisher) do(path string, body []byte) error {
	req, err := http.NewRequest(http.MethodPost, p.api+path, bytes.NewReader(body))
	if err != nil {
		return err
	}
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("X-API-Key", p.key)
	resp, err := p.client.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	answer, err := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
	if err != nil {
		return err
	}
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("proto: centrifugo %s: HTTP %d: %s", path, resp.StatusCode, bytes.TrimSpace(answer))
	}
	if bytes.Contains(answer, []byte(`"error":`)) {
		return fmt.Errorf("proto: centrifugo %s: %s", path, bytes.TrimSpace(answer))
	}
	return nil
}

// Errors implements Publisher.
func (p *CentrifugoPublisher) Errors() uint64 { return p.errs.Load() }

// Close implements Publisher: it waits for the requests in flight.
func (p *CentrifugoPublisher) Close(ctx context.Context) error {
	close(p.jobs)
	done := make(chan struct{})
	go func() { p.wg.Wait(); close(done) }()
	select {
	case <-done:
	case <-ctx.Done():
		return ctx.Err()
	}
	p.client.CloseIdleConnections()
	if e := p.first.Load(); e != nil {
		return *e
	}
	return nil
}

// ErrUnsupported is returned for a scenario a gateway has no equivalent of.
var ErrUnsupported = errors.New("proto: not supported by this gateway")
