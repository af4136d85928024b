package processor

import (
	"testing"
	"time"
)

func TestE164(t *testing.T) {
	for in, want := range map[string]string{
		"+15552223333":            "+15552223333",
		"15552223333":             "+15552223333", // Meta's wa_id
		"+1 (555) 222-3333":       "+15552223333",
		"US.13491208655302741918": "US.13491208655302741918", // a BSUID stays as it is
		"InboxCo":                 "InboxCo",                 // alphanumeric sender id
		"12345":                   "12345",                   // short code: too short for E.164
		"":                        "",
	} {
		if got := e164(in); got != want {
			t.Errorf("e164(%q) = %q, want %q", in, got, want)
		}
	}
	for in, want := range map[string][2]string{
		"whatsapp:+14155238886": {"whatsapp", "+14155238886"},
		"+14155238886":          {"", "+14155238886"},
		"messenger:123":         {"messenger", "messenger:123"[10:]},
	} {
		kind, number := twilioAddress(in)
		if kind != want[0] || number != want[1] {
			t.Errorf("twilioAddress(%q) = %q, %q, want %q, %q", in, kind, number, want[0], want[1])
		}
	}
}

func FuzzNormalizeTwilio(f *testing.F) {
	f.Add([]byte(`{"MessageSid":"SM1","From":"+15551234567","To":"+15557778888","Body":"hi"}`))
	f.Add([]byte(`{"MessageSid":"MM1","From":"whatsapp:+1555","To":"whatsapp:+1415","NumMedia":"2","MediaUrl0":"u","MediaContentType0":"image/png","MediaUrl1":["a","b"]}`))
	f.Add([]byte(`{"MessageSid":"SM1","MessageStatus":"delivered","ErrorCode":"30003"}`))
	f.Add([]byte(`{"SmsSid":"SM1","Latitude":"1","Longitude":"2","From":"+1","To":"+2"}`))
	f.Fuzz(func(t *testing.T, payload []byte) {
		n, err := NormalizeTwilio(payload, time.Unix(1764064800, 0))
		checkNormalized(t, n, err)
	})
}

func FuzzNormalizeMeta(f *testing.F) {
	f.Add([]byte(`{"metadata":{"phone_number_id":"1"},"contacts":[{"wa_id":"15551234567","profile":{"name":"A"}}],"message":{"from":"15551234567","id":"w1","timestamp":"1749416383","type":"text","text":{"body":"hi"}}}`))
	f.Add([]byte(`{"metadata":{"phone_number_id":"1"},"contacts":[{"user_id":"US.1"}],"message":{"from_user_id":"US.1","id":"w2","type":"interactive","interactive":{"list_reply":{"id":"x","title":"y"}}}}`))
	f.Add([]byte(`{"metadata":{"phone_number_id":"1"},"message":{"from":"1","id":"w3","type":"image","image":{"id":"m","mime_type":"image/jpeg"}}}`))
	f.Add([]byte(`{"metadata":{"phone_number_id":"1"},"status":{"id":"w1","status":"read","timestamp":"1","errors":[{"code":1}]}}`))
	f.Fuzz(func(t *testing.T, payload []byte) {
		n, err := NormalizeMeta(payload, time.Unix(1764064800, 0))
		checkNormalized(t, n, err)
	})
}
