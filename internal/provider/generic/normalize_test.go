package generic_test

import (
	"errors"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"inboxd/internal/provider"
	"inboxd/internal/provider/generic"
	"inboxd/internal/provider/providertest"
)

func TestNormalize(t *testing.T) {
	at := time.Date(2026, 11, 25, 10, 0, 0, 0, time.UTC)
	tests := []struct {
		name    string
		payload string
		want    provider.Normalized
		wantErr error
	}{
		{
			name:    "received (the documented example)",
			payload: `{"type":"message.received","timestamp":"2026-11-25T10:00:00Z","data":{"message_id":"m-1","channel":"+15550001111","contact":"+15552223333","text":"hi","media":[{"url":"https://example.com/a.jpg","content_type":"image/jpeg"}]}}`,
			want: provider.Normalized{Message: &provider.Message{ID: "m-1", Direction: "inbound", Type: "text", Channel: "+15550001111", Contact: "+15552223333",
				Sender: "+15552223333", Recipient: "+15550001111", Text: "hi", SentAt: at, Status: "received",
				Media: []provider.Media{{URL: "https://example.com/a.jpg", ContentType: "image/jpeg"}}}},
		},
		{
			name:    "sent",
			payload: `{"type":"message.sent","timestamp":"2026-11-25T10:00:00Z","data":{"message_id":"m-2","channel":"+15550001111","contact":"+15552223333","text":"yo"}}`,
			want: provider.Normalized{Message: &provider.Message{ID: "m-2", Direction: "outbound", Type: "text", Channel: "+15550001111", Contact: "+15552223333",
				Sender: "+15550001111", Recipient: "+15552223333", Text: "yo", SentAt: at, Status: "sent"}},
		},
		{
			name:    "media only",
			payload: `{"type":"message.received","timestamp":"2026-11-25T10:00:00Z","data":{"message_id":"m-3","channel":"c","contact":"k","media":[{"url":"u"}]}}`,
			want: provider.Normalized{Message: &provider.Message{ID: "m-3", Direction: "inbound", Type: "media", Channel: "c", Contact: "k",
				Sender: "k", Recipient: "c", SentAt: at, Status: "received", Media: []provider.Media{{URL: "u"}}}},
		},
		{
			name:    "status with error",
			payload: `{"type":"message.status","timestamp":"2026-11-25T10:00:00Z","data":{"message_id":"m-1","contact":"+15552223333","status":"failed","error":{"code":30003}}}`,
			want:    provider.Normalized{Status: &provider.Status{MessageID: "m-1", Contact: "+15552223333", Status: "failed", At: at, Error: []byte(`{"code":30003}`)}},
		},
		{
			name:    "status with a null error",
			payload: `{"type":"message.status","timestamp":"2026-11-25T10:00:00Z","data":{"message_id":"m-1","status":"read","error":null}}`,
			want:    provider.Normalized{Status: &provider.Status{MessageID: "m-1", Status: "read", At: at}},
		},
		{
			name:    "numbers as people write them are stored in E.164",
			payload: `{"type":"message.received","timestamp":"2026-11-25T10:00:00Z","data":{"message_id":"m-4","channel":" +1 555 000 1111","contact":"1 (555) 222-3333","text":"hi"}}`,
			want: provider.Normalized{Message: &provider.Message{ID: "m-4", Direction: "inbound", Type: "text", Channel: "+15550001111", Contact: "+15552223333",
				Sender: "+15552223333", Recipient: "+15550001111", Text: "hi", SentAt: at, Status: "received"}},
		},
		{name: "a blank contact", payload: `{"type":"message.received","timestamp":"2026-11-25T10:00:00Z","data":{"message_id":"m","channel":"c","contact":" "}}`, wantErr: provider.ErrPermanent},
		{
			name:    "the last second RFC 3339 can write",
			payload: `{"type":"message.status","timestamp":"9999-12-31T23:59:59Z","data":{"message_id":"m-1","status":"read"}}`,
			want:    provider.Normalized{Status: &provider.Status{MessageID: "m-1", Status: "read", At: time.Date(9999, 12, 31, 23, 59, 59, 0, time.UTC)}},
		},
		{name: "an offset carrying the time past year 9999", payload: `{"type":"message.status","timestamp":"9999-12-31T23:59:59-00:01","data":{"message_id":"m-1","status":"read"}}`, wantErr: provider.ErrPermanent},
		{name: "not JSON", payload: `{`, wantErr: provider.ErrPermanent},
		{name: "no message id", payload: `{"type":"message.received","timestamp":"2026-11-25T10:00:00Z","data":{"channel":"c","contact":"k"}}`, wantErr: provider.ErrPermanent},
		{name: "status without status", payload: `{"type":"message.status","timestamp":"2026-11-25T10:00:00Z","data":{"message_id":"m"}}`, wantErr: provider.ErrPermanent},
		{name: "message without contact", payload: `{"type":"message.sent","timestamp":"2026-11-25T10:00:00Z","data":{"message_id":"m","channel":"c"}}`, wantErr: provider.ErrPermanent},
		{name: "unknown type", payload: `{"type":"message.deleted","timestamp":"2026-11-25T10:00:00Z","data":{"message_id":"m"}}`, wantErr: provider.ErrPermanent},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := generic.Normalize([]byte(tt.payload), at)
			if !errors.Is(err, tt.wantErr) || (tt.wantErr == nil && err != nil) {
				t.Fatalf("NormalizeGeneric error = %v, want %v", err, tt.wantErr)
			}
			if diff := cmp.Diff(tt.want, got); tt.wantErr == nil && diff != "" {
				t.Errorf("NormalizeGeneric mismatch (-want +got):\n%s", diff)
			}
		})
	}
}

// TestDescribe: tail's one word on an event is its type, "?" when it has none.
func TestDescribe(t *testing.T) {
	for payload, want := range map[string]string{`{"type":"message.sent","data":{}}`: "message.sent", `{}`: "?", `{"type":""}`: "?", `{`: "?"} {
		if got := generic.Provider.Describe([]byte(payload)); got != want {
			t.Errorf("Describe(%s) = %q, want %q", payload, got, want)
		}
	}
}

func FuzzNormalize(f *testing.F) {
	f.Add([]byte(`{"type":"message.received","timestamp":"2026-11-25T10:00:00Z","data":{"message_id":"m-1","channel":"+1","contact":"+2","text":"hi"}}`))
	f.Add([]byte(`{"type":"message.status","timestamp":"2026-11-25T10:00:00Z","data":{"message_id":"m-1","status":"read"}}`))
	f.Add([]byte(`{"type":"message.sent","data":{"message_id":"m","channel":"c","contact":"k","media":[{}]}}`))
	f.Add([]byte(`[]`))
	// Numbers as people write them, and a contact that is only spaces.
	f.Add([]byte(`{"type":"message.sent","timestamp":"2026-11-25T10:00:00Z","data":{"message_id":"m-1","channel":" +1 555 000 1111","contact":"15552223333","text":"hi"}}`))
	f.Add([]byte(`{"type":"message.status","timestamp":"2026-11-25T10:00:00Z","data":{"message_id":"m-1","contact":"+1 (555) 222-3333","status":"read"}}`))
	f.Add([]byte(`{"type":"message.received","timestamp":"2026-11-25T10:00:00Z","data":{"message_id":"m-1","channel":"c","contact":"  ","text":"hi"}}`))
	// RFC 3339 times whose offset carries them past year 9999, or before year 0, in UTC.
	f.Add([]byte(`{"type":"message.received","timestamp":"9999-12-31T23:59:59-23:59","data":{"message_id":"m-1","channel":"+1","contact":"+2","text":"hi"}}`))
	f.Add([]byte(`{"type":"message.status","timestamp":"0000-01-01T00:00:00+23:59","data":{"message_id":"m-1","status":"read"}}`))
	f.Fuzz(func(t *testing.T, payload []byte) {
		n, err := generic.Normalize(payload, time.Unix(1764064800, 0))
		providertest.CheckNormalized(t, n, err, providertest.NumberChannels)
	})
}
