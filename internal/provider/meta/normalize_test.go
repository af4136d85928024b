package meta_test

import (
	"errors"
	"testing"
	"time"

	"inboxd/internal/provider"
	"inboxd/internal/provider/meta"
	"inboxd/internal/provider/providertest"
)

func FuzzNormalize(f *testing.F) {
	f.Add([]byte(`{"metadata":{"phone_number_id":"1"},"contacts":[{"wa_id":"15551234567","profile":{"name":"A"}}],"message":{"from":"15551234567","id":"w1","timestamp":"1749416383","type":"text","text":{"body":"hi"}}}`))
	f.Add([]byte(`{"metadata":{"phone_number_id":"1"},"contacts":[{"user_id":"US.1"}],"message":{"from_user_id":"US.1","id":"w2","type":"interactive","interactive":{"list_reply":{"id":"x","title":"y"}}}}`))
	f.Add([]byte(`{"metadata":{"phone_number_id":"1"},"message":{"from":"1","id":"w3","type":"image","image":{"id":"m","mime_type":"image/jpeg"}}}`))
	f.Add([]byte(`{"metadata":{"phone_number_id":"1"},"status":{"id":"w1","status":"read","timestamp":"1","errors":[{"code":1}]}}`))
	// Times past year 9999 (the first a second after RFC 3339's last; the largest
	// int64, which time.Unix wraps to a year before 0).
	f.Add([]byte(`{"metadata":{"phone_number_id":"1"},"message":{"from":"1","id":"w4","timestamp":"253402300800","type":"text","text":{"body":"hi"}}}`))
	f.Add([]byte(`{"metadata":{"phone_number_id":"1"},"status":{"id":"w1","status":"read","timestamp":"9223372036854775807"}}`))
	// Our number's id as Meta writes it (15 digits, not a phone number), and a blank one.
	f.Add([]byte(`{"metadata":{"phone_number_id":"100000000000001"},"message":{"from":"15551234567","id":"w5","type":"text","text":{"body":"hi"}}}`))
	f.Add([]byte(`{"metadata":{"phone_number_id":" "},"message":{"from":"15551234567","id":"w6","type":"text","text":{"body":"hi"}}}`))
	f.Add([]byte(`{"status":{"id":"w1","status":"read","timestamp":"1","recipient_user_id":" US.1 "}}`)) // a status's contact, spaced
	f.Fuzz(func(t *testing.T, payload []byte) {
		n, err := meta.Normalize(payload, time.Unix(1764064800, 0))
		providertest.CheckNormalized(t, n, err, providertest.IDChannels)
	})
}

// TestAddressSpelling: our number's id is kept as Meta writes it, without the
// spaces around it, and a blank one is refused as a missing one is; a user id is
// trimmed, as the contact filter trims what it is given, so that a search finds it.
func TestAddressSpelling(t *testing.T) {
	n, err := meta.Normalize([]byte(`{"metadata":{"phone_number_id":" 100000000000001 "},"contacts":[{"user_id":" US.1 "}],"message":{"from_user_id":" US.1 ","id":"w1","type":"text","text":{"body":"hi"}}}`), time.Now())
	if err != nil || n.Message.Channel != "100000000000001" || n.Message.Contact != "US.1" {
		t.Errorf("Normalize = %+v, %v; want channel 100000000000001 and contact US.1", n.Message, err)
	}
	if _, err := meta.Normalize([]byte(`{"metadata":{"phone_number_id":" "},"message":{"from":"15551234567","id":"w2","type":"text","text":{"body":"hi"}}}`), time.Now()); !errors.Is(err, provider.ErrPermanent) {
		t.Errorf("a blank phone_number_id: %v, want a permanent error", err)
	}
	n, err = meta.Normalize([]byte(`{"status":{"id":"w1","status":"read","timestamp":"1","recipient_user_id":" US.1 "}}`), time.Now())
	if err != nil || n.Status.Contact != "US.1" {
		t.Errorf("a status's user id: %+v, %v; want US.1", n.Status, err)
	}
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

// TestMessageTime: Meta's Unix seconds become the message time when they are a time
// after 1970 the API can write back (years up to 9999); otherwise the receipt time.
func TestMessageTime(t *testing.T) {
	received := time.Date(2026, 12, 5, 10, 0, 0, 0, time.UTC)
	for timestamp, want := range map[string]time.Time{
		"1749416383":          time.Unix(1749416383, 0).UTC(),
		"253402300799":        time.Date(9999, 12, 31, 23, 59, 59, 0, time.UTC),
		"253402300800":        received,
		"9223372036854775807": received,
		"0":                   received,
		"-1":                  received,
		"soon":                received,
	} {
		payload := `{"metadata":{"phone_number_id":"1"},"message":{"from":"1","id":"w","timestamp":"` + timestamp + `","type":"text","text":{"body":"hi"}}}`
		n, err := meta.Normalize([]byte(payload), received)
		if err != nil || n.Message == nil || !n.Message.SentAt.Equal(want) {
			t.Errorf("timestamp %q: Normalize = %+v, %v; want sent at %v", timestamp, n.Message, err, want)
		}
	}
}
