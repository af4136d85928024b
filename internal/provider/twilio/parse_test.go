package twilio

import (
	"bytes"
	"encoding/json"
	"errors"
	"net/http/httptest"
	"reflect"
	"strings"
	"testing"
	"time"

	"inboxd/internal/provider"
)

// TestParse: what ingest stores of each kind of Twilio webhook, form post or JSON,
// under which external id, and what it refuses (400) because it could never become
// a message.
func TestParse(t *testing.T) {
	unsupported := []byte(`{"EventType":"something.new","Id":"1"}`)
	for _, tc := range []struct {
		name, contentType, body string
		wantID, wantChannel     string
		wantPayload             map[string]any // the stored payload's fields that must be there (form posts)
		wantErr                 error
	}{
		{name: "inbound SMS", contentType: formType, body: string(readTestdata(t, "inbound_sms.form")),
			wantID: "SM1f0e8ae6ade43cb3c0ce4525424e404f", wantChannel: "+15557778888",
			wantPayload: map[string]any{"Body": "Hello from Twilio!", "From": "+15551234567", "NumMedia": "0"}},
		{name: "a status callback: one event per status of a message", contentType: formType, body: string(readTestdata(t, "status_undelivered.form")),
			wantID: "SM9b2f3c4d5e6f708192a3b4c5d6e7f809:undelivered", wantChannel: "+15557778888",
			wantPayload: map[string]any{"MessageStatus": "undelivered", "ErrorCode": "30003"}},
		{name: "the older SmsSid alone", contentType: formType, body: "SmsSid=SM2&From=%2B15551234567&To=%2B15557778888&Body=hi",
			wantID: "SM2", wantChannel: "+15557778888", wantPayload: map[string]any{"SmsSid": "SM2"}},
		{name: "a name sent twice is kept as both values; once, as a string", contentType: formType,
			body:   "MessageSid=SM3&From=%2B15551234567&To=%2B15557778888&Body=hi&Tag=a&Tag=b",
			wantID: "SM3", wantChannel: "+15557778888", wantPayload: map[string]any{"Body": "hi", "Tag": []any{"a", "b"}}},
		{name: "a status callback needs no To", contentType: formType, body: "MessageSid=SM4&MessageStatus=sent&From=%2B15557778888",
			wantID: "SM4:sent", wantChannel: "+15557778888", wantPayload: map[string]any{"MessageStatus": "sent"}},
		{name: "an inbound message without To", contentType: formType, body: "MessageSid=SM5&From=%2B15551234567&Body=hi", wantErr: provider.ErrMalformed},
		{name: "an inbound message without From", contentType: formType, body: "MessageSid=SM5&To=%2B15557778888&Body=hi", wantErr: provider.ErrMalformed},
		{name: "no MessageSid in a form", contentType: formType, body: "From=%2B15551234567&To=%2B15557778888", wantErr: provider.ErrMalformed},
		{name: "JSON, its media type in any case and with parameters", contentType: " Application/JSON; charset=utf-8",
			body:   `{"MessageSid":"SM6","MessageStatus":"read","From":"+15557778888","To":"+15551234567"}`,
			wantID: "SM6:read", wantChannel: "+15557778888"},
		{name: "JSON without a MessageSid is kept under a hash of its bytes", contentType: jsonType, body: string(unsupported),
			wantID: "json:12ce120587cf483017470a77ff3ad75f"}, // the first 16 bytes of its SHA-256
		{name: "JSON that is not an object", contentType: jsonType, body: `["MessageSid"]`, wantErr: provider.ErrMalformed},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r := httptest.NewRequest("POST", "/webhooks/twilio", strings.NewReader(tc.body))
			r.Header.Set("Content-Type", tc.contentType)
			events, err := parse(r, []byte(tc.body))
			if tc.wantErr != nil {
				if !errors.Is(err, tc.wantErr) {
					t.Fatalf("parse = %+v, %v; want %v", events, err, tc.wantErr)
				}
				return
			}
			if err != nil || len(events) != 1 {
				t.Fatalf("parse = %+v, %v; want one event", events, err)
			}
			e := events[0]
			if e.ExternalID != tc.wantID || e.Channel != tc.wantChannel {
				t.Errorf("external id %q on channel %q, want %q on %q", e.ExternalID, e.Channel, tc.wantID, tc.wantChannel)
			}
			if tc.contentType != formType && !bytes.Equal(e.Payload, []byte(tc.body)) {
				t.Errorf("a JSON webhook is stored as %s, want it as it came", e.Payload)
			}
			var stored map[string]any
			if err := json.Unmarshal(e.Payload, &stored); err != nil {
				t.Fatalf("stored payload %s: %v", e.Payload, err)
			}
			for name, want := range tc.wantPayload {
				if !reflect.DeepEqual(stored[name], want) {
					t.Errorf("stored %s = %#v, want %#v", name, stored[name], want)
				}
			}
		})
	}
	// Two different unsupported webhooks are two events, not one and a duplicate.
	other := []byte(`{"EventType":"something.new","Id":"2"}`)
	a, _ := parseJSON(unsupported)
	b, _ := parseJSON(other)
	if a[0].ExternalID == b[0].ExternalID {
		t.Errorf("two different JSON webhooks without a MessageSid share the id %s", a[0].ExternalID)
	}
}

// TestNormalize: what each stored Twilio webhook means. Form posts are read from
// the payload parse stores for them, so the two are tested together.
func TestNormalize(t *testing.T) {
	at := time.Date(2026, 12, 6, 10, 0, 0, 0, time.UTC)
	stored := func(form string) []byte {
		events, err := parse(formRequest([]byte(form)), []byte(form))
		if err != nil {
			t.Fatalf("parse(%s): %v", form, err)
		}
		return events[0].Payload
	}
	text := func(id, channel, contact, body string) *provider.Message {
		return &provider.Message{ID: id, Direction: "inbound", Type: "text", Channel: channel, Contact: contact,
			Sender: contact, Recipient: channel, Text: body, SentAt: at, Status: "received"}
	}
	with := func(m *provider.Message, change func(*provider.Message)) *provider.Message {
		change(m)
		return m
	}
	for _, tc := range []struct {
		name     string
		payload  []byte
		want     provider.Normalized
		describe string
	}{
		{"inbound SMS", stored(string(readTestdata(t, "inbound_sms.form"))),
			provider.Normalized{Message: text("SM1f0e8ae6ade43cb3c0ce4525424e404f", "+15557778888", "+15551234567", "Hello from Twilio!")}, "message"},
		{"WhatsApp image: the channel keeps its kind, the contact is the number; the profile name is the contact's",
			stored(string(readTestdata(t, "inbound_whatsapp_media.form"))),
			provider.Normalized{Message: with(text("MM4c8a07ae1d5a4f0a1e6f3e5c8e2d7b9a", "whatsapp:+14155238886", "+15551234567", ""), func(m *provider.Message) {
				m.Type, m.ContactName = "image", "Alice"
				m.Media = []provider.Media{{URL: "https://api.twilio.com/2010-04-01/Accounts/AC00000000000000000000000000000000/Messages/MM4c8a07ae1d5a4f0a1e6f3e5c8e2d7b9a/Media/ME00000000000000000000000000000000", ContentType: "image/jpeg"}}
			})}, "message"},
		{"a status with its error", stored(string(readTestdata(t, "status_undelivered.form"))),
			provider.Normalized{Status: &provider.Status{MessageID: "SM9b2f3c4d5e6f708192a3b4c5d6e7f809", Contact: "+15551234567", Status: "undelivered", At: at,
				Error: json.RawMessage(`{"code":"30003","message":"Unreachable destination handset"}`)}}, "status undelivered"},
		{"a status without an error", stored(string(readTestdata(t, "status_delivered.form"))),
			provider.Normalized{Status: &provider.Status{MessageID: "SM9b2f3c4d5e6f708192a3b4c5d6e7f809", Contact: "+15551234567", Status: "delivered", At: at}}, "status delivered"},
		{"the older SmsSid alone", stored("SmsSid=SM2&From=%2B15551234567&To=%2B15557778888&Body=hi"),
			provider.Normalized{Message: text("SM2", "+15557778888", "+15551234567", "hi")}, "message"},
		{"only the sender's side has a kind: the channel takes it",
			[]byte(`{"MessageSid":"SM3","From":"whatsapp:+15551234567","To":"+15557778888","Body":"hi"}`),
			provider.Normalized{Message: text("SM3", "whatsapp:+15557778888", "+15551234567", "hi")}, "message"},
		{"only our side has a kind: the channel keeps it",
			[]byte(`{"MessageSid":"SM3","From":"+15551234567","To":"whatsapp:+15557778888","Body":"hi"}`),
			provider.Normalized{Message: text("SM3", "whatsapp:+15557778888", "+15551234567", "hi")}, "message"},
		{"a location, with its address and label",
			[]byte(`{"MessageSid":"SM4","From":"+15551234567","To":"+15557778888","Latitude":"52.5","Longitude":"13.4","Address":"Alexanderplatz","Label":"Meet here"}`),
			provider.Normalized{Message: with(text("SM4", "+15557778888", "+15551234567", ""), func(m *provider.Message) {
				m.Type = "location"
				m.Content = json.RawMessage(`{"address":"Alexanderplatz","label":"Meet here","latitude":"52.5","longitude":"13.4"}`)
			})}, "message"},
		{"a latitude alone is not a location",
			[]byte(`{"MessageSid":"SM5","From":"+15551234567","To":"+15557778888","Latitude":"52.5","Body":"hi"}`),
			provider.Normalized{Message: text("SM5", "+15557778888", "+15551234567", "hi")}, "message"},
		{"media with a caption is a text message with media; a missing URL is skipped; at most ten",
			[]byte(`{"MessageSid":"SM6","From":"+15551234567","To":"+15557778888","Body":"look","NumMedia":"12",` +
				`"MediaUrl1":"u1","MediaContentType1":"image/png","MediaUrl9":"u9","MediaContentType9":"video/mp4","MediaUrl10":"u10","MediaUrl11":"u11"}`),
			provider.Normalized{Message: with(text("SM6", "+15557778888", "+15551234567", "look"), func(m *provider.Message) {
				m.Media = []provider.Media{{URL: "u1", ContentType: "image/png"}, {URL: "u9", ContentType: "video/mp4"}}
			})}, "message"},
		{"a field as an array of one, or of several: the first value, as url.Values.Get reads a form",
			[]byte(`{"MessageSid":["SM7"],"From":"+15551234567","To":"+15557778888","Body":["first","second"]}`),
			provider.Normalized{Message: text("SM7", "+15557778888", "+15551234567", "first")}, "message"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, err := Normalize(tc.payload, at)
			if err != nil {
				t.Fatalf("Normalize(%s): %v", tc.payload, err)
			}
			if !reflect.DeepEqual(got.Message, tc.want.Message) {
				t.Errorf("message\n got %+v\nwant %+v", got.Message, tc.want.Message)
			}
			if !reflect.DeepEqual(got.Status, tc.want.Status) {
				t.Errorf("status\n got %+v\nwant %+v", got.Status, tc.want.Status)
			}
			if d := describe(tc.payload); d != tc.describe {
				t.Errorf("describe = %q, want %q", d, tc.describe)
			}
		})
	}
	for name, payload := range map[string]string{
		"no MessageSid":           `{"EventType":"something.new"}`,
		"an inbound without To":   `{"MessageSid":"SM8","From":"+15551234567","Body":"hi"}`,
		"an inbound without From": `{"MessageSid":"SM8","To":"+15557778888","Body":"hi"}`,
		"not JSON":                `MessageSid=SM8`,
	} {
		if _, err := Normalize([]byte(payload), at); !errors.Is(err, provider.ErrPermanent) {
			t.Errorf("%s: Normalize = %v, want a permanent error (the event goes dead, kept)", name, err)
		}
	}
	if d := describe([]byte(`{"EventType":"something.new"}`)); d != "unsupported" {
		t.Errorf("describe(no MessageSid) = %q, want unsupported", d)
	}
}
