package meta_test

import (
	"testing"
	"time"

	"inboxd/internal/provider/meta"
	"inboxd/internal/provider/providertest"
)

func FuzzNormalize(f *testing.F) {
	f.Add([]byte(`{"metadata":{"phone_number_id":"1"},"contacts":[{"wa_id":"15551234567","profile":{"name":"A"}}],"message":{"from":"15551234567","id":"w1","timestamp":"1749416383","type":"text","text":{"body":"hi"}}}`))
	f.Add([]byte(`{"metadata":{"phone_number_id":"1"},"contacts":[{"user_id":"US.1"}],"message":{"from_user_id":"US.1","id":"w2","type":"interactive","interactive":{"list_reply":{"id":"x","title":"y"}}}}`))
	f.Add([]byte(`{"metadata":{"phone_number_id":"1"},"message":{"from":"1","id":"w3","type":"image","image":{"id":"m","mime_type":"image/jpeg"}}}`))
	f.Add([]byte(`{"metadata":{"phone_number_id":"1"},"status":{"id":"w1","status":"read","timestamp":"1","errors":[{"code":1}]}}`))
	f.Fuzz(func(t *testing.T, payload []byte) {
		n, err := meta.Normalize(payload, time.Unix(1764064800, 0))
		providertest.CheckNormalized(t, n, err)
	})
}

// TestStatusContact: a status names its recipient as a message names its sender
// (E.164 from recipient_id, else the business-scoped user id), so that erasure and
// export find it.
func TestStatusContact(t *testing.T) {
	for payload, want := range map[string]string{
		`{"status":{"id":"w1","status":"read","timestamp":"1","recipient_id":"447700900123"}}`:                 "+447700900123",
		`{"status":{"id":"w1","status":"read","timestamp":"1","recipient_user_id":"US.13491208655302741918"}}`: "US.13491208655302741918",
		`{"status":{"id":"w1","status":"read","timestamp":"1"}}`:                                               "",
	} {
		n, err := meta.Normalize([]byte(payload), time.Now())
		if err != nil || n.Status == nil || n.Status.Contact != want {
			t.Errorf("Normalize(%s) = %+v, %v; want contact %q", payload, n.Status, err, want)
		}
	}
}
