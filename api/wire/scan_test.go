package wire

import (
	"bytes"
	"encoding/json"
	"fmt"
	"reflect"
	"strings"
	"testing"
	"time"
	"unicode/utf8"
)

// The fast paths of the decoders must agree with encoding/json: whatever a
// fast path accepts, encoding/json accepts with the same result. Inputs a
// fast path gives up on go to encoding/json, so they need no check here.

var fastSeeds = []string{
	`["hello"]`, ` [ "hello" , {"a":[1,2.5e-3,true,false,null]} , "r1" ] `, `["a",null,-7]`, `["a",1,null]`,
	`["a",1,2,3]`, `["a",]`, `["a",1,]`, `["\u0061"]`, `["a.b"]`, `["a","\ud800"]`, `["a",01]`, `["a",-]`, `["a",1.]`,
	`["a",1e]`, `["a",0,-0.5E+10]`, `{"action":"x","details":[0,-0,1e5,1E-5,0.0]}`, `["a","x\ty"]`, `["a","` + strings.Repeat("é", 65) + `"]`, `["a",1,"` + strings.Repeat("é", 64) + `"]`,
	`["a",1,"` + strings.Repeat("é", 65) + `"]`, `["a",` + strings.Repeat("[", 70) + strings.Repeat("]", 70) + `]`,
	`{"action":"hello","details":"Hello"}`, `{"ACTION":"x","Details":{},"rEf":7}`, `{"action":"x","action":"y"}`,
	`{"action":"x","ref":null,"filter":null}`, `{"action":"x","filter":{"property":"p","value":"v"}}`,
	`{"action":"x","extra":[{"k":"\u00e9"}]}`, `{"action":"x:error","details":[500,"no"]}`, `{"action":null}`,
	`{"\u0061ction":"x"}`, `{"action":"x",}`, `{"action":"x"} x`, `{"action":"x","ref":1.5}`,
	`{"action":"hello","details":"hi","ref":3,"user":"42","session":"s","groups":["g","h"],"language":"en","connection":"e.c","edge":"e","ip":"::1","user_agent":"ua","ts":"2024-01-02T03:04:05.123456789+01:00"}`,
	`{"groups":[]}`, `{"groups":null,"user":null,"ts":null}`, `{"groups":[1]}`, `{"groups":["a",null]}`, `{"ts":"yesterday"}`,
	`{"user":"a\"b"}`, `{"user":7}`, `{"ts":"2024-01-02T03:04:05Z","ts":"2025-01-02T03:04:05Z"}`,
}

func FuzzScanValueAgreesWithJSONValid(f *testing.F) {
	for _, s := range fastSeeds {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		i := skipSpace(data, 0)
		end := scanValue(data, i, 0)
		ours := end >= 0 && skipSpace(data, end) == len(data)
		valid := json.Valid(data)
		// Only nesting deeper than maxScanDepth may make the scanner refuse
		// valid JSON, and that takes more brackets than a short input has.
		if ours && !valid || !ours && valid && len(data) <= maxScanDepth {
			t.Fatalf("scanValue says %v, json.Valid %v for %q", ours, valid, data)
		}
	})
}

func FuzzFastDecodersAgreeWithEncodingJSON(f *testing.F) {
	for _, s := range fastSeeds {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		if fr, ok := parseClientFrameFast(data); ok && utf8.Valid(data) {
			want, err := parseClientFrameJSON(data)
			if err != nil || !reflect.DeepEqual(fr, want) {
				t.Fatalf("frame %q: fast %+v, encoding/json %+v, %v", data, fr, want, err)
			}
		}
		if m, ok := decodeOutboundFast(data); ok && utf8.Valid(data) {
			want, err := decodeOutboundJSON(data)
			if err != nil || !reflect.DeepEqual(m, want) {
				t.Fatalf("outbound %q: fast %+v, encoding/json %+v, %v", data, m, want, err)
			}
		}
		if e, ok := decodeEnvelopeFast(data); ok {
			var want Envelope
			if err := json.Unmarshal(data, &want); err != nil || !reflect.DeepEqual(e, want) {
				t.Fatalf("envelope %q: fast %+v, encoding/json %+v, %v", data, e, want, err)
			}
		}
	})
}

// The encoders must give what json.Marshal gives, as JSON values.
func FuzzAppendersAgreeWithJSONMarshal(f *testing.F) {
	f.Add("hello", "42", "Mozilla/5.0 (X11)", []byte(`{"a":[1,"b"]}`), []byte(`"r1"`))
	f.Add("a:error", "", "\"quoted\" \\ \x00\x1f\x7f <&> \u2028\u2029 é \xff\xfe", []byte(`null`), []byte(nil))
	f.Add("x", "u@x", "\t\n\r", []byte(` [ 1 , 2 ] `), []byte(`12`))
	f.Add("0", "0", "0", []byte(`0`), []byte(strings.Repeat("7", 400)))
	f.Fuzz(func(t *testing.T, action, id, text string, details, ref []byte) {
		if len(details) > 0 && !json.Valid(details) || len(ref) > 0 && !json.Valid(ref) {
			return
		}
		env := Envelope{
			Action: action, Details: details, Ref: ref, User: id, Session: text, Groups: []string{id, text},
			Language: text, Connection: id, Edge: id, IP: text, UserAgent: text,
			TS: time.Date(2026, 11, 26, 5, 0, 0, 123456789, time.FixedZone("x", 3600)),
		}
		want := env
		if len(want.Details) == 0 {
			want.Details = null
		}
		sameValue(t, AppendEnvelope(nil, &env), &want)
		env.Groups = nil
		want.Groups = []string{} // the schema wants an array
		sameValue(t, AppendEnvelope(nil, &env), &want)

		out := Outbound{Action: action, Details: details, Ref: ref}
		sameValue(t, AppendOutbound(nil, &out), &out)
		out.Filter = &Filter{Property: id, Value: text}
		sameValue(t, AppendOutbound(nil, &out), &out)
	})
}

// sameValue checks that got is valid JSON with the value json.Marshal gives v.
func sameValue(t *testing.T, got []byte, v any) {
	t.Helper()
	want, err := json.Marshal(v)
	if err != nil {
		t.Fatal(err)
	}
	// Numbers are compared as written: a number too large for a float64 is
	// still JSON, and both sides copy the same raw bytes.
	g, err := DecodeAsWritten(got)
	if err != nil {
		t.Fatalf("%q is not JSON: %v", got, err)
	}
	w, err := DecodeAsWritten(want)
	if err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(g, w) {
		t.Fatalf("got %s\nwant %s", got, want)
	}
}

// DecodeAsWritten decodes a JSON value keeping its numbers as written
// (json.Number), so that no precision is lost on the way; empty is null.
// Exported for the package's external tests too.
func DecodeAsWritten(raw []byte) (any, error) {
	if len(raw) == 0 {
		raw = []byte("null")
	}
	d := json.NewDecoder(bytes.NewReader(raw))
	d.UseNumber()
	var v any
	if err := d.Decode(&v); err != nil {
		return nil, err
	}
	if d.More() {
		return nil, fmt.Errorf("data after the value")
	}
	return v, nil
}
