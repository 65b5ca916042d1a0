package devstack

import (
	"crypto/hmac"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"

	"github.com/wsgate/wsgate/api/wire"
)

// The README's HTTP routes on one machine: when DISPATCHER_ROUTES_SECRET is
// set and DISPATCHER_ROUTES_FILE is not, the dev stack routes DevRouteAction
// to a backend of its own on the edge's port, as an application's backend
// would be, and writes the routes file for it.
const (
	// DevRouteAction is the action the dev stack's route handles.
	DevRouteAction = "dev/route"
	// devRoutePath is where the edge serves the dev route's backend.
	devRoutePath = "/dev/route-backend"
	// devRouteMaxBody bounds an envelope the dev backend reads.
	devRouteMaxBody = 1 << 20
)

// writeDevRoutes writes, in dir, the routes file of the dev route to the
// backend on edgeURL, and returns its path.
func writeDevRoutes(dir, edgeURL string) (string, error) {
	file := map[string]any{"routes": []map[string]any{{"action": DevRouteAction, "url": edgeURL + devRoutePath}}}
	data, err := json.Marshal(file)
	if err != nil {
		return "", err
	}
	path := filepath.Join(dir, "routes.json")
	if err := os.WriteFile(path, data, 0o600); err != nil {
		return "", fmt.Errorf("dev routes file: %w", err)
	}
	return path, nil
}

// devRouteBackend is what an application's route backend does: check the
// X-Wsgate-Signature (HMAC-SHA256 of the body with the routes secret), then
// answer the client with a reply naming what it received.
func devRouteBackend(secret []byte) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, err := io.ReadAll(http.MaxBytesReader(w, r.Body, devRouteMaxBody))
		if err != nil {
			http.Error(w, `{"error":"body too large"}`, http.StatusRequestEntityTooLarge)
			return
		}
		mac := hmac.New(sha256.New, secret)
		mac.Write(body)
		want := "sha256=" + hex.EncodeToString(mac.Sum(nil))
		if !hmac.Equal([]byte(r.Header.Get("X-Wsgate-Signature")), []byte(want)) {
			http.Error(w, `{"error":"bad signature"}`, http.StatusUnauthorized)
			return
		}
		var env wire.Envelope
		if err := json.Unmarshal(body, &env); err != nil {
			http.Error(w, `{"error":"not an envelope"}`, http.StatusBadRequest)
			return
		}
		w.Header().Set("Content-Type", "application/json")
		_ = json.NewEncoder(w).Encode(map[string]any{
			"action": env.Action,
			"details": map[string]any{
				"backend": "wsgate-dev " + devRoutePath, "user": env.User, "received": env.Details,
			},
		})
	})
}
