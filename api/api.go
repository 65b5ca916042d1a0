// Package api holds the JSON Schemas of every message wsgate exchanges
// (DESIGN.md §2–§5, §8–§9, and the HTTP API; see README.md). They are the
// source of truth; package wire holds the Go types and is tested against them.
package api

import "embed"

// Schemas is the schemas/ directory: one draft 2020-12 JSON Schema per message.
//
//go:embed schemas/*.json
var Schemas embed.FS

// SchemaBaseURI is the prefix of every schema's $id.
const SchemaBaseURI = "https://wsgate.dev/schemas/"
