package twilio_test

import (
	"testing"
	"time"

	"inboxd/internal/provider"
	"inboxd/internal/provider/providertest"
	"inboxd/internal/provider/twilio"
)

func TestE164AndAddress(t *testing.T) {
	for in, want := range map[string]string{
		"+15552223333":            "+15552223333",
		"15552223333":             "+15552223333", // Meta's wa_id
		"+1 (555) 222-3333":       "+15552223333",
		"US.13491208655302741918": "US.13491208655302741918", // a BSUID stays as it is
		"InboxCo":                 "InboxCo",                 // alphanumeric sender id
		"12345":                   "12345",                   // short code: too short for E.164
		"":                        "",
	} {
		if got := provider.E164(in); got != want {
			t.Errorf("E164(%q) = %q, want %q", in, got, want)
		}
	}
	for in, want := range map[string][2]string{
		"whatsapp:+14155238886":   {"whatsapp", "+14155238886"},
		"+14155238886":            {"", "+14155238886"},
		"messenger:123":           {"messenger", "123"},
		"+15551234567:9":          {"", "+15551234567:9"}, // a "+" starts a number, never a kind
		" whatsapp :+14155238886": {"whatsapp", "+14155238886"},
		" +15551234567:9":         {"", "+15551234567:9"},
	} {
		kind, number := twilio.Address(in)
		if kind != want[0] || number != want[1] {
			t.Errorf("Address(%q) = %q, %q, want %q, %q", in, kind, number, want[0], want[1])
		}
	}
}

// TestNormalizeJSON: a JSON webhook's fields shared with form posts normalize the
// same way (numbers included); one without a MessageSid is permanent (kept, dead).
func TestNormalizeJSON(t *testing.T) {
	at := time.Unix(1764064800, 0)
	n, err := twilio.Normalize([]byte(`{"MessageSid":"SM1","From":"+15551234567","To":"+15557778888","Body":"hi","NumMedia":1,"MediaUrl0":"https://x/1","MediaContentType0":"image/png"}`), at)
	if err != nil || n.Message == nil || n.Message.Text != "hi" || len(n.Message.Media) != 1 || n.Message.Contact != "+15551234567" {
		t.Errorf("Normalize(JSON message) = %+v, %v", n.Message, err)
	}
	n, err = twilio.Normalize([]byte(`{"MessageSid":"SM1","MessageStatus":"Delivered","From":"+15557778888","To":"whatsapp:+15551234567"}`), at)
	if err != nil || n.Status == nil || n.Status.Status != "delivered" || n.Status.Contact != "+15551234567" {
		t.Errorf("Normalize(JSON status) = %+v, %v", n.Status, err)
	}
	if _, err := twilio.Normalize([]byte(`{"EventType":"something.new"}`), at); err == nil {
		t.Error("Normalize(JSON without MessageSid) = nil error, want permanent")
	}
}

func FuzzNormalize(f *testing.F) {
	f.Add([]byte(`{"MessageSid":"SM1","From":"+15551234567","To":"+15557778888","Body":"hi"}`))
	f.Add([]byte(`{"MessageSid":"MM1","From":"whatsapp:+1555","To":"whatsapp:+1415","NumMedia":"2","MediaUrl0":"u","MediaContentType0":"image/png","MediaUrl1":["a","b"]}`))
	f.Add([]byte(`{"MessageSid":"SM1","MessageStatus":"delivered","ErrorCode":"30003"}`))
	f.Add([]byte(`{"SmsSid":"SM1","Latitude":"1","Longitude":"2","From":"+1","To":"+2"}`))
	f.Add([]byte(`{"MessageSid":"SM1","From":"+15551234567","To":"+15557778888","NumMedia":3}`))
	f.Add([]byte(`{"MessageSid":"SM1","From":"+15551234567","To":" whatsapp:+15557778888"}`)) // a space before the kind
	f.Fuzz(func(t *testing.T, payload []byte) {
		n, err := twilio.Normalize(payload, time.Unix(1764064800, 0))
		providertest.CheckNormalized(t, n, err, providertest.NumberChannels)
	})
}
