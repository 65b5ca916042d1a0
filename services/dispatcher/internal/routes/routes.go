// Package routes is the dispatcher's HTTP route handlers (DESIGN.md §5): a
// routes file (DISPATCHER_ROUTES_FILE) maps actions, or every action under a
// prefix, to backend URLs, and a Forwarder POSTs each inbound envelope there,
// signed, and turns the backend's answer into a reply, sends, or an error
// reply. It is how an application that does not speak NATS (the seed's PHP
// "WebSockets/message" listeners) handles actions.
package routes

import (
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"time"

	"sigs.k8s.io/yaml"

	"github.com/wsgate/wsgate/api/wire"
	"github.com/wsgate/wsgate/services/dispatcher/internal/sendapi"
)

// Defaults and bounds of a route.
const (
	// DefaultTimeout bounds one request to the backend when the route sets
	// no timeout.
	DefaultTimeout = 5 * time.Second
	// MaxTimeout bounds a route's timeout; the dispatcher's shutdown waits
	// for in-flight handlers only so long (service.DrainTimeout).
	MaxTimeout = 60 * time.Second
	// MaxRetries bounds a route's retries.
	MaxRetries = 5
)

// PathRoutes is where the route table is served as JSON.
const PathRoutes = "/v1/routes"

// Route sends the actions it matches to a backend URL.
type Route struct {
	// Action is the one action the route handles; empty for a prefix route.
	Action string
	// Prefix makes the route handle every action that starts with it and
	// has no handler or route of its own; empty for an action route.
	Prefix string
	// URL is where envelopes are POSTed: absolute, http or https.
	URL string
	// Timeout bounds each request to the backend, answer included.
	Timeout time.Duration
	// Retries is how many times a failed request is tried again (network
	// error, timeout or 5xx); only for idempotent routes.
	Retries int
	// Idempotent says the backend can take the same envelope twice.
	Idempotent bool
}

// Name is the route as logs and metrics name it: the action, or the prefix
// followed by "*".
func (r Route) Name() string {
	if r.Prefix != "" {
		return r.Prefix + "*"
	}
	return r.Action
}

// Table is the validated content of a routes file; it does not change.
type Table struct {
	file   string
	routes []Route
}

// FitsAckWait refuses a route whose timeout is not shorter than ackWait,
// the inbound stream's DISPATCHER_ACK_WAIT: a reliable action would be
// delivered again, to any replica, while its backend still worked on the
// first request, and a route that is not idempotent would be sent twice.
func (t *Table) FitsAckWait(ackWait time.Duration) error {
	for _, r := range t.Routes() {
		if r.Timeout >= ackWait {
			return fmt.Errorf("route %s: timeout %s is not shorter than DISPATCHER_ACK_WAIT (%s): a reliable action would be delivered again while its backend still worked on it; lower the timeout or raise DISPATCHER_ACK_WAIT",
				r.Name(), r.Timeout, ackWait)
		}
	}
	return nil
}

// Routes returns the routes, in file order.
func (t *Table) Routes() []Route {
	if t == nil {
		return nil
	}
	return append([]Route(nil), t.routes...)
}

// Covers reports whether a route handles action: its own, or a prefix of it.
// The service does not register a built-in handler a route covers, so an
// application can take over "hello" or "chat/" with its own backend.
func (t *Table) Covers(action string) bool {
	if t == nil {
		return false
	}
	for _, r := range t.routes {
		if r.Action == action || (r.Prefix != "" && strings.HasPrefix(action, r.Prefix)) {
			return true
		}
	}
	return false
}

// Load reads and validates a routes file: YAML (.yaml, .yml) or JSON
// (.json). Its error is one line naming the file and, for a bad route, its
// index and field: `routes.yaml: routes[1].url: want an http:// or https://
// URL`.
func Load(path string) (*Table, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("read routes: %w", err)
	}
	switch ext := strings.ToLower(filepath.Ext(path)); ext {
	case ".yaml", ".yml":
		if data, err = yaml.YAMLToJSON(data); err != nil {
			return nil, fmt.Errorf("%s: not valid YAML: %s", path, oneLine(err.Error()))
		}
	case ".json":
	default:
		return nil, fmt.Errorf("%s: want a .yaml, .yml or .json file, not %q", path, ext)
	}
	t, err := Parse(data)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	t.file = path
	return t, nil
}

// fileRoute is one route as the file writes it.
type fileRoute struct {
	Action     string `json:"action"`
	Prefix     string `json:"prefix"`
	URL        string `json:"url"`
	Timeout    string `json:"timeout"`
	Retries    int    `json:"retries"`
	Idempotent bool   `json:"idempotent"`
}

// Parse validates the JSON of a routes file:
//
//	{"routes": [{"action": "hello", "url": "http://app/ws/hello"},
//	            {"prefix": "shop/", "url": "http://shop/ws", "timeout": "2s", "retries": 2, "idempotent": true}]}
func Parse(data []byte) (*Table, error) {
	var f struct {
		Routes []json.RawMessage `json:"routes"`
	}
	if err := sendapi.Decode(data, &f, "routes file"); err != nil {
		return nil, err
	}
	if len(f.Routes) == 0 {
		return nil, errors.New(`no routes: want {"routes": [{"action": "...", "url": "..."}, ...]}`)
	}
	t := &Table{}
	actions, prefixes := map[string]int{}, map[string]int{}
	for i, raw := range f.Routes {
		var fr fileRoute
		if err := sendapi.Decode(raw, &fr, "route"); err != nil {
			return nil, fmt.Errorf("routes[%d]: %w", i, err)
		}
		r, err := fr.validate()
		if err != nil {
			return nil, fmt.Errorf("routes[%d].%w", i, err)
		}
		seen, key := actions, r.Action
		if r.Prefix != "" {
			seen, key = prefixes, r.Prefix
		}
		if j, dup := seen[key]; dup {
			field := "action"
			if r.Prefix != "" {
				field = "prefix"
			}
			return nil, fmt.Errorf("routes[%d].%s: %q is already routed by routes[%d]", i, field, key, j)
		}
		seen[key] = i
		t.routes = append(t.routes, r)
	}
	return t, nil
}

// validate checks one route; its error starts with the field at fault.
func (fr fileRoute) validate() (Route, error) {
	r := Route{Action: fr.Action, Prefix: fr.Prefix, URL: fr.URL, Retries: fr.Retries, Idempotent: fr.Idempotent}
	switch {
	case fr.Action == "" && fr.Prefix == "":
		return Route{}, errors.New(`action: set "action" (one action) or "prefix" (every action under it)`)
	case fr.Action != "" && fr.Prefix != "":
		return Route{}, errors.New(`prefix: set "action" or "prefix", not both`)
	case fr.Action != "":
		if err := wire.ValidateAction(fr.Action); err != nil {
			return Route{}, fmt.Errorf("action: %s", strings.TrimPrefix(err.Error(), "wire: "))
		}
	default:
		if err := wire.ValidateAction(fr.Prefix); err != nil {
			return Route{}, fmt.Errorf("prefix: %s", strings.TrimPrefix(err.Error(), "wire: "))
		}
	}
	if err := checkURL(fr.URL); err != nil {
		return Route{}, fmt.Errorf("url: %w", err)
	}
	r.Timeout = DefaultTimeout
	if fr.Timeout != "" {
		d, err := time.ParseDuration(fr.Timeout)
		switch {
		case err != nil:
			return Route{}, fmt.Errorf(`timeout: %q is not a duration such as "5s" or "500ms"`, fr.Timeout)
		case d <= 0:
			return Route{}, fmt.Errorf("timeout: must be positive, got %s", fr.Timeout)
		case d > MaxTimeout:
			return Route{}, fmt.Errorf("timeout: at most %s, got %s", MaxTimeout, fr.Timeout)
		}
		r.Timeout = d
	}
	switch {
	case fr.Retries < 0:
		return Route{}, fmt.Errorf("retries: must be 0 or more, got %d", fr.Retries)
	case fr.Retries > MaxRetries:
		return Route{}, fmt.Errorf("retries: at most %d, got %d", MaxRetries, fr.Retries)
	case fr.Retries > 0 && !fr.Idempotent:
		return Route{}, errors.New(`retries: need "idempotent": true; a request that is not idempotent is never sent twice`)
	}
	return r, nil
}

// checkURL accepts absolute http and https URLs without credentials: the
// signature authenticates the dispatcher, and a routes file is no place for
// secrets (it is not one: DISPATCHER_ROUTES_SECRET is).
func checkURL(raw string) error {
	if raw == "" {
		return errors.New("required")
	}
	u, err := url.Parse(raw)
	if err != nil {
		return errors.New("not a valid URL")
	}
	switch {
	case u.Scheme != "http" && u.Scheme != "https":
		return fmt.Errorf("want an http:// or https:// URL, not scheme %q", u.Scheme)
	case u.Host == "":
		return errors.New("has no host")
	case u.User != nil:
		return errors.New("must not hold credentials: the X-Wsgate-Signature header authenticates the dispatcher")
	}
	return nil
}

// oneLine joins a multi-line error message.
func oneLine(s string) string { return strings.Join(strings.Fields(s), " ") }

// routeView is a route as GET /v1/routes shows it.
type routeView struct {
	Action     string `json:"action,omitempty"`
	Prefix     string `json:"prefix,omitempty"`
	URL        string `json:"url"`
	Timeout    string `json:"timeout"`
	Retries    int    `json:"retries"`
	Idempotent bool   `json:"idempotent"`
}

// Handler serves GET /v1/routes: the route table as JSON, in file order,
// with the file it came from. A nil Table serves an empty table.
func (t *Table) Handler() http.Handler {
	views := []routeView{}
	file := ""
	if t != nil {
		file = t.file
		for _, r := range t.routes {
			views = append(views, routeView{r.Action, r.Prefix, r.URL, r.Timeout.String(), r.Retries, r.Idempotent})
		}
	}
	body := struct {
		File   string      `json:"file,omitempty"`
		Routes []routeView `json:"routes"`
	}{file, views}
	return sendapi.Only(http.MethodGet, http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		sendapi.WriteJSON(w, http.StatusOK, body)
	}))
}
