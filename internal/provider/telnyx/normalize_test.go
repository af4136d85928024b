package telnyx_test

import (
	"os"
	"testing"
	"time"

	"inboxd/internal/provider/providertest"
	"inboxd/internal/provider/telnyx"
)

func FuzzNormalize(f *testing.F) {
	for _, name := range []string{"message_received.json", "message_sent.json", "message_finalized.json"} {
		b, err := os.ReadFile("testdata/" + name)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(b)
	}
	f.Add([]byte(`{"data":{"event_type":"message.received","payload":{"id":"x","from":{"phone_number":"a"},"to":[]}}}`))
	f.Add([]byte(`{"data":{"event_type":"message.sent","payload":{"id":"x","from":{"phone_number":"a"},"to":[{"phone_number":"b"}],"sent_at":"9999-12-31T23:59:59-23:59"}}}`))
	// A blank number on the other side of each direction: a missing one, not an address.
	f.Add([]byte(`{"data":{"event_type":"message.received","payload":{"id":"x","from":{"phone_number":"+15551234567"},"to":[{"phone_number":" "}]}}}`))
	f.Add([]byte(`{"data":{"event_type":"message.sent","payload":{"id":"x","from":{"phone_number":"+15551234567"},"to":[{"phone_number":" "}]}}}`))
	f.Fuzz(func(t *testing.T, payload []byte) {
		n, err := telnyx.Normalize(payload, time.Unix(1764064800, 0))
		providertest.CheckNormalized(t, n, err, providertest.NumberChannels)
	})
}
