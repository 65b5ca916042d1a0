package jsclient_test

import (
	"fmt"
	"net/http"
	"net/http/httptest"

	jsclient "github.com/wsgate/wsgate/clients/js"
)

// An edge serves the client next to its WebSocket endpoint, with the
// WebSocket path it listens on.
func ExampleHandler() {
	mux := http.NewServeMux()
	client := jsclient.Handler("/ws")
	mux.Handle("GET /client.js", client)
	mux.Handle("GET /client.mjs", client)

	rec := httptest.NewRecorder()
	mux.ServeHTTP(rec, httptest.NewRequest(http.MethodGet, "/client.js", nil))
	fmt.Println(rec.Code, rec.Header().Get("Content-Type"))
	// Output: 200 application/javascript; charset=utf-8
}
