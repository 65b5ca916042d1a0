package wire_test

import (
	"bytes"
	"encoding/json"
	"errors"
	"reflect"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"
	"unicode"
	"unicode/utf8"

	"github.com/wsgate/wsgate/api/schemacheck"
	"github.com/wsgate/wsgate/api/wire"
)

// The fuzz targets below run their seeds (f.Add and testdata/fuzz/<name>/) as
// plain tests; `make fuzz` / `make fuzz-short` explore further.

// Reference character sets, written out from DESIGN.md §2 and §3 rather than
// taken from token.go, so that the fuzzer compares two independent versions.
const (
	refAlnum       = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789"
	refActionChars = refAlnum + "_-/:"
	refIDChars     = refAlnum + "_-@+=~:"
)

// refValid is the obviously correct token check: 1..max characters, each one
// of allowed. Invalid UTF-8 decodes to U+FFFD, which is never allowed.
func refValid(s, allowed string, max int) bool {
	n := 0
	for _, r := range s {
		if !strings.ContainsRune(allowed, r) {
			return false
		}
		n++
	}
	return n >= 1 && n <= max
}

func refValidOutboundAction(s string) bool {
	if strings.HasPrefix(s, "Client/") || strings.HasPrefix(s, "Server/") {
		return false // reserved: only the edge sends them
	}
	if refValid(s, refActionChars, wire.MaxActionLen) {
		return true
	}
	base, ok := strings.CutSuffix(s, wire.ErrorSuffix)
	return ok && refValid(base, refActionChars, wire.MaxActionLen)
}

// subjectSafe reports whether s can be one or more NATS subject tokens
// without changing the subject's shape: no separator, wildcard, white space
// or control character, and valid UTF-8.
func subjectSafe(s string) bool {
	return utf8.ValidString(s) && !strings.ContainsAny(s, ".*>") &&
		!strings.ContainsFunc(s, func(r rune) bool { return unicode.IsSpace(r) || unicode.IsControl(r) })
}

// sameJSON reports whether a and b are the same JSON value (nil is null).
// Numbers are compared by their text, so no precision is lost on the way.
func sameJSON(a, b json.RawMessage) bool {
	va, erra := wire.DecodeAsWritten(a)
	vb, errb := wire.DecodeAsWritten(b)
	return erra == nil && errb == nil && reflect.DeepEqual(va, vb)
}

// isRef reports whether raw is what an accepted ref may be: absent, or a JSON
// string or integer (a null ref is normalised to absent).
func isRef(raw json.RawMessage) bool {
	return raw == nil || (len(raw) > 0 && (raw[0] == '"' || raw[0] == '-' || (raw[0] >= '0' && raw[0] <= '9')))
}

var checker = sync.OnceValues(schemacheck.New)

func schemas(t *testing.T) *schemacheck.Checker {
	t.Helper()
	c, err := checker()
	if err != nil {
		t.Fatal(err)
	}
	return c
}

// checkServerFrame checks what AppendServerFrame produced: one UTF-8 JSON
// array [action, details] or [action, details, ref], matching the schema.
func checkServerFrame(t *testing.T, frame []byte, action string, details, ref json.RawMessage) {
	t.Helper()
	if !json.Valid(frame) || !utf8.Valid(frame) {
		t.Fatalf("server frame is not UTF-8 JSON: %q", frame)
	}
	var parts []json.RawMessage
	if err := json.Unmarshal(frame, &parts); err != nil {
		t.Fatalf("server frame %q is not an array: %v", frame, err)
	}
	var got string
	if len(parts) < 2 || len(parts) > 3 || json.Unmarshal(parts[0], &got) != nil || got != action {
		t.Fatalf("server frame %q: want action %q first of 2 or 3 elements", frame, action)
	}
	if !sameJSON(parts[1], details) {
		t.Fatalf("server frame %q: details changed from %q", frame, details)
	}
	if len(parts) == 3 && !sameJSON(parts[2], ref) || len(parts) == 2 && !sameJSON(ref, nil) {
		t.Fatalf("server frame %q: ref changed from %q", frame, ref)
	}
	// The server-frame schema wants [code, message] as the details of an
	// ":error" action: DecodeOutbound (and every publisher, through
	// ValidateOutboundDetails) holds an outbound message to that, so only a
	// frame built from details that check refuses is left unchecked here.
	if wire.ValidateOutboundDetails(action, details) == nil {
		if err := schemas(t).Check(schemacheck.ServerFrame, frame); err != nil {
			t.Fatalf("server frame %q: %v", frame, err)
		}
	}
}

var plainInteger = regexp.MustCompile(`^-?[0-9]+$`)

// refErrorDetails is the obviously correct check of an error response's
// details: a JSON array of a plain integer from 400 to 599 and a string.
func refErrorDetails(details json.RawMessage) bool {
	var parts []json.RawMessage
	if json.Unmarshal(details, &parts) != nil || len(parts) != 2 {
		return false
	}
	var code int
	var msg string
	return plainInteger.Match(bytes.TrimSpace(parts[0])) &&
		json.Unmarshal(parts[0], &code) == nil && code >= 400 && code <= 599 &&
		json.Unmarshal(parts[1], &msg) == nil
}

// FuzzParseClientFrame: ParseClientFrame never panics; what it accepts has a
// valid, subject-safe action, JSON details and a valid ref; the echo the edge
// would send back and the envelope it would publish are valid UTF-8 JSON that
// match the schemas and give the same frame when parsed again.
func FuzzParseClientFrame(f *testing.F) {
	for _, s := range []string{
		`["hello"]`, `["hello","Hello, world!"]`, `["a/b:c",{"x":[1,{"y":null}]},"r1"]`, `["a",null,-7]`,
		`["Client/authentication",{"token":"x.y.z"}]`, `["a",1,null]`, `["a",1,"` + strings.Repeat("é", 64) + `"]`,
		`["a",1,9223372036854775808]`, `["a",1,1.5]`, `["a",1,1e3]`, `["a.b"]`, `["a*"]`, `["a>"]`, `["a b"]`,
		`["\u00e9"]`, `["a\u0000"]`, `[]`, `["a",1,2,3]`, `["a",1,null,"m-1"]`, `["a",1,"r","a.b"]`, `{}`, `"x"`, ``, `null`, `[1]`, `["a","\ud800"]`,
		"[\"a\",\"\xff\"]", `["a",1e999999]`, `[` + `"` + strings.Repeat("x", 129) + `"]`,
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		fr, err := wire.ParseClientFrame(data)
		if err != nil {
			if !errors.Is(err, wire.ErrBadFrame) {
				t.Fatalf("error %v does not wrap ErrBadFrame", err)
			}
			return
		}
		if err := wire.ValidateAction(fr.Action); err != nil || !refValid(fr.Action, refActionChars, wire.MaxActionLen) || !subjectSafe(fr.Action) {
			t.Fatalf("accepted bad action %q (%v)", fr.Action, err)
		}
		if fr.Details == nil || !json.Valid(fr.Details) {
			t.Fatalf("accepted details %q", fr.Details)
		}
		if err := wire.ValidateRef(fr.Ref); err != nil || !isRef(fr.Ref) {
			t.Fatalf("accepted ref %q (%v)", fr.Ref, err)
		}
		if fr.ID != "" && (wire.ValidateMsgID(fr.ID) != nil || !subjectSafe(fr.ID) || strings.Contains(fr.ID, ":")) {
			t.Fatalf("accepted message id %q", fr.ID)
		}

		// The echo (a reply carries the frame's details and ref back).
		frame := wire.AppendServerFrame(nil, fr.Action, fr.Details, fr.Ref)
		checkServerFrame(t, frame, fr.Action, fr.Details, fr.Ref)
		again, err := wire.ParseClientFrame(frame)
		if err != nil || again.Action != fr.Action || !sameJSON(again.Details, fr.Details) || !sameJSON(again.Ref, fr.Ref) {
			t.Fatalf("re-encoded %q parses as %+v, %v; want %+v", frame, again, err, fr)
		}

		// The envelope the edge publishes for it.
		env, err := json.Marshal(wire.Envelope{
			Action: fr.Action, Details: fr.Details, Ref: fr.Ref, User: "42", Groups: []string{},
			Language: "en", Connection: "e1.c1", Edge: "e1", IP: "127.0.0.1", TS: time.Unix(0, 0).UTC(),
		})
		if err != nil {
			t.Fatal(err)
		}
		if err := schemas(t).Check(schemacheck.Envelope, env); err != nil || !utf8.Valid(env) {
			t.Fatalf("envelope %q: %v", env, err)
		}
	})
}

// FuzzDecodeOutbound: DecodeOutbound, and decoding the envelope and the auth
// callout messages (what arrives over NATS from any publisher), never panic.
// An accepted outbound message has a valid, subject-safe action and a valid
// ref, becomes a valid server frame, matches its schema when encoded, and
// decodes from its encoding to the same value; envelope and callout messages
// survive encode → decode unchanged.
func FuzzDecodeOutbound(f *testing.F) {
	for _, s := range []string{
		`{"action":"hello","details":"Hello from the CLI"}`,
		`{"action":"chat/msg","details":{"a":[1,2,{"b":null}]},"ref":"r-1","filter":{"property":"language","value":"de"}}`,
		`{"action":"x","ref":12}`, `{"action":"x","ref":null}`, `{"action":"x","ref":true}`, `{"action":"x","ref":1.5}`,
		`{"action":"x","filter":{"property":""}}`, `{"action":"x","filter":null}`, `{"action":"a.b"}`, `{"action":"a>"}`,
		`{"action":"*"}`, `{"action":""}`, `{}`, `[]`, `null`, ``, `{"ACTION":"x"}`, `{"action":"x","extra":1}`,
		`{"action":"x","action":"y.z"}`, `{"action":"` + strings.Repeat("a", 128) + `:error","details":[500,"x"]}`,
		`{"action":"` + strings.Repeat("a", 129) + `:error"}`, "{\"action\":\"x\",\"details\":\"\xff\"}",
		`{"action":"x:error","details":"str"}`, `{"action":"x:error"}`, `{"action":"x:error","details":[400,"m"]}`,
		`{"action":"x:error","details":[4e2,"m"]}`, `{"action":"x:error","details":[-400,"m"]}`, `{"action":"Server/close"}`,
		`{"action":"x","details":"<script>\u2028"}`, `{"action":"x","details":123456789012345678901234567890e-999}`,
		// Envelopes and callout messages.
		`{"action":"hello","details":"hi","ref":3,"user":"42","session":"","groups":["g"],"language":"en","connection":"e.c","edge":"e","ip":"::1","user_agent":"ua","ts":"2024-01-02T03:04:05.123456789+01:00"}`,
		`{"ts":"0000-01-01T00:00:00Z"}`, `{"ts":"9999-12-31T23:59:59-23:59"}`, `{"ts":null,"groups":null}`, `{"ts":"yesterday"}`,
		`{"edge":"e","remote_addr":"1.2.3.4:5","token":"t","cookies":{"sid":"x"},"headers":{"User-Agent":"\u00fc"}}`,
		`{"user":"42","groups":[],"expires":1700000000,"props":{},"error":null}`, `{"error":{"code":401,"message":"no"}}`,
		`{"expires":9223372036854775807}`, `{"expires":9223372036854775808}`, `{"cookies":{}}`,
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		checkOutbound(t, data)
		roundTrip(t, data, normEnvelope)
		roundTrip(t, data, func(r *wire.CalloutRequest) {
			if len(r.Cookies) == 0 {
				r.Cookies = nil
			}
			if len(r.Headers) == 0 {
				r.Headers = nil
			}
		})
		roundTrip(t, data, func(r *wire.CalloutResponse) {
			if len(r.Groups) == 0 {
				r.Groups = nil
			}
			if len(r.Props) == 0 {
				r.Props = nil
			}
		})
	})
}

func checkOutbound(t *testing.T, data []byte) {
	out, err := wire.DecodeOutbound(data)
	if err != nil {
		if !errors.Is(err, wire.ErrBadOutbound) {
			t.Fatalf("error %v does not wrap ErrBadOutbound", err)
		}
		return
	}
	if err := wire.ValidateOutboundAction(out.Action); err != nil || !refValidOutboundAction(out.Action) || !subjectSafe(out.Action) {
		t.Fatalf("accepted bad action %q (%v)", out.Action, err)
	}
	if err := wire.ValidateRef(out.Ref); err != nil || !isRef(out.Ref) {
		t.Fatalf("accepted ref %q (%v)", out.Ref, err)
	}
	if out.Filter != nil && out.Filter.Property == "" {
		t.Fatalf("accepted empty filter property")
	}
	if strings.HasSuffix(out.Action, wire.ErrorSuffix) && !refErrorDetails(out.Details) {
		t.Fatalf("accepted error response %q with details %q, not [code, message]", out.Action, out.Details)
	}
	if !utf8.Valid(data) {
		t.Fatalf("accepted invalid UTF-8 %q", data)
	}
	checkServerFrame(t, wire.AppendServerFrame(nil, out.Action, out.Details, out.Ref), out.Action, out.Details, out.Ref)

	enc, err := json.Marshal(out)
	if err != nil {
		t.Fatal(err)
	}
	if err := schemas(t).Check(schemacheck.Outbound, enc); err != nil {
		t.Fatalf("encoded %q: %v", enc, err)
	}
	again, err := wire.DecodeOutbound(enc)
	if err != nil || again.Action != out.Action || !sameJSON(again.Details, out.Details) ||
		!sameJSON(again.Ref, out.Ref) || (again.Ref == nil) != (out.Ref == nil) || !reflect.DeepEqual(again.Filter, out.Filter) {
		t.Fatalf("encoded %q decodes as %+v, %v; want %+v", enc, again, err, out)
	}
	if enc2, _ := json.Marshal(again); !bytes.Equal(enc, enc2) {
		t.Fatalf("encoding is not stable: %q then %q", enc, enc2)
	}
}

func normEnvelope(e *wire.Envelope) {
	// Only the instant of ts is kept; details, when absent, encode as null.
	e.TS = e.TS.UTC()
	if e.Details == nil {
		e.Details = json.RawMessage("null")
	}
	e.Details = compact(e.Details)
	e.Ref = compact(e.Ref)
}

func compact(raw json.RawMessage) json.RawMessage {
	if raw == nil {
		return nil
	}
	v, err := wire.DecodeAsWritten(raw)
	if err != nil {
		return raw
	}
	b, _ := json.Marshal(v)
	return b
}

// roundTrip decodes data as a T; when that works, encoding it must work and
// decode to the same value (after norm, which forgets what JSON cannot
// tell apart), and encoding must be stable.
func roundTrip[T any](t *testing.T, data []byte, norm func(*T)) {
	t.Helper()
	var v T
	if json.Unmarshal(data, &v) != nil {
		return
	}
	enc, err := json.Marshal(&v)
	if err != nil {
		t.Fatalf("decoded %T %+v does not encode: %v", v, v, err)
	}
	var w T
	if err := json.Unmarshal(enc, &w); err != nil {
		t.Fatalf("%T encoding %q does not decode: %v", v, enc, err)
	}
	enc2, _ := json.Marshal(&w)
	norm(&v)
	norm(&w)
	if !reflect.DeepEqual(v, w) || !bytes.Equal(enc, enc2) {
		t.Fatalf("%T round trip: %+v → %q → %+v → %q", v, v, enc, w, enc2)
	}
}

// FuzzSubjectTokens: ValidateAction, ValidateID and ValidateOutboundAction
// agree with the reference implementation; an accepted token adds exactly the
// expected subject tokens to every subject built with it, none a wildcard;
// AppendServerFrame of a valid action, details and ref is valid UTF-8 JSON.
func FuzzSubjectTokens(f *testing.F) {
	for _, s := range []string{
		"hello", "chat/send", "a:b", "Client/authentication", "x:error", "alice@example", "a+b=c~d:e_f-g",
		"", "a.b", "a*", ">", "*", "a b", "a\tb", "a\x00", "a\x7f", "ü", "\xff", "a\u00a0b", "a\u2028", "ＡＢ",
		strings.Repeat("x", 128), strings.Repeat("x", 129), strings.Repeat("x", 128) + ":error", strings.Repeat("x", 129) + ":error",
	} {
		f.Add(s, []byte(`{"a":[1,"b",null]}`), []byte(`"r"`))
	}
	f.Add("a", []byte(""), []byte(""))
	f.Add("a", []byte("null"), []byte("null"))
	f.Add("a", []byte(" 1 "), []byte(" -5 "))
	f.Add("a", []byte(`"\u003c/script>"`), []byte("9223372036854775807"))
	f.Add("a", []byte("[[[[[[[[[[]]]]]]]]]]"), []byte("05"))
	f.Add("a", []byte("\"\xff\""), []byte(`"`+strings.Repeat("r", 65)+`"`))
	f.Fuzz(func(t *testing.T, s string, details, ref []byte) {
		for _, tc := range []struct {
			name     string
			validate func(string) error
			sentinel error
			want     bool
		}{
			{"ValidateAction", wire.ValidateAction, wire.ErrBadAction, refValid(s, refActionChars, wire.MaxActionLen)},
			{"ValidateID", wire.ValidateID, wire.ErrBadID, refValid(s, refIDChars, wire.MaxIDLen)},
			{"ValidateOutboundAction", wire.ValidateOutboundAction, wire.ErrBadAction, refValidOutboundAction(s)},
		} {
			err := tc.validate(s)
			if (err == nil) != tc.want || err != nil && !errors.Is(err, tc.sentinel) {
				t.Fatalf("%s(%q) = %v, reference says valid=%v", tc.name, s, err, tc.want)
			}
			if err == nil && !subjectSafe(s) {
				t.Fatalf("%s accepted %q, which is not subject-safe", tc.name, s)
			}
		}

		for _, prefix := range []string{"ws", "app.ws"} {
			subj := wire.NewSubjects(prefix)
			if wire.ValidateAction(s) == nil {
				checkSubject(t, subj.In(s), prefix, "in", s)
			}
			if wire.ValidateID(s) == nil {
				checkSubject(t, subj.SendUser(s), prefix, "send.user", s)
				checkSubject(t, subj.SendGroup(s), prefix, "send.group", s)
				checkSubject(t, subj.SendSession(s), prefix, "send.session", s)
				checkSubject(t, subj.SendConn(s+".c-1"), prefix, "send.conn", s, "c-1")
				checkSubject(t, subj.CloseUser(s), prefix, "ctl.close.user", s)
				checkSubject(t, subj.CloseSession(s), prefix, "ctl.close.session", s)
				checkSubject(t, subj.CloseConn("e-1."+s), prefix, "ctl.close.conn", "e-1", s)
			}
		}

		validDetails := len(details) == 0 || json.Valid(details) && utf8.Valid(details)
		validRef := len(ref) == 0 || json.Valid(ref) && utf8.Valid(ref) && wire.ValidateRef(ref) == nil
		if wire.ValidateOutboundAction(s) == nil && validDetails && validRef {
			checkServerFrame(t, wire.AppendServerFrame(nil, s, details, ref), s, details, ref)
		}
	})
}

// checkSubject checks that subject is prefix, then the fixed tokens of kind,
// then exactly the given tokens, and has no empty or wildcard token.
func checkSubject(t *testing.T, subject, prefix, kind string, last ...string) {
	t.Helper()
	want := strings.Join(append(strings.Split(prefix+"."+kind, "."), last...), "\x00")
	got := strings.Split(subject, ".")
	if strings.Join(got, "\x00") != want {
		t.Fatalf("subject %q: tokens %q, want %q", subject, got, strings.Split(want, "\x00"))
	}
	for _, tok := range got {
		if tok == "" || tok == "*" || tok == ">" || !subjectSafe(tok) {
			t.Fatalf("subject %q has token %q", subject, tok)
		}
	}
}
