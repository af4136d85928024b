package generic

import (
	"bytes"
	"crypto/ed25519"
	"encoding/base64"
	"errors"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"inboxd/internal/provider"
)

// The vector published with the Standard Webhooks reference libraries (and svix's
// test suites, e.g. svix-webhooks php/tests/WebhookTest.php testSignFunctionWorks).
const (
	vectorSecret = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
	vectorID     = "msg_p5jXN8AQM9LWM0D4loKWxJek"
	vectorTS     = 1614265330
	vectorBody   = `{"test": 2432232314}`
	vectorSig    = "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE="
)

// An Ed25519 pair for v1a: whsk_ signs, whpk_ verifies.
var (
	edKey       = ed25519.NewKeyFromSeed(bytes.Repeat([]byte{3}, 32))
	edSecret    = "whsk_" + base64.StdEncoding.EncodeToString(edKey)
	edPublic    = "whpk_" + base64.StdEncoding.EncodeToString(edKey.Public().(ed25519.PublicKey))
	otherPub    = "whpk_" + base64.StdEncoding.EncodeToString(ed25519.NewKeyFromSeed(bytes.Repeat([]byte{4}, 32)).Public().(ed25519.PublicKey))
	edVectorSig = mustSign(vectorID, vectorTS, vectorBody)
)

func mustSign(id string, ts int64, body string) string {
	sig, err := Signature(edSecret, id, ts, []byte(body))
	if err != nil {
		panic(err)
	}
	return sig
}

func mustKeys(t testing.TB, raw ...string) Keys {
	t.Helper()
	k, err := ParseKeys(raw)
	if err != nil {
		t.Fatal(err)
	}
	return k
}

func headers(id, ts, sig string) signedHeaders {
	h := http.Header{}
	for name, v := range map[string]string{"webhook-id": id, "webhook-timestamp": ts, "webhook-signature": sig} {
		if v != "" {
			h.Set(name, v)
		}
	}
	return readHeaders(h)
}

func TestSignatureReferenceVector(t *testing.T) {
	got, err := Signature(vectorSecret, vectorID, vectorTS, []byte(vectorBody))
	if err != nil || got != vectorSig {
		t.Errorf("Signature(reference vector) = %q, %v, want %q", got, err, vectorSig)
	}
}

func TestVerify(t *testing.T) {
	at := time.Unix(vectorTS, 0)
	keys := mustKeys(t, vectorSecret)
	other := mustKeys(t, "whsec_c2VjcmV0LW51bWJlci10d28=")
	rotated := mustKeys(t, "whsec_c2VjcmV0LW51bWJlci10d28=", vectorSecret) // new secret first, old one still accepted
	asym := mustKeys(t, edPublic)
	mixed := mustKeys(t, otherPub, "whsec_c2VjcmV0LW51bWJlci10d28=", edPublic) // rotating from v1 to v1a
	tests := []struct {
		name    string
		keys    Keys
		id, ts  string
		sig     string
		body    string
		now     time.Time
		wantErr error
	}{
		{"reference vector", keys, vectorID, "1614265330", vectorSig, vectorBody, at, nil},
		{"wrong secret", other, vectorID, "1614265330", vectorSig, vectorBody, at, provider.ErrBadSignature},
		{"second of two rotated secrets", rotated, vectorID, "1614265330", vectorSig, vectorBody, at, nil},
		{"several signatures, last valid", keys, vectorID, "1614265330", "v1,bm9wZQ== v1a,xyz " + vectorSig, vectorBody, at, nil},
		{"several signatures, none valid", keys, vectorID, "1614265330", "v1,bm9wZQ== v1,Zm9v", vectorBody, at, provider.ErrBadSignature},
		{"valid signature under another version", keys, vectorID, "1614265330", "v2," + vectorSig[3:], vectorBody, at, provider.ErrBadSignature},
		{"tampered body", keys, vectorID, "1614265330", vectorSig, `{"test": 2432232315}`, at, provider.ErrBadSignature},
		{"other id", keys, "msg_other", "1614265330", vectorSig, vectorBody, at, provider.ErrBadSignature},
		{"stale timestamp", keys, vectorID, "1614265330", vectorSig, vectorBody, at.Add(5*time.Minute + time.Second), provider.ErrStale},
		{"future timestamp", keys, vectorID, "1614265330", vectorSig, vectorBody, at.Add(-5*time.Minute - time.Second), provider.ErrStale},
		{"milliseconds", keys, vectorID, "1614265330000", vectorSig, vectorBody, at, provider.ErrStale},
		{"edge of tolerance", keys, vectorID, "1614265330", vectorSig, vectorBody, at.Add(5 * time.Minute), nil},
		{"timestamp not a number", keys, vectorID, "16142653x0", vectorSig, vectorBody, at, provider.ErrBadSignature},
		{"missing id", keys, "", "1614265330", vectorSig, vectorBody, at, provider.ErrNoSignature},
		{"missing timestamp", keys, vectorID, "", vectorSig, vectorBody, at, provider.ErrNoSignature},
		{"missing signature", keys, vectorID, "1614265330", "", vectorBody, at, provider.ErrNoSignature},
		{"signature not base64", keys, vectorID, "1614265330", "v1,!!!", vectorBody, at, provider.ErrBadSignature},
		{"v1a with the public key", asym, vectorID, "1614265330", edVectorSig, vectorBody, at, nil},
		{"v1a, tampered body", asym, vectorID, "1614265330", edVectorSig, vectorBody + " ", at, provider.ErrBadSignature},
		{"v1a against another public key", mustKeys(t, otherPub), vectorID, "1614265330", edVectorSig, vectorBody, at, provider.ErrBadSignature},
		{"v1a is not checked against whsec_ secrets", keys, vectorID, "1614265330", edVectorSig, vectorBody, at, provider.ErrBadSignature},
		{"v1 is not checked against whpk_ keys", asym, vectorID, "1614265330", vectorSig, vectorBody, at, provider.ErrBadSignature},
		{"mixed keys, v1a valid", mixed, vectorID, "1614265330", "v1,bm9wZQ== " + edVectorSig, vectorBody, at, nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := tt.keys.Verify(headers(tt.id, tt.ts, tt.sig), []byte(tt.body), tt.now)
			if !errors.Is(err, tt.wantErr) || (tt.wantErr == nil && err != nil) {
				t.Errorf("Verify = %v, want %v", err, tt.wantErr)
			}
		})
	}
}

// TestSvixHeaders: Svix's header names carry the same signature; a set is taken whole.
func TestSvixHeaders(t *testing.T) {
	keys := mustKeys(t, vectorSecret)
	h := http.Header{}
	h.Set("svix-id", vectorID)
	h.Set("svix-timestamp", "1614265330")
	h.Set("svix-signature", vectorSig)
	sh := readHeaders(h)
	if sh.ID != vectorID || sh.names != "svix" {
		t.Fatalf("readHeaders(svix-*) = %+v", sh)
	}
	if err := keys.Verify(sh, []byte(vectorBody), time.Unix(vectorTS, 0)); err != nil {
		t.Errorf("Verify(svix-* headers) = %v, want nil", err)
	}
	h.Del("svix-signature")
	h.Set("webhook-signature", vectorSig) // a set split across both names is no set
	if err := checkHeaders(h); !errors.Is(err, provider.ErrNoSignature) {
		t.Errorf("checkHeaders(mixed names) = %v, want ErrNoSignature", err)
	}
}

func TestParseKeys(t *testing.T) {
	for _, bad := range []string{"whsec_", "whsec_not base64!", "", "MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw", "whpk_c2hvcnQ=", edSecret,
		"whsec_YQ==", "whsec_" + base64.StdEncoding.EncodeToString(make([]byte, 15))} { // 1 and 15 bytes: too short
		if _, err := ParseKeys([]string{bad}); err == nil {
			t.Errorf("ParseKeys(%q) = nil error, want one", bad)
		}
	}
	k, err := ParseKeys([]string{vectorSecret, edPublic})
	if err != nil || len(k.secrets) != 1 || len(k.public) != 1 {
		t.Errorf("ParseKeys(whsec_, whpk_) = %+v, %v", k, err)
	}
}

// FuzzVerify: no input panics, and whatever verifies was signed with our key.
func FuzzVerify(f *testing.F) {
	f.Add(vectorID, "1614265330", vectorSig, []byte(vectorBody))
	f.Add(vectorID, "1614265330", edVectorSig, []byte(vectorBody))
	f.Add("", "", "", []byte{})
	f.Add("id", "-99999999999999999999", "v1, v1,,", []byte("{"))
	keys := mustKeys(f, vectorSecret, edPublic)
	at := time.Unix(vectorTS, 0)
	f.Fuzz(func(t *testing.T, id, ts, sig string, body []byte) {
		if keys.Verify(headers(id, ts, sig), body, at) != nil {
			return
		}
		v1, _ := Signature(vectorSecret, id, vectorTS, body)
		v1a, _ := Signature(edSecret, id, vectorTS, body)
		fields := strings.Fields(sig)
		if ts != strconv.Itoa(vectorTS) || !(slices.Contains(fields, v1) || slices.Contains(fields, v1a)) {
			t.Errorf("verified a signature header %q that contains neither %q nor %q", sig, v1, v1a)
		}
	})
}

// FuzzValidate: the body check never panics, refuses only as malformed, and what it
// accepts Normalize reads.
func FuzzValidate(f *testing.F) {
	f.Add([]byte(`{"type":"message.received","timestamp":"2026-11-25T10:00:00Z","data":{"message_id":"m-1","channel":"+15550001111","contact":"+15552223333","text":"hi"}}`))
	f.Add([]byte(`{"type":"message.status","timestamp":"2026-11-25T10:00:00Z","data":{"message_id":"m-1","status":"read"}}`))
	f.Add([]byte(`{"type":"x"}`))
	f.Add([]byte(`null`))
	f.Fuzz(func(t *testing.T, body []byte) {
		_, err := validate(body)
		if err != nil && !errors.Is(err, provider.ErrMalformed) {
			t.Errorf("validate error %v does not wrap ErrMalformed", err)
		}
		if _, nerr := Normalize(body, time.Now()); (err == nil) != (nerr == nil) {
			t.Errorf("validate = %v but Normalize = %v: ingest and processing disagree", err, nerr)
		}
	})
}

// TestSenders: a named key identifies its sender; a shared one, nobody; names and
// keys are checked.
func TestSenders(t *testing.T) {
	acme, err := ParseSenders([]string{"acme:" + vectorSecret, "beta:" + edPublic})
	if err != nil {
		t.Fatal(err)
	}
	keys := mustKeys(t, "whsec_c2VjcmV0LW51bWJlci10d28=").join(acme)
	at := time.Unix(vectorTS, 0)
	if err := keys.Verify(headers(vectorID, "1614265330", vectorSig), []byte(vectorBody), at); err != nil {
		t.Fatal(err)
	}
	for sig, want := range map[string]string{vectorSig: "acme", edVectorSig: "beta"} {
		if got := keys.Sender(headers(vectorID, "1614265330", sig), []byte(vectorBody)); got != want {
			t.Errorf("Sender(%s…) = %q, want %q", sig[:8], got, want)
		}
	}
	shared, _ := Signature("whsec_c2VjcmV0LW51bWJlci10d28=", vectorID, vectorTS, []byte(vectorBody))
	if got := keys.Sender(headers(vectorID, "1614265330", shared), []byte(vectorBody)); got != "" {
		t.Errorf("Sender(shared key) = %q, want none", got)
	}
	for _, bad := range []string{vectorSecret, "Acme:" + vectorSecret, "a b:" + vectorSecret, "acme:whsec_YQ==", ":" + vectorSecret} {
		if _, err := ParseSenders([]string{bad}); err == nil {
			t.Errorf("ParseSenders(%q) = nil error, want one", bad)
		}
	}
}

// FuzzParseKeys: a configured value is refused, or is exactly one key of the size
// its scheme needs, named after a sender the stored provider name can carry; and a
// whsec_ secret it takes verifies what Signature signs with the same text.
func FuzzParseKeys(f *testing.F) {
	f.Add(vectorSecret, false)
	f.Add(" "+vectorSecret+"\n", false)
	f.Add(edPublic, false)
	f.Add("acme:"+vectorSecret, true)
	f.Add("Acme:"+edPublic, true)
	f.Add("whsec_YQ==", false)
	f.Fuzz(func(t *testing.T, value string, named bool) {
		parse := ParseKeys
		if named {
			parse = ParseSenders
		}
		k, err := parse([]string{value})
		if err != nil {
			return
		}
		if len(k.secrets)+len(k.public) != 1 {
			t.Fatalf("%q: %d secrets and %d public keys, want one key", value, len(k.secrets), len(k.public))
		}
		text, sender := strings.TrimSpace(value), ""
		if named {
			sender, text, _ = strings.Cut(text, ":")
		}
		switch {
		case len(k.public) == 1:
			if len(k.public[0].key) != ed25519.PublicKeySize || k.public[0].sender != sender {
				t.Fatalf("%q: public key of %d bytes for %q", value, len(k.public[0].key), k.public[0].sender)
			}
		case len(k.secrets[0].key) < minSecretBytes || k.secrets[0].sender != sender:
			t.Fatalf("%q: secret of %d bytes for %q", value, len(k.secrets[0].key), k.secrets[0].sender)
		default:
			body := []byte(`{"type":"message.status"}`)
			sig, err := Signature(text, "msg_1", vectorTS, body)
			if err != nil || k.Verify(headers("msg_1", strconv.Itoa(vectorTS), sig), body, time.Unix(vectorTS, 0)) != nil {
				t.Fatalf("%q: its own signature %q (%v) does not verify", value, sig, err)
			}
		}
		if named && !senderName.MatchString(sender) {
			t.Fatalf("%q: sender %q is not a name a stored provider can carry", value, sender)
		}
	})
}
