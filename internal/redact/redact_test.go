package redact

import (
	"slices"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
)

var protect = map[string]Protection{
	"generic": {"/data/message_id": nil, "/data/contact": {Hash}},
	"twilio":  {"MessageSid": nil, "From": {Hash}},
	"meta":    {"/message/id": nil, "/entries/*/id": nil},
}

func policy(t *testing.T, rules ...string) *Policy {
	t.Helper()
	var rs []Rule
	for _, text := range rules {
		r, err := ParseRule(text)
		if err != nil {
			t.Fatal(err)
		}
		rs = append(rs, r)
	}
	p, err := NewPolicy(rs, protect, []byte("a redaction key of 32 bytes....."))
	if err != nil {
		t.Fatal(err)
	}
	return p
}

func TestApply(t *testing.T) {
	tests := []struct {
		name, provider, payload, want string
		rules                         []string
		changed                       []string
	}{
		{"remove a form field", "twilio", `{"MessageSid":"SM1","FromZip":"94105","Body":"hi"}`, `{"Body":"hi","MessageSid":"SM1"}`,
			[]string{"twilio:FromZip=remove"}, []string{"/FromZip"}},
		{"mask with wildcards", "meta", `{"contacts":[{"profile":{"name":"Ann"}},{"profile":{"name":"Bo"}}],"message":{"id":"w1"}}`,
			`{"contacts":[{"profile":{"name":"[redacted]"}},{"profile":{"name":"[redacted]"}}],"message":{"id":"w1"}}`,
			[]string{"meta:/contacts/*/profile/name=mask"}, []string{"/contacts/0/profile/name", "/contacts/1/profile/name"}},
		{"hash is stable and keyed", "generic", `{"data":{"contact":"+15551234567","message_id":"m"}}`,
			`{"data":{"contact":"hmac-sha256:` + policy(t).hex("+15551234567") + `","message_id":"m"}}`,
			[]string{"generic:/data/contact=hash"}, []string{"/data/contact"}},
		{"numbers keep their digits", "generic", `{"data":{"n":12345678901234567890,"text":"x","message_id":"m"}}`, `{"data":{"message_id":"m","n":12345678901234567890,"text":"[redacted]"}}`,
			[]string{"generic:/data/text=mask"}, []string{"/data/text"}},
		{"nothing to change: the payload as is", "generic", `{"data": {"z": 1, "message_id": "m"}}`, `{"data": {"z": 1, "message_id": "m"}}`,
			[]string{"generic:/data/text=mask"}, nil},
		{"another provider's rules do not apply", "twilio", `{"FromZip":"1"}`, `{"FromZip":"1"}`,
			[]string{"generic:/data/text=mask"}, nil},
		{"escaped pointer", "generic", `{"data":{"a/b":"x","message_id":"m"}}`, `{"data":{"message_id":"m"}}`,
			[]string{"generic:/data/a~1b=remove"}, []string{"/data/a~1b"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, changed := policy(t, tt.rules...).Apply(tt.provider, []byte(tt.payload))
			if string(got) != tt.want || !cmp.Equal(changed, tt.changed) {
				t.Errorf("Apply = %s %v, want %s %v", got, changed, tt.want, tt.changed)
			}
		})
	}
}

// TestRefusedRules: a rule against what the dedupe key or normalization needs, an
// unknown provider, a malformed rule or a hash without a key is refused, naming it.
func TestRefusedRules(t *testing.T) {
	for text, want := range map[string]string{
		"generic:/data/message_id=remove": "cannot do without",
		"generic:/data=remove":            "cannot do without", // contains the message id
		"generic:/data/contact=mask":      "hash it instead",
		"twilio:MessageSid=hash":          "cannot do without",
		"meta:/message/*=mask":            "cannot do without",
		"meta:/entries/0/id=remove":       "cannot do without", // one entry's id: the protected path's wildcard matches it
		"nobody:/x=remove":                "no provider",
	} {
		r, err := ParseRule(text)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := NewPolicy([]Rule{r}, protect, []byte("k")); err == nil || !strings.Contains(err.Error(), want) || !strings.Contains(err.Error(), text) {
			t.Errorf("NewPolicy(%s) = %v, want an error naming the rule and %q", text, err, want)
		}
	}
	for _, bad := range []string{"twilio FromZip", "twilio:FromZip=shred", ":x=remove", "twilio:=remove"} {
		if _, err := ParseRule(bad); err == nil {
			t.Errorf("ParseRule(%q) = nil error", bad)
		}
	}
	// A rule beside or below a protected field (inside its value, which a protected
	// id or address does not have) leaves it alone.
	for _, text := range []string{"meta:/message/text=remove", "meta:/message/id/below=remove", "meta:/entries/*/name=mask"} {
		r, err := ParseRule(text)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := NewPolicy([]Rule{r}, protect, nil); err != nil {
			t.Errorf("NewPolicy(%s) = %v, want it accepted", text, err)
		}
	}
	r, _ := ParseRule("generic:/data/contact=hash")
	if _, err := NewPolicy([]Rule{r}, protect, nil); err == nil || !strings.Contains(err.Error(), "key") {
		t.Errorf("hash without a key: %v, want an error", err)
	}
}

func FuzzApply(f *testing.F) {
	f.Add([]byte(`{"data":{"contact":"+1","message_id":"m","list":[1,{"contact":2}]}}`))
	f.Add([]byte(`[1,2,3]`))
	f.Add([]byte(`not json`))
	p := &Policy{rules: map[string][]Rule{"generic": {
		{Provider: "generic", Path: Pointer("/data/*"), Action: Mask},
		{Provider: "generic", Path: Pointer("/data/list/*/contact"), Action: Remove},
	}}, key: []byte("k")}
	f.Fuzz(func(t *testing.T, payload []byte) {
		out, changed := p.Apply("generic", payload)
		if len(changed) == 0 && string(out) != string(payload) {
			t.Errorf("nothing changed but the payload did: %s -> %s", payload, out)
		}
	})
}

// TestApplyTwice: rewriting a stored payload under the same policy again changes
// nothing and reports nothing (inboxd redact --apply is idempotent: a hash is not
// hashed again, a mask not masked again).
func TestApplyTwice(t *testing.T) {
	p := policy(t, "generic:/data/contact=hash", "generic:/data/text=mask", "generic:/data/zip=remove", "generic:/data/names/*=mask")
	once, changed := p.Apply("generic", []byte(`{"data":{"message_id":"m","contact":"+15551234567","text":"hi","zip":"1","n":[1,{"a":2}],"names":["Ann","Bo"]}}`))
	if len(changed) != 5 {
		t.Fatalf("first pass changed %v, want 5 fields", changed)
	}
	twice, changed := p.Apply("generic", once)
	if len(changed) != 0 || string(twice) != string(once) {
		t.Errorf("second pass changed %v: %s, want %s unchanged", changed, twice, once)
	}
	if h, ok := p.Hashed("+15551234567"); !ok || !strings.Contains(string(once), h) {
		t.Errorf("Hashed = %q, %v; not what the rule wrote in %s", h, ok, once)
	}
}

func TestIsRedacted(t *testing.T) {
	p := policy(t)
	h, _ := p.Hashed("x")
	for v, want := range map[string]bool{
		Masked: true, h: true, strings.TrimPrefix(h, "hmac-sha256:"): true,
		"hello": false, "+15551234567": false, strings.ToUpper(strings.TrimPrefix(h, "hmac-sha256:")): false,
	} {
		if got := IsRedacted(v); got != want {
			t.Errorf("IsRedacted(%q) = %v, want %v", v, got, want)
		}
	}
	if _, ok := (&Policy{}).Hashed("x"); ok {
		t.Error("Hashed without a key = ok")
	}
}

// FuzzParseRule: any rule text is refused or read without a panic; a rule read names
// a provider, one of the three actions and a selector, whose segments escaped again
// (RFC 6901) read back to the same segments.
func FuzzParseRule(f *testing.F) {
	for _, s := range []string{"twilio:FromZip=remove", "generic:/data/contact=hash", "meta:/entry/*/changes/*/value/contacts/*/profile/name=mask",
		"generic:/a~1b/~0c~01=mask", ":x=mask", "generic:=mask", "generic:/x=drop", "generic:/x"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		r, err := ParseRule(s)
		if err != nil {
			return
		}
		if r.Provider == "" || len(r.Path) == 0 || (r.Action != Remove && r.Action != Mask && r.Action != Hash) {
			t.Fatalf("ParseRule(%q) = %+v", s, r)
		}
		escaped := make([]string, len(r.Path))
		for i, seg := range r.Path {
			escaped[i] = escape(seg)
		}
		if back := Pointer("/" + strings.Join(escaped, "/")); !slices.Equal(back, r.Path) {
			t.Fatalf("ParseRule(%q) has segments %q, escaped again they read %q", s, r.Path, back)
		}
	})
}

// TestPointer: RFC 6901's examples (§5), and its §4 order of unescaping: "~01" is
// "~1", not "/".
func TestPointer(t *testing.T) {
	for in, want := range map[string][]string{
		"/foo": {"foo"}, "/foo/0": {"foo", "0"}, "/": {""}, "/a~1b": {"a/b"}, "/m~0n": {"m~n"}, "/ ": {" "},
		"/~01": {"~1"}, "/a~1b/~0c~01": {"a/b", "~c~1"}, "FromZip": {"FromZip"},
	} {
		if got := Pointer(in); !slices.Equal(got, want) {
			t.Errorf("Pointer(%q) = %q, want %q", in, got, want)
		}
	}
}
