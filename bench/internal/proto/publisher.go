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

// CentrifugoPublisher publishes through Centrifugo's HTTP API: one message
// with /api/publish, a batch that fell due together with /api/batch. A few
// posters send concurrently, as an application's backend would.
type CentrifugoPublisher struct {
	api    string // base URL, e.g. http://127.0.0.1:8000/api
	key    string
	client *http.Client
	jobs   chan []byte // request bodies, path encoded in the first byte
	wg     sync.WaitGroup
	errs   atomic.Uint64
	first  atomic.Pointer[error]
}

var _ Publisher = (*CentrifugoPublisher)(nil)

// posters is how many HTTP requests to the API may be in flight at once.
const posters = 4

// NewCentrifugoPublisher publishes to the API at base (http://host:port)
// with key.
func NewCentrifugoPublisher(base, key string) *CentrifugoPublisher {
	p := &CentrifugoPublisher{
		api: base + "/api", key: key,
		client: &http.Client{
			Timeout:   10 * time.Second,
			Transport: &http.Transport{MaxIdleConnsPerHost: posters, MaxConnsPerHost: posters},
		},
		jobs: make(chan []byte, posters*2),
	}
	for range posters {
		p.wg.Go(p.post)
	}
	return p
}

const (
	pathPublish = 'p'
	pathBatch   = 'b'
)

// AppendCentrifugoBatch appends the body of an API request for batch: a
// publish, or a batch of publishes (its first byte tells which path).
func AppendCentrifugoBatch(dst []byte, batch []Out) []byte {
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
	return append(dst, `]}`...)
}

// Publish implements Publisher; it blocks while every poster is busy, so a
// slow API lowers the achieved rate rather than queueing without bound.
func (p *CentrifugoPublisher) Publish(batch []Out) error {
	if len(batch) == 0 {
		return nil
	}
	p.jobs <- AppendCentrifugoBatch(nil, batch)
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
