package proto

import (
	"bytes"
	"context"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"
	natsserver "github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"go.uber.org/goleak"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

func TestPayloadRoundTrip(t *testing.T) {
	for _, size := range []int{0, MinPayload, 64, 128, 1024} {
		p := AppendPayload(nil, 1700000000123456789, 42, size)
		if len(p) < size {
			t.Fatalf("size %d: payload has %d bytes", size, len(p))
		}
		if size > MinPayload && len(p) != size {
			t.Fatalf("size %d: payload has %d bytes, want exactly %d", size, len(p), size)
		}
		var v struct {
			TS  int64  `json:"ts"`
			Seq uint64 `json:"seq"`
			Pad string `json:"pad"`
		}
		if err := json.Unmarshal(p, &v); err != nil {
			t.Fatalf("size %d: not JSON: %v: %s", size, err, p)
		}
		ts, seq, ok := ParsePayload(p)
		if !ok || ts != v.TS || seq != v.Seq || ts != 1700000000123456789 || seq != 42 {
			t.Fatalf("size %d: parsed %d %d %v from %s", size, ts, seq, ok, p)
		}
	}
	for _, bad := range []string{``, `{"seq":1}`, `{"ts":12}`, `{"ts":"x","seq":1}`, `{"ts":1,"seq":}`} {
		if _, _, ok := ParsePayload([]byte(bad)); ok {
			t.Errorf("ParsePayload(%s) = ok, want not ok", bad)
		}
	}
}

func kinds(f Framer, frame string) []Kind {
	var out []Kind
	f.Decode([]byte(frame), func(m Msg) { out = append(out, m.Kind) })
	return out
}

func TestWsgateFramer(t *testing.T) {
	f := Wsgate{}
	payload := AppendPayload(nil, 5, 7, 0)
	req := f.AppendRequest(nil, "echo", 99, payload)
	var arr []json.RawMessage
	if err := json.Unmarshal(req, &arr); err != nil || len(arr) != 3 || string(arr[0]) != `"echo"` || string(arr[2]) != `99` {
		t.Fatalf("request %s is not [\"echo\", payload, 99]", req)
	}
	// The edge's echo reply carries the same details and ref back.
	reply := `["echo",` + string(payload) + `,99]`
	var body []byte
	f.Decode([]byte(reply), func(m Msg) { body = append([]byte(nil), m.Body...) })
	if ts, seq, ok := ParsePayload(body); !ok || ts != 5 || seq != 7 {
		t.Fatalf("reply payload %s parsed as %d %d %v", body, ts, seq, ok)
	}
	cases := []struct {
		frame string
		want  Kind
	}{
		{`["Client/authentication","ok"]`, KindAuthOK},
		{`["Client/authentication:error",[401,"token is invalid"]]`, KindError},
		{`["Client/error",[400,"bad"]]`, KindError},
		{`["Server/close",null]`, KindError},
		{`["echo:error",[500,"Internal Server Error"],3]`, KindError},
		{`["echo",{"ts":1,"seq":2},3]`, KindReply},
		{`["bench",{"ts":1,"seq":2}]`, KindData},
		{`["hello",{"ts":1,"seq":2}]`, KindData},
		{`["Server/pong",null]`, KindOther},
		{`["chat/message",{}]`, KindOther},
		{`not json`, KindOther},
		{`["unterminated`, KindOther},
	}
	for _, c := range cases {
		if got := kinds(f, c.frame); len(got) != 1 || got[0] != c.want {
			t.Errorf("%s: kinds %v, want [%v]", c.frame, got, c.want)
		}
	}
	url, hdr := f.Dial("ws://h/ws", "T")
	if url != "ws://h/ws" || hdr.Get("Authorization") != "Bearer T" || f.Hello("T") != nil || f.Pong() != nil {
		t.Fatal("wsgate carries the token in the upgrade and needs no hello or pong")
	}
}

func TestCentrifugoFramer(t *testing.T) {
	f := Centrifugo{}
	payload := AppendPayload(nil, 11, 12, 0)
	req := f.AppendRequest(nil, "echo", 5, payload)
	var cmd struct {
		ID  uint32 `json:"id"`
		RPC struct {
			Method string          `json:"method"`
			Data   json.RawMessage `json:"data"`
		} `json:"rpc"`
	}
	if err := json.Unmarshal(req, &cmd); err != nil || cmd.ID < 2 || cmd.RPC.Method != "echo" || string(cmd.RPC.Data) != string(payload) {
		t.Fatalf("rpc command %s decoded as %+v (%v)", req, cmd, err)
	}
	for _, id := range []uint64{0, 1, 1<<32 - 2, 1 << 32, 1<<64 - 1} {
		if r := RequestID(id); r < 2 || r >= 1<<32 {
			t.Errorf("RequestID(%d) = %d, outside [2, 2^32)", id, r)
		}
	}
	var hello struct {
		ID      int `json:"id"`
		Connect struct {
			Token string `json:"token"`
		} `json:"connect"`
	}
	if err := json.Unmarshal(f.Hello("TOK"), &hello); err != nil || hello.ID != 1 || hello.Connect.Token != "TOK" {
		t.Fatalf("connect command %s", f.Hello("TOK"))
	}
	cases := []struct {
		frame string
		want  []Kind
	}{
		{`{"id":1,"connect":{"client":"c","version":"6","subs":{"bench:all":{}},"ping":25,"pong":true}}`, []Kind{KindAuthOK}},
		{`{"id":1,"error":{"code":109,"message":"token expired"}}`, []Kind{KindError}},
		{`{}`, []Kind{KindPing}},
		{`{"push":{"channel":"bench:all","pub":{"data":{"ts":1,"seq":2,"pad":""},"offset":3}}}`, []Kind{KindData}},
		{`{"push":{"disconnect":{"code":3001,"reason":"shutdown"}}}`, []Kind{KindError}},
		{`{"push":{"channel":"bench:all","join":{"info":{}}}}`, []Kind{KindOther}},
		{`{"id":7,"rpc":{"data":{"ts":1,"seq":2}}}`, []Kind{KindReply}},
		{`{"id":7,"error":{"code":108,"message":"not available"}}`, []Kind{KindError}},
		// Several messages in one frame, newline separated, as Centrifugo batches them.
		{"{}\n{\"push\":{\"channel\":\"user:u1\",\"pub\":{\"data\":{\"ts\":1,\"seq\":2}}}}\n{\"id\":9,\"rpc\":{\"data\":{}}}\n", []Kind{KindPing, KindData, KindReply}},
	}
	for _, c := range cases {
		got := kinds(f, c.frame)
		if len(got) != len(c.want) {
			t.Errorf("%q: kinds %v, want %v", c.frame, got, c.want)
			continue
		}
		for i := range got {
			if got[i] != c.want[i] {
				t.Errorf("%q: kinds %v, want %v", c.frame, got, c.want)
			}
		}
	}
	if string(f.Pong()) != `{}` {
		t.Fatal("the pong of Centrifugo's protocol is an empty object")
	}
}

func TestTokens(t *testing.T) {
	for _, f := range []Framer{Wsgate{}, Centrifugo{}} {
		tok, err := f.Token("s3cret", "u7", time.Now().Add(time.Hour))
		if err != nil {
			t.Fatal(err)
		}
		claims := jwt.MapClaims{}
		if _, err := jwt.ParseWithClaims(tok, claims, func(*jwt.Token) (any, error) { return []byte("s3cret"), nil },
			jwt.WithValidMethods([]string{"HS256"})); err != nil {
			t.Fatalf("%s token: %v", f.Name(), err)
		}
		if claims["sub"] != "u7" {
			t.Fatalf("%s token sub = %v", f.Name(), claims["sub"])
		}
		if f.Name() == "centrifugo" {
			ch, _ := claims["channels"].([]any)
			if len(ch) != 2 || ch[0] != CentrifugoAllChannel || ch[1] != CentrifugoUserChannel+"u7" {
				t.Fatalf("centrifugo token channels = %v", claims["channels"])
			}
		}
	}
	if _, err := ForGateway("nope"); err == nil {
		t.Fatal("want an error for an unknown gateway")
	}
}

func TestCentrifugoBatchBody(t *testing.T) {
	p := AppendPayload(nil, 1, 2, 0)
	one := AppendCentrifugoBatch(nil, []Out{{Payload: p}}, true)
	if one[0] != pathPublish || string(one[1:]) != `{"channel":"bench:all","data":`+string(p)+`}` {
		t.Fatalf("publish body %s", one)
	}
	many := AppendCentrifugoBatch(nil, []Out{{User: "u1", Payload: p}, {User: "u2", Payload: p}}, false)
	var b struct {
		Parallel bool `json:"parallel"`
		Commands []struct {
			Publish struct {
				Channel string          `json:"channel"`
				Data    json.RawMessage `json:"data"`
			} `json:"publish"`
		} `json:"commands"`
	}
	if many[0] != pathBatch || json.Unmarshal(many[1:], &b) != nil || len(b.Commands) != 2 ||
		b.Commands[1].Publish.Channel != "user:u2" || string(b.Commands[0].Publish.Data) != string(p) || b.Parallel {
		t.Fatalf("batch body %s", many)
	}
	par := AppendCentrifugoBatch(nil, []Out{{User: "u1", Payload: p}, {User: "u2", Payload: p}}, true)
	if par[0] != pathBatch || json.Unmarshal(par[1:], &b) != nil || len(b.Commands) != 2 || !b.Parallel {
		t.Fatalf("parallel batch body %s", par)
	}
}

// centrifugoAPI is a fake server API: it counts the channels published per
// path and the requests in flight at most, refusing the channel user:bad.
type centrifugoAPI struct {
	mu       sync.Mutex
	got      map[string]int
	inflight int
	most     int
	hold     chan struct{} // when set, a request waits for it to close
}

func (f *centrifugoAPI) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	body, _ := io.ReadAll(r.Body)
	if r.Header.Get("X-API-Key") != "k" {
		http.Error(w, "unauthorized", http.StatusUnauthorized)
		return
	}
	f.mu.Lock()
	f.got[r.URL.Path] += strings.Count(string(body), `"channel"`)
	f.inflight++
	f.most = max(f.most, f.inflight)
	f.mu.Unlock()
	if f.hold != nil {
		<-f.hold
	}
	f.mu.Lock()
	f.inflight--
	f.mu.Unlock()
	if strings.Contains(string(body), "user:bad") {
		_, _ = io.WriteString(w, `{"error":{"code":102,"message":"unknown channel"}}`)
		return
	}
	_, _ = io.WriteString(w, `{"result":{}}`)
}

func TestCentrifugoPublisher(t *testing.T) {
	api := &centrifugoAPI{got: map[string]int{}}
	srv := httptest.NewServer(api)
	defer srv.Close()
	p, err := NewCentrifugoPublisher(srv.URL, "k", CentrifugoOptions{})
	if err != nil {
		t.Fatal(err)
	}
	pl := AppendPayload(nil, 1, 1, 0)
	_ = p.Publish([]Out{{Payload: pl}})
	_ = p.Publish([]Out{{User: "a", Payload: pl}, {User: "b", Payload: pl}, {User: "c", Payload: pl}})
	_ = p.Publish([]Out{{User: "bad", Payload: pl}})
	if err := p.Close(context.Background()); err == nil {
		t.Fatal("Close must report the refused publish")
	}
	if api.got["/api/publish"] != 2 || api.got["/api/batch"] != 3 || p.Errors() != 1 {
		t.Fatalf("requests %v, errors %d", api.got, p.Errors())
	}
}

// TestCentrifugoPublisher_SingleKeepsInflightRequests: in single mode every
// message is a request of its own, and exactly as many as asked are in
// flight at once when the API is slow.
func TestCentrifugoPublisher_SingleKeepsInflightRequests(t *testing.T) {
	const inflight = 8
	api := &centrifugoAPI{got: map[string]int{}, hold: make(chan struct{})}
	srv := httptest.NewServer(api)
	defer srv.Close()
	p, err := NewCentrifugoPublisher(srv.URL, "k", CentrifugoOptions{Mode: PublishSingle, Inflight: inflight})
	if err != nil {
		t.Fatal(err)
	}
	pl := AppendPayload(nil, 1, 1, 0)
	batch := make([]Out, 3*inflight)
	for i := range batch {
		batch[i] = Out{User: strconv.Itoa(i), Payload: pl}
	}
	published := make(chan struct{})
	go func() { _ = p.Publish(batch); close(published) }()
	deadline := time.Now().Add(20 * time.Second)
	for {
		api.mu.Lock()
		n := api.inflight
		api.mu.Unlock()
		if n == inflight {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("%d requests in flight, want %d", n, inflight)
		}
		time.Sleep(5 * time.Millisecond)
	}
	close(api.hold)
	<-published
	if err := p.Close(context.Background()); err != nil {
		t.Fatal(err)
	}
	if api.got["/api/publish"] != len(batch) || api.got["/api/batch"] != 0 || api.most != inflight {
		t.Fatalf("requests %v, most in flight %d (want %d)", api.got, api.most, inflight)
	}
	if _, err := NewCentrifugoPublisher(srv.URL, "k", CentrifugoOptions{Mode: "grpc"}); err == nil {
		t.Fatal("want an error for an unknown mode")
	}
}

func TestNATSPublisher(t *testing.T) {
	ns, err := natsserver.NewServer(&natsserver.Options{Host: "127.0.0.1", Port: -1, NoLog: true, NoSigs: true})
	if err != nil {
		t.Fatal(err)
	}
	go ns.Start()
	if !ns.ReadyForConnections(10 * time.Second) {
		t.Fatal("nats not ready")
	}
	defer func() { ns.Shutdown(); ns.WaitForShutdown() }()
	nc, err := nats.Connect(ns.ClientURL())
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	sub, err := nc.SubscribeSync("ws.send.>")
	if err != nil {
		t.Fatal(err)
	}
	if err := nc.Flush(); err != nil {
		t.Fatal(err)
	}
	p, err := NewNATSPublisher(ns.ClientURL(), "ws")
	if err != nil {
		t.Fatal(err)
	}
	pl := AppendPayload(nil, 3, 4, 0)
	if err := p.Publish([]Out{{Payload: pl}, {User: "u9", Payload: pl}}); err != nil {
		t.Fatal(err)
	}
	if err := p.Close(context.Background()); err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{"ws.send.all", "ws.send.user.u9"} {
		m, err := sub.NextMsg(5 * time.Second)
		if err != nil {
			t.Fatal(err)
		}
		var out struct {
			Action  string          `json:"action"`
			Details json.RawMessage `json:"details"`
		}
		if m.Subject != want || json.Unmarshal(m.Data, &out) != nil || out.Action != WsgateAction || string(out.Details) != string(pl) {
			t.Fatalf("got %s %s, want %s with the payload", m.Subject, m.Data, want)
		}
	}
}

func TestRPCEcho(t *testing.T) {
	srv := httptest.NewServer(RPCEcho())
	defer srv.Close()
	resp, err := http.Post(srv.URL+"/rpc", "application/json",
		strings.NewReader(`{"client":"c","user":"u1","method":"echo","data":{"ts":1,"seq":2}}`))
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if string(body) != `{"result":{"data":{"ts":1,"seq":2}}}` {
		t.Fatalf("rpc echo answered %s", body)
	}
	resp, err = http.Post(srv.URL+"/rpc", "application/json", strings.NewReader(`nope`))
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusBadRequest {
		t.Fatalf("bad body: HTTP %d, want 400", resp.StatusCode)
	}
}

// TestAppendTextPayload: the text payload is valid JSON of the size asked
// (at least MinPayload), its ts and seq found by ParsePayload, and two
// sequence numbers give two different texts.
func TestAppendTextPayload(t *testing.T) {
	for _, size := range []int{0, MinPayload, 64, 128, 1024, 2048, 4096} {
		p := AppendTextPayload(nil, 1733580000000000000, 7, size)
		var v map[string]any
		if err := json.Unmarshal(p, &v); err != nil {
			t.Fatalf("size %d: %v: %s", size, err, p)
		}
		if size >= 128 && len(p) != size {
			t.Errorf("size %d: got %d bytes: %s", size, len(p), p)
		}
		if ts, seq, ok := ParsePayload(p); !ok || ts != 1733580000000000000 || seq != 7 {
			t.Errorf("size %d: ParsePayload %d %d %v", size, ts, seq, ok)
		}
	}
	for size := 100; size <= 2200; size += 7 { // every way the text's end can fall
		for seq := range uint64(40) {
			if p := AppendTextPayload(nil, 1733580000000000000, seq, size); len(p) != size || !json.Valid(p) {
				t.Fatalf("size %d seq %d: %d bytes, valid %v: %s", size, seq, len(p), json.Valid(p), p)
			}
		}
	}
	if a, b := AppendTextPayload(nil, 1, 1, 2048), AppendTextPayload(nil, 1, 2, 2048); bytes.Equal(a[20:], b[20:]) {
		t.Error("seq 1 and 2 gave the same text")
	}
}
