// Package logging builds the services' slog logger from the shared
// configuration, adds the trace and span ids of a record's context to it,
// and logs a configuration with its secrets masked.
package logging

import (
	"fmt"
	"io"
	"log/slog"
	"reflect"
	"regexp"
	"strings"
)

// Settings is the logging part of every service's configuration.
type Settings struct {
	Level  string `envconfig:"LOG_LEVEL" default:"info" desc:"debug, info, warn or error"`
	Format string `envconfig:"LOG_FORMAT" default:"json" desc:"json or text"`
}

// New returns a logger writing to w as cfg says. A record logged with a
// context that carries a span (InfoContext, ErrorContext, ...) gets its
// trace_id and span_id (see WithTrace).
func New(cfg Settings, w io.Writer) (*slog.Logger, error) {
	var level slog.Level
	if err := level.UnmarshalText([]byte(cfg.Level)); err != nil {
		return nil, fmt.Errorf("LOG_LEVEL: %q is not debug, info, warn or error", cfg.Level)
	}
	opts := &slog.HandlerOptions{Level: level}
	switch strings.ToLower(cfg.Format) {
	case "json", "":
		return slog.New(WithTrace(slog.NewJSONHandler(w, opts))), nil
	case "text":
		return slog.New(WithTrace(slog.NewTextHandler(w, opts))), nil
	default:
		return nil, fmt.Errorf("LOG_FORMAT: %q is not json or text", cfg.Format)
	}
}

// RedactURL masks the user information (user and password, or token) of
// each comma-separated URL in s, as in NATS_URL
// "nats://[redacted]@nats-1:4222,nats://nats-2:4222". Text that is not a
// URL with user information is returned as is.
func RedactURL(s string) string {
	if !strings.Contains(s, "@") {
		return s
	}
	parts := strings.Split(s, ",")
	for i, p := range parts {
		scheme, rest, ok := strings.Cut(p, "://")
		// The last "@" rather than the first: an unescaped "@" in a
		// password must not leave the rest of it in the log.
		if at := strings.LastIndexByte(rest, '@'); ok && at >= 0 {
			parts[i] = scheme + "://[redacted]@" + rest[at+1:]
		}
	}
	return strings.Join(parts, ",")
}

// Attrs returns cfg's fields as log attributes named by their environment
// variable, walking embedded structs; fields tagged secret:"true" are
// masked, and so is the user information of URLs in string fields (see
// RedactURL).
func Attrs(cfg any) []any {
	var attrs []any
	walk(cfg, func(f reflect.StructField, v reflect.Value) {
		val := v.Interface()
		switch {
		case f.Tag.Get("secret") == "true" && !v.IsZero():
			val = "[redacted]"
		case v.Kind() == reflect.String:
			val = RedactURL(v.String())
		}
		attrs = append(attrs, slog.Any(f.Tag.Get("envconfig"), val))
	})
	return attrs
}

// EnvNames returns the environment variable names of cfg's fields.
func EnvNames(cfg any) []string {
	var names []string
	walk(cfg, func(f reflect.StructField, _ reflect.Value) { names = append(names, f.Tag.Get("envconfig")) })
	return names
}

// Undocumented returns the variables of cfg that envExample (the text of
// .env.example) does not list as "NAME=" or "# NAME=" at a line start.
func Undocumented(envExample []byte, cfg any) []string {
	var missing []string
	for _, name := range EnvNames(cfg) {
		if !regexp.MustCompile(`(?m)^#? ?` + name + `=`).Match(envExample) {
			missing = append(missing, name)
		}
	}
	return missing
}

// walk calls fn for every field of the struct cfg (or pointer to it) that has
// an envconfig tag, descending into embedded structs.
func walk(cfg any, fn func(reflect.StructField, reflect.Value)) {
	var visit func(v reflect.Value)
	visit = func(v reflect.Value) {
		t := v.Type()
		for i := 0; i < t.NumField(); i++ {
			f, fv := t.Field(i), v.Field(i)
			if f.Anonymous && fv.Kind() == reflect.Struct {
				visit(fv)
				continue
			}
			if f.Tag.Get("envconfig") != "" && f.IsExported() {
				fn(f, fv)
			}
		}
	}
	v := reflect.ValueOf(cfg)
	if v.Kind() == reflect.Pointer {
		v = v.Elem()
	}
	visit(v)
}
