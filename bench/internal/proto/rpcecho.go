package proto

import (
	"encoding/json"
	"io"
	"net/http"
)

// maxRPCBody bounds what the echo backend reads of one proxied RPC.
const maxRPCBody = 1 << 20

// RPCEcho is the application backend of Centrifugo's RPC proxy for the
// roundtrip scenario: it answers every RPC with its own data, the
// equivalent of wsgate's echo handler in the dispatcher.
func RPCEcho() http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, err := io.ReadAll(io.LimitReader(r.Body, maxRPCBody))
		if err != nil {
			http.Error(w, "read error", http.StatusBadRequest)
			return
		}
		var req struct {
			Data json.RawMessage `json:"data"`
		}
		if err := json.Unmarshal(body, &req); err != nil {
			http.Error(w, "bad request", http.StatusBadRequest)
			return
		}
		if len(req.Data) == 0 {
			req.Data = json.RawMessage("null")
		}
		w.Header().Set("Content-Type", "application/json")
		out := make([]byte, 0, len(req.Data)+32)
		out = append(out, `{"result":{"data":`...)
		out = append(out, req.Data...)
		out = append(out, `}}`...)
		_, _ = w.Write(out)
	})
}
