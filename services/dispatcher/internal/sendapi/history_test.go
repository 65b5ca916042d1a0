package sendapi_test

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/wsgate/wsgate/services/dispatcher"
	"github.com/wsgate/wsgate/services/dispatcher/internal/natstest"
	"github.com/wsgate/wsgate/services/dispatcher/internal/sendapi"
)

// historyAPI is the API with a history Sender on a NATS server with
// JetStream and the history stream.
func historyAPI(t *testing.T) (string, jetstream.JetStream) {
	t.Helper()
	nc, js := natstest.HistoryServer(t)
	api, err := sendapi.New(sendapi.Config{
		Keys: []string{key}, Sender: dispatcher.NewSender(nc, "", dispatcher.SenderWithHistory()), Connected: nc.IsConnected,
	})
	if err != nil {
		t.Fatal(err)
	}
	mux := http.NewServeMux()
	api.Register(mux)
	ts := httptest.NewServer(mux)
	t.Cleanup(ts.Close)
	return ts.URL, js
}

// postAny posts body with the key and returns the status and decoded body.
func postAny(t *testing.T, url, body string) (int, map[string]any) {
	t.Helper()
	req, _ := http.NewRequest(http.MethodPost, url, strings.NewReader(body))
	req.Header.Set("Authorization", "Bearer "+key)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	data, _ := io.ReadAll(resp.Body)
	var v map[string]any
	if err := json.Unmarshal(data, &v); err != nil {
		t.Fatalf("body %s: %v", data, err)
	}
	return resp.StatusCode, v
}

func TestSendWithHistory_AnswersTheSeq(t *testing.T) {
	url, js := historyAPI(t)
	var last float64
	for _, body := range []string{
		`{"target":"user","id":"42","action":"hello"}`,
		`{"target":"group","id":"g","action":"hello"}`,
		`{"target":"all","action":"hello"}`,
		`{"target":"user","ids":["1","2"],"action":"hello"}`,
	} {
		code, v := postAny(t, url+sendapi.PathSend, body)
		seq, _ := v["seq"].(float64)
		if code != http.StatusAccepted || seq <= last {
			t.Fatalf("%s: %d %v (last seq %v)", body, code, v, last)
		}
		last = seq
	}
	// A connection's reply is not stored: no seq.
	if code, v := postAny(t, url+sendapi.PathSend, `{"target":"conn","id":"e.c","action":"hello"}`); code != http.StatusAccepted || v["seq"] != nil {
		t.Fatalf("conn: %d %v", code, v)
	}
	// Without the stream nothing is stored: 503.
	if err := js.DeleteStream(context.Background(), "WS_HISTORY"); err != nil {
		t.Fatal(err)
	}
	if code, v := postAny(t, url+sendapi.PathSend, `{"target":"user","id":"42","action":"hello"}`); code != http.StatusServiceUnavailable {
		t.Fatalf("without the stream: %d %v", code, v)
	}
}

// TestSendWithHistory_ManyIDsFailingMidwaySayWhichWereSent: a send to
// several ids that the stream stops storing midway (here: full, discarding
// new messages) answers 503 with how many of the ids were sent, so that a
// caller retries only the others instead of sending the first ones twice.
func TestSendWithHistory_ManyIDsFailingMidwaySayWhichWereSent(t *testing.T) {
	url, js := historyAPI(t)
	ctx := context.Background()
	st, err := js.Stream(ctx, "WS_HISTORY")
	if err != nil {
		t.Fatal(err)
	}
	cfg := st.CachedInfo().Config
	cfg.MaxMsgs, cfg.Discard = int64(st.CachedInfo().State.Msgs)+2, jetstream.DiscardNew
	if _, err := js.UpdateStream(ctx, cfg); err != nil {
		t.Fatal(err)
	}
	code, v := postAny(t, url+sendapi.PathSend, `{"target":"user","ids":["1","2","2","3","4"],"action":"hello"}`)
	msg, _ := v["error"].(string)
	if code != http.StatusServiceUnavailable || !strings.Contains(msg, "the first 2 of its 4 ids, in the request's order, were sent") {
		t.Fatalf("%d %v, want 503 naming the 2 of 4 ids sent", code, v)
	}
	if code, v := postAny(t, url+sendapi.PathSend, `{"target":"user","ids":["5"],"action":"hello"}`); code != http.StatusServiceUnavailable || strings.Contains(fmt.Sprint(v), "were sent") {
		t.Fatalf("a send that failed at its first id: %d %v, want 503 without a count", code, v)
	}
}
