package ingest

import (
	"errors"
	"slices"
	"strings"
	"testing"
	"time"
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

func mustKeys(t testing.TB, secrets ...string) [][]byte {
	t.Helper()
	keys, err := ParseGenericSecrets(secrets)
	if err != nil {
		t.Fatal(err)
	}
	return keys
}

func TestSignGenericReferenceVector(t *testing.T) {
	got := SignGeneric(mustKeys(t, vectorSecret)[0], vectorID, vectorTS, []byte(vectorBody))
	if got != vectorSig {
		t.Errorf("SignGeneric(reference vector) = %q, want %q", got, vectorSig)
	}
}

func TestVerifyGeneric(t *testing.T) {
	at := time.Unix(vectorTS, 0)
	keys := mustKeys(t, vectorSecret)
	other := mustKeys(t, "whsec_c2VjcmV0LW51bWJlci10d28=")
	rotated := append(append([][]byte{}, other...), keys...) // new secret first, old one still accepted
	tests := []struct {
		name    string
		keys    [][]byte
		id, ts  string
		sig     string
		body    string
		now     time.Time
		wantErr error
	}{
		{"reference vector", keys, vectorID, "1614265330", vectorSig, vectorBody, at, nil},
		{"wrong secret", other, vectorID, "1614265330", vectorSig, vectorBody, at, errBadSignature},
		{"second of two rotated secrets", rotated, vectorID, "1614265330", vectorSig, vectorBody, at, nil},
		{"several signatures, last valid", keys, vectorID, "1614265330", "v1,bm9wZQ== v1a,xyz " + vectorSig, vectorBody, at, nil},
		{"several signatures, none valid", keys, vectorID, "1614265330", "v1,bm9wZQ== v1,Zm9v", vectorBody, at, errBadSignature},
		{"valid signature under another version", keys, vectorID, "1614265330", "v2," + vectorSig[3:], vectorBody, at, errBadSignature},
		{"tampered body", keys, vectorID, "1614265330", vectorSig, `{"test": 2432232315}`, at, errBadSignature},
		{"other id", keys, "msg_other", "1614265330", vectorSig, vectorBody, at, errBadSignature},
		{"stale timestamp", keys, vectorID, "1614265330", vectorSig, vectorBody, at.Add(5*time.Minute + time.Second), errStale},
		{"future timestamp", keys, vectorID, "1614265330", vectorSig, vectorBody, at.Add(-5*time.Minute - time.Second), errStale},
		{"edge of tolerance", keys, vectorID, "1614265330", vectorSig, vectorBody, at.Add(5 * time.Minute), nil},
		{"timestamp not a number", keys, vectorID, "16142653x0", vectorSig, vectorBody, at, errBadSignature},
		{"missing id", keys, "", "1614265330", vectorSig, vectorBody, at, errNoSignature},
		{"missing timestamp", keys, vectorID, "", vectorSig, vectorBody, at, errNoSignature},
		{"missing signature", keys, vectorID, "1614265330", "", vectorBody, at, errNoSignature},
		{"signature not base64", keys, vectorID, "1614265330", "v1,!!!", vectorBody, at, errBadSignature},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := verifyGeneric(tt.keys, tt.id, tt.ts, tt.sig, []byte(tt.body), tt.now)
			if !errors.Is(err, tt.wantErr) || (tt.wantErr == nil && err != nil) {
				t.Errorf("verifyGeneric = %v, want %v", err, tt.wantErr)
			}
		})
	}
}

func TestParseGenericSecrets(t *testing.T) {
	for _, bad := range []string{"whsec_", "whsec_not base64!", ""} {
		if _, err := ParseGenericSecrets([]string{bad}); err == nil {
			t.Errorf("ParseGenericSecrets(%q) = nil error, want one", bad)
		}
	}
	if _, err := ParseGenericSecrets([]string{"MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"}); err != nil {
		t.Errorf("ParseGenericSecrets(no prefix) = %v, want nil", err)
	}
}

// FuzzVerifyGeneric: no input panics, and whatever verifies was signed with our key.
func FuzzVerifyGeneric(f *testing.F) {
	f.Add(vectorID, "1614265330", vectorSig, []byte(vectorBody))
	f.Add("", "", "", []byte{})
	f.Add("id", "-99999999999999999999", "v1, v1,,", []byte("{"))
	keys := mustKeys(f, vectorSecret)
	at := time.Unix(vectorTS, 0)
	f.Fuzz(func(t *testing.T, id, ts, sig string, body []byte) {
		if verifyGeneric(keys, id, ts, sig, body, at) != nil {
			return
		}
		if want := SignGeneric(keys[0], id, vectorTS, body); ts == "1614265330" && !slices.Contains(strings.Fields(sig), want) {
			t.Errorf("verified a signature header %q that does not contain %q", sig, want)
		}
	})
}

// FuzzValidateGeneric: the body check never panics and accepts only bodies with the
// required fields.
func FuzzValidateGeneric(f *testing.F) {
	f.Add([]byte(`{"type":"message.received","timestamp":"2026-11-25T10:00:00Z","data":{"message_id":"m-1","channel":"+15550001111","contact":"+15552223333","text":"hi"}}`))
	f.Add([]byte(`{"type":"message.status","timestamp":"2026-11-25T10:00:00Z","data":{"message_id":"m-1","status":"read"}}`))
	f.Add([]byte(`{"type":"x"}`))
	f.Add([]byte(`null`))
	f.Fuzz(func(t *testing.T, body []byte) {
		if err := validateGeneric(body); err != nil && !errors.Is(err, errMalformed) {
			t.Errorf("validateGeneric error %v does not wrap errMalformed", err)
		}
	})
}
