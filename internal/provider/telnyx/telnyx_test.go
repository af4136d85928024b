package telnyx

import (
	"bytes"
	"crypto/ed25519"
	"encoding/base64"
	"errors"
	"fmt"
	"net/http"
	"os"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"inboxd/internal/provider"
)

var (
	key      = ed25519.NewKeyFromSeed(bytes.Repeat([]byte{9}, ed25519.SeedSize))
	private  = base64.StdEncoding.EncodeToString(key)
	public   = key.Public().(ed25519.PublicKey)
	otherPub = ed25519.NewKeyFromSeed(bytes.Repeat([]byte{8}, ed25519.SeedSize)).Public().(ed25519.PublicKey)
)

func readTestdata(t testing.TB, name string) []byte {
	t.Helper()
	b, err := os.ReadFile("testdata/" + name)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func TestVerify(t *testing.T) {
	body := readTestdata(t, "message_received.json")
	at := time.Unix(1764064800, 0)
	h, err := Headers(private, at, body)
	if err != nil {
		t.Fatal(err)
	}
	ts, sig := h.Get(TimestampHeader), h.Get(SignatureHeader)
	handSigned := base64.StdEncoding.EncodeToString(ed25519.Sign(key, []byte(ts+"|"+string(body))))
	tests := []struct {
		name    string
		keys    []ed25519.PublicKey
		ts, sig string
		body    []byte
		now     time.Time
		wantErr error
	}{
		{"valid", []ed25519.PublicKey{public}, ts, sig, body, at, nil},
		{"second key during rotation", []ed25519.PublicKey{otherPub, public}, ts, sig, body, at, nil},
		{"signed by hand as Telnyx documents: timestamp|body", []ed25519.PublicKey{public}, ts, handSigned, body, at, nil},
		{"wrong keys during rotation", []ed25519.PublicKey{otherPub, otherPub}, ts, sig, body, at, provider.ErrBadSignature},
		{"signature of the wrong size", []ed25519.PublicKey{public}, ts, base64.StdEncoding.EncodeToString(make([]byte, 63)), body, at, provider.ErrBadSignature},
		{"wrong key", []ed25519.PublicKey{otherPub}, ts, sig, body, at, provider.ErrBadSignature},
		{"tampered body", []ed25519.PublicKey{public}, ts, sig, append([]byte(" "), body...), at, provider.ErrBadSignature},
		{"other timestamp", []ed25519.PublicKey{public}, strconv.FormatInt(at.Unix()+1, 10), sig, body, at, provider.ErrBadSignature},
		{"stale", []ed25519.PublicKey{public}, ts, sig, body, at.Add(5*time.Minute + time.Second), provider.ErrStale},
		{"future", []ed25519.PublicKey{public}, ts, sig, body, at.Add(-5*time.Minute - time.Second), provider.ErrStale},
		{"milliseconds", []ed25519.PublicKey{public}, ts + "000", sig, body, at, provider.ErrStale},
		{"timestamp not a number", []ed25519.PublicKey{public}, "soon", sig, body, at, provider.ErrBadSignature},
		{"signature not base64", []ed25519.PublicKey{public}, ts, "!!", body, at, provider.ErrBadSignature},
		{"missing signature", []ed25519.PublicKey{public}, ts, "", body, at, provider.ErrNoSignature},
		{"missing timestamp", []ed25519.PublicKey{public}, "", sig, body, at, provider.ErrNoSignature},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := verify(tt.keys, tt.ts, tt.sig, tt.body, tt.now)
			if !errors.Is(err, tt.wantErr) || (tt.wantErr == nil && err != nil) {
				t.Errorf("verify = %v, want %v", err, tt.wantErr)
			}
			// The reason says what is wrong with the signature itself, before any key is tried.
			if strings.Contains(tt.name, "wrong size") && !strings.Contains(fmt.Sprint(err), "not a base64 Ed25519 signature") {
				t.Errorf("verify = %v, want the reason to say the signature is not an Ed25519 signature", err)
			}
		})
	}
}

func TestOpen(t *testing.T) {
	c := provider.Config{Values: map[string]string{PublicKeyKey: base64.StdEncoding.EncodeToString(public)}}
	if w, err := open(c); err != nil || w == nil {
		t.Errorf("open(valid key) = %v, %v", w, err)
	}
	if w, err := open(provider.Config{}); err != nil || w != nil {
		t.Errorf("open(unset) = %v, %v; want disabled", w, err)
	}
	if w, _ := open(c); w != nil {
		for _, only := range []string{TimestampHeader, SignatureHeader} {
			h := http.Header{}
			h.Set(only, "1")
			if err := w.Headers(h); !errors.Is(err, provider.ErrNoSignature) {
				t.Errorf("Headers(only %s) = %v, want ErrNoSignature before the body is read", only, err)
			}
		}
	}
	bad := provider.Config{Values: map[string]string{PublicKeyKey: "c2hvcnQ="}, Name: func(k string) string { return "X_" + k }}
	if _, err := open(bad); err == nil || !strings.Contains(err.Error(), "X_TELNYX_PUBLIC_KEY") {
		t.Errorf("open(short key) = %v, want an error naming X_TELNYX_PUBLIC_KEY", err)
	}
}

func TestParse(t *testing.T) {
	// Our number is the channel: the recipient of an inbound message, the sender of an
	// outbound one and of its status.
	for file, want := range map[string]string{
		"message_received.json":  "b301ed3f-1490-491f-995f-6e64e69674d4",
		"message_sent.json":      "4ee8c3a6-4995-4309-a3c6-38e3db9ea4be",
		"message_finalized.json": "6dd7e2a7-5d2f-4a3c-9c6c-1a2b3c4d5e6f",
	} {
		events, err := parse(readTestdata(t, file))
		if err != nil || len(events) != 1 || events[0].ExternalID != want || events[0].Channel != "+15550001111" {
			var got []string
			for _, e := range events {
				got = append(got, e.ExternalID+" on "+e.Channel)
			}
			t.Errorf("%s: parse = %v, %v; want one event %s on channel +15550001111", file, got, err, want)
		}
	}
	// An inbound message without recipients is stored (the normalizer refuses it, in
	// processing, where an operator sees it), in the provider's lane.
	events, err := parse([]byte(`{"data":{"event_type":"message.received","id":"evt-1","payload":{"direction":"inbound","to":[]}}}`))
	if err != nil || len(events) != 1 || events[0].Channel != "" {
		t.Errorf("parse(an inbound message without recipients) = %+v, %v; want one event without a channel", events, err)
	}
	long := strings.Repeat("x", provider.MaxExternalIDBytes+1)
	for _, bad := range []string{`{`, `{"data":{}}`, `{"data":{"id":"x"}}`, `[]`, `{"data":{"event_type":"message.received"}}`,
		`{"data":{"event_type":"message.received","id":"` + long + `"}}`} {
		if _, err := parse([]byte(bad)); !errors.Is(err, provider.ErrMalformed) {
			t.Errorf("parse(%s) = %v, want ErrMalformed", bad, err)
		}
	}
}

func TestNormalize(t *testing.T) {
	received := time.Date(2026, 11, 25, 10, 0, 0, 0, time.UTC)
	tests := []struct {
		file string
		want provider.Normalized
	}{
		{"message_received.json", provider.Normalized{Message: &provider.Message{
			ID: "84cca175-9755-4859-b67f-4730d7f58aa3", Direction: "inbound", Type: "text", Channel: "+15550001111",
			Contact: "+15552223333", Sender: "+15552223333", Recipient: "+15550001111", Text: "Hello from Telnyx!",
			SentAt: received, Status: "received"}}},
		{"message_sent.json", provider.Normalized{Message: &provider.Message{
			ID: "40385f64-5717-4562-b3fc-2c963f66afa6", Direction: "outbound", Type: "image", Channel: "+15550001111",
			Contact: "+15552223333", Sender: "+15550001111", Recipient: "+15552223333",
			Media:  []provider.Media{{URL: "https://example.com/cat.jpg", ContentType: "image/jpeg"}},
			SentAt: received.Add(time.Minute), Status: "sent"}}},
		{"message_finalized.json", provider.Normalized{Status: &provider.Status{
			MessageID: "40385f64-5717-4562-b3fc-2c963f66afa6", Contact: "+15552223333", Status: "delivered", At: received.Add(64 * time.Second)}}},
	}
	for _, tt := range tests {
		got, err := Normalize(readTestdata(t, tt.file), time.Now())
		if err != nil {
			t.Errorf("%s: %v", tt.file, err)
			continue
		}
		if diff := cmp.Diff(tt.want, got); diff != "" {
			t.Errorf("%s: Normalize mismatch (-want +got):\n%s", tt.file, diff)
		}
	}
	failed := strings.Replace(string(readTestdata(t, "message_finalized.json")), `"status": "delivered"`, `"status": "delivery_failed"`, 1)
	failed = strings.Replace(failed, `"errors": []`, `"errors": [{"code": "40300", "title": "Blocked as spam"}]`, 1)
	n, err := Normalize([]byte(failed), time.Now())
	if err != nil || n.Status.Status != "failed" || !strings.Contains(string(n.Status.Error), "40300") {
		t.Errorf("delivery_failed = %+v, %v; want status failed with the error", n.Status, err)
	}
	for _, bad := range []string{`{`, `{"data":{"event_type":"message.received","payload":{}}}`,
		`{"data":{"event_type":"number_order.complete","payload":{"id":"x"}}}`,
		`{"data":{"event_type":"message.finalized","payload":{"id":"x","to":[{"status":"teleported"}]}}}`} {
		if _, err := Normalize([]byte(bad), time.Now()); !errors.Is(err, provider.ErrPermanent) {
			t.Errorf("Normalize(%s) = %v, want ErrPermanent", bad, err)
		}
	}
}

func TestDescribe(t *testing.T) {
	for file, want := range map[string]string{
		"message_received.json": "message.received", "message_finalized.json": "message.finalized delivered",
	} {
		if got := describe(readTestdata(t, file)); got != want {
			t.Errorf("describe(%s) = %q, want %q", file, got, want)
		}
	}
	// A signed webhook may still lack its recipients: described without an outcome.
	if got := describe([]byte(`{"data":{"event_type":"message.finalized","payload":{"to":[]}}}`)); got != "message.finalized" {
		t.Errorf("describe(a finalized message without recipients) = %q, want message.finalized", got)
	}
}

func FuzzVerify(f *testing.F) {
	body := []byte(`{"data":{"id":"x"}}`)
	h, _ := Headers(private, time.Unix(1764064800, 0), body)
	f.Add(h.Get(TimestampHeader), h.Get(SignatureHeader), body)
	f.Add("", "", []byte{})
	f.Fuzz(func(t *testing.T, ts, sig string, body []byte) {
		if verify([]ed25519.PublicKey{public}, ts, sig, body, time.Unix(1764064800, 0)) != nil {
			return
		}
		raw, _ := base64.StdEncoding.DecodeString(sig)
		if !ed25519.Verify(public, signedContent(ts, body), raw) {
			t.Errorf("verified a signature that does not sign %q|%q", ts, body)
		}
	})
}

func FuzzParse(f *testing.F) {
	for _, name := range []string{"message_received.json", "message_sent.json", "message_finalized.json"} {
		f.Add(readTestdata(f, name))
	}
	f.Add([]byte(`{"data":{"id":""}}`))
	f.Fuzz(func(t *testing.T, body []byte) {
		events, err := parse(body)
		if err != nil {
			if !errors.Is(err, provider.ErrMalformed) {
				t.Errorf("error %v does not wrap ErrMalformed", err)
			}
			return
		}
		if len(events) != 1 || events[0].ExternalID == "" {
			t.Errorf("parse = %+v, want one event with an id", events)
		}
	})
}
