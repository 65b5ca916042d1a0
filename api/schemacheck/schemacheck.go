// Package schemacheck validates JSON documents against the wsgate schemas in
// api/schemas, so that tests anywhere can check what running code produces.
package schemacheck

import (
	"bytes"
	"fmt"
	"io/fs"
	"path"
	"strings"

	"github.com/santhosh-tekuri/jsonschema/v6"

	"github.com/wsgate/wsgate/api"
)

// Names of the schemas, as Check takes them.
const (
	ClientFrame     = "client-frame.json"
	ServerFrame     = "server-frame.json"
	Envelope        = "envelope.json"
	Outbound        = "outbound.json"
	CalloutRequest  = "callout-request.json"
	CalloutResponse = "callout-response.json"
	Membership      = "membership.json"
	ControlAnswer   = "control-answer.json"
	PresenceUser    = "presence-user.json"
	PresenceGroup   = "presence-group.json"
	PresenceError   = "presence-error.json"
	PresenceConn    = "presence-conn.json"
	Recovery        = "recovery.json"
	Since           = "since.json"

	PresenceGroupRequest = "presence-group-request.json"

	// The dispatcher's HTTP API (DESIGN.md §5, §9).
	HTTPSend       = "http-send.json"
	HTTPClose      = "http-close.json"
	HTTPMembership = "http-membership.json"
	HTTPAnswer     = "http-answer.json"
)

// Checker holds every compiled schema.
type Checker struct {
	schemas map[string]*jsonschema.Schema
}

// New compiles every schema of api.Schemas.
func New() (*Checker, error) {
	c := jsonschema.NewCompiler()
	c.DefaultDraft(jsonschema.Draft2020)
	c.AssertFormat()
	entries, err := fs.ReadDir(api.Schemas, "schemas")
	if err != nil {
		return nil, fmt.Errorf("schemacheck: %w", err)
	}
	var names []string
	for _, e := range entries {
		data, err := fs.ReadFile(api.Schemas, path.Join("schemas", e.Name()))
		if err != nil {
			return nil, fmt.Errorf("schemacheck: %w", err)
		}
		doc, err := jsonschema.UnmarshalJSON(bytes.NewReader(data))
		if err != nil {
			return nil, fmt.Errorf("schemacheck: %s: %w", e.Name(), err)
		}
		if err := c.AddResource(api.SchemaBaseURI+e.Name(), doc); err != nil {
			return nil, fmt.Errorf("schemacheck: %s: %w", e.Name(), err)
		}
		names = append(names, e.Name())
	}
	ck := &Checker{schemas: make(map[string]*jsonschema.Schema, len(names))}
	for _, n := range names {
		s, err := c.Compile(api.SchemaBaseURI + n)
		if err != nil {
			return nil, fmt.Errorf("schemacheck: compile %s: %w", n, err)
		}
		ck.schemas[n] = s
	}
	return ck, nil
}

// Check validates data against the named schema.
func (c *Checker) Check(name string, data []byte) error {
	s, ok := c.schemas[name]
	if !ok {
		return fmt.Errorf("schemacheck: no schema %q", name)
	}
	doc, err := jsonschema.UnmarshalJSON(bytes.NewReader(data))
	if err != nil {
		return fmt.Errorf("schemacheck: %s: not JSON: %w", name, err)
	}
	if err := s.Validate(doc); err != nil {
		return fmt.Errorf("schemacheck: %s: %s", name, strings.ReplaceAll(err.Error(), "\n", "; "))
	}
	return nil
}
