package api_test

import (
	"bytes"
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"reflect"
	"regexp"
	"slices"
	"strings"
	"testing"

	"github.com/wsgate/wsgate/api"
	"github.com/wsgate/wsgate/api/schemacheck"
	"github.com/wsgate/wsgate/api/wire"
)

// asyncAPIParser is the official parser's npm package, at the version the
// test was written against.
const asyncAPIParser = "@asyncapi/parser@3.6.3"

// TestAsyncAPI_ValidAndCoversEverySubject parses api/asyncapi.yaml with the
// official AsyncAPI parser (installed from npm into the user cache when
// missing), validates each message's examples against api/schemas, and
// checks that every subject the code builds (every method of wire.Subjects)
// is a channel of the document, so that a new subject cannot ship without
// its contract.
func TestAsyncAPI_ValidAndCoversEverySubject(t *testing.T) {
	modules := parserModules(t)
	cmd := exec.Command("node", filepath.Join("testdata", "asyncapi-check.mjs"), modules, "asyncapi.yaml")
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("the AsyncAPI parser refuses asyncapi.yaml: %v\n%s", err, stderr.String())
	}
	var doc struct {
		Channels []string `json:"channels"`
		Messages []struct {
			Name     string            `json:"name"`
			Schema   string            `json:"schema"`
			Examples []json.RawMessage `json:"examples"`
		} `json:"messages"`
	}
	if err := json.Unmarshal(out, &doc); err != nil {
		t.Fatalf("parser output: %v\n%s", err, out)
	}

	ck, err := schemacheck.New()
	if err != nil {
		t.Fatal(err)
	}
	for _, m := range doc.Messages {
		name, ok := strings.CutPrefix(m.Schema, api.SchemaBaseURI)
		if !ok {
			if m.Schema != "" {
				t.Errorf("message %s: payload %q is not one of api/schemas", m.Name, m.Schema)
			}
			continue
		}
		for i, ex := range m.Examples {
			if err := ck.Check(name, ex); err != nil {
				t.Errorf("message %s, example %d: %v", m.Name, i, err)
			}
		}
	}

	var channels []*regexp.Regexp
	for _, address := range doc.Channels {
		if address == "" {
			continue // a reply channel (address null): the requester's own reply subject
		}
		if strings.HasPrefix(address, "{") {
			continue // a configured subject (the callout's): it matches anything
		}
		// A parameter stands for one or more tokens (a connection is
		// <edge>.<conn>).
		pattern := regexp.QuoteMeta(address)
		pattern = regexp.MustCompile(`\\\{[A-Za-z]+\\\}`).ReplaceAllString(pattern, `[^.]+(\.[^.]+)*`)
		channels = append(channels, regexp.MustCompile("^"+pattern+"$"))
	}
	for _, variants := range codeSubjects(t) {
		found := false
		for _, subject := range variants {
			found = found || covered(subject, doc.Channels, channels)
		}
		if !found {
			t.Errorf("the code uses subject %s, which no channel of asyncapi.yaml describes", variants[0])
		}
	}
}

// codeSubjects calls every method of wire.Subjects with each combination of
// placeholders for its arguments (an id of two tokens, as a connection id
// has, or a target kind) and returns, per method, its subjects. Kinds and
// ids are not told apart by their Go type, so a method is covered when one
// combination is.
func codeSubjects(t *testing.T) [][]string {
	t.Helper()
	s := reflect.ValueOf(wire.NewSubjects("ws"))
	var out [][]string
	for i := range s.NumMethod() {
		m := s.Type().Method(i)
		fn := s.Method(i)
		if fn.Type().NumOut() != 1 || fn.Type().Out(0).Kind() != reflect.String {
			continue
		}
		for j := range fn.Type().NumIn() {
			if fn.Type().In(j).Kind() != reflect.String {
				t.Fatalf("wire.Subjects.%s takes a %s: teach this test about it", m.Name, fn.Type().In(j))
			}
		}
		out = append(out, subjectsOf(fn, nil))
	}
	if len(out) < 10 {
		t.Fatalf("only %d subjects found on wire.Subjects", len(out))
	}
	return out
}

// covered reports whether a channel describes subject: a channel pattern
// matches it or, for a wildcard subscription (* or >), it matches at least
// one channel's address.
func covered(subject string, addresses []string, channels []*regexp.Regexp) bool {
	if !strings.ContainsAny(subject, "*>") {
		for _, c := range channels {
			if c.MatchString(subject) {
				return true
			}
		}
		return false
	}
	pattern := regexp.QuoteMeta(subject)
	pattern = strings.NewReplacer(`\*`, `[^.]+`, ">", ".+").Replace(pattern)
	wild := regexp.MustCompile("^" + pattern + "$")
	param := regexp.MustCompile(`\{[A-Za-z]+\}`)
	for _, a := range addresses {
		if !strings.HasPrefix(a, "{") && wild.MatchString(param.ReplaceAllString(a, "x")) {
			return true
		}
	}
	return false
}

// placeholders are the values tried for each argument of a wire.Subjects method.
var placeholders = []string{"x.x", wire.KindUser, wire.KindSession, wire.KindConn}

// subjectsOf returns fn's subjects for every combination of placeholders
// after the arguments already chosen.
func subjectsOf(fn reflect.Value, chosen []reflect.Value) []string {
	if len(chosen) == fn.Type().NumIn() {
		return []string{fn.Call(chosen)[0].String()}
	}
	var out []string
	for _, p := range placeholders {
		out = append(out, subjectsOf(fn, append(slices.Clone(chosen), reflect.ValueOf(p)))...)
	}
	return out
}

// parserModules returns a node_modules directory holding the AsyncAPI
// parser, installing it with npm into the user cache when it is missing.
func parserModules(t *testing.T) string {
	t.Helper()
	if _, err := exec.LookPath("node"); err != nil {
		t.Skip("node is not installed: apt-get install -y nodejs npm (make test installs it when it can)")
	}
	cache, err := os.UserCacheDir()
	if err != nil {
		cache = os.TempDir()
	}
	dir := filepath.Join(cache, "wsgate", "asyncapi-parser-"+strings.TrimPrefix(asyncAPIParser, "@asyncapi/parser@"))
	modules := filepath.Join(dir, "node_modules")
	if _, err := os.Stat(filepath.Join(modules, "@asyncapi", "parser", "package.json")); err == nil {
		return modules
	}
	if _, err := exec.LookPath("npm"); err != nil {
		t.Skip("npm is not installed: apt-get install -y npm (make test installs it when it can)")
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command("npm", "install", "--prefix", dir, "--no-audit", "--no-fund", "--silent", asyncAPIParser)
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("npm install %s: %v\n%s", asyncAPIParser, err, out)
	}
	return modules
}
