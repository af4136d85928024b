package provider

import (
	"errors"
	"fmt"
	"net/http"
	"strconv"
	"strings"
	"time"
)

// The reasons a webhook is refused. Ingest maps each to its status code
// (docs/webhooks.md): ErrNoSignature, ErrBadSignature and ErrStale to 401,
// ErrMalformed to 400.
var (
	ErrNoSignature  = errors.New("signature header missing")
	ErrBadSignature = errors.New("signature does not match")
	ErrStale        = errors.New("timestamp outside tolerance")
	ErrMalformed    = errors.New("malformed payload")
)

// ErrPermanent marks a stored payload that no retry can make Normalize understand:
// the event goes dead at once.
var ErrPermanent = errors.New("permanent")

// TimestampTolerance bounds replays for the schemes that sign a timestamp: older or
// future-dated requests are refused.
const TimestampTolerance = 5 * time.Minute

// MaxExternalIDBytes bounds an external id (a webhook id, a MessageSid, a Meta
// message id): real ones are under 100 bytes, and a key over ~2,700 bytes does not
// fit the unique index at all.
const MaxExternalIDBytes = 256

// RequireHeaders refuses a request that lacks any of the named signature headers.
func RequireHeaders(h http.Header, names ...string) error {
	for _, name := range names {
		if h.Get(name) == "" {
			return fmt.Errorf("%w: %s", ErrNoSignature, name)
		}
	}
	return nil
}

// CheckID refuses an external id that is empty or longer than MaxExternalIDBytes,
// naming the field it came from.
func CheckID(field, id string) error {
	switch {
	case id == "":
		return fmt.Errorf("%w: %s is required", ErrMalformed, field)
	case len(id) > MaxExternalIDBytes:
		return fmt.Errorf("%w: %s is %d bytes; the limit is %d", ErrMalformed, field, len(id), MaxExternalIDBytes)
	}
	return nil
}

// CheckTimestamp checks a signed Unix-seconds timestamp (from the header named
// header) against now, within TimestampTolerance.
func CheckTimestamp(header, ts string, now time.Time) error {
	sec, err := strconv.ParseInt(ts, 10, 64)
	if err != nil {
		return fmt.Errorf("%w: %s %q is not a Unix time in seconds", ErrBadSignature, header, ts)
	}
	// A sender that writes milliseconds is a common mistake: say so rather than
	// print a duration of 300 million years.
	if sec > now.Unix()*100 {
		return fmt.Errorf("%w: %s %s looks like milliseconds; it must be Unix seconds", ErrStale, header, ts)
	}
	at := time.Unix(sec, 0)
	d := now.Sub(at)
	if d <= TimestampTolerance && d >= -TimestampTolerance {
		return nil
	}
	if !InRange(at) {
		return fmt.Errorf("%w: %s %s is not a time of years 0000 to 9999; it must be the current Unix time in seconds", ErrStale, header, ts)
	}
	way := "behind"
	if d < 0 {
		way = "ahead of"
	}
	return fmt.Errorf("%w: %s %s (%s) is %s %s this server's clock (%s), more than the ±%s allowed; check the sender's clock",
		ErrStale, header, ts, at.UTC().Format(time.RFC3339), span(d.Abs()), way, now.UTC().Format(time.RFC3339), TimestampTolerance)
}

// span writes a duration at the scale a person reads it: 7m12s, 5h3m, 412 days.
func span(d time.Duration) string {
	switch {
	case d < time.Hour:
		return d.Round(time.Second).String()
	case d < 48*time.Hour:
		return strings.TrimSuffix(d.Round(time.Minute).String(), "0s")
	default:
		return strconv.FormatInt(int64(d/(24*time.Hour)), 10) + " days"
	}
}

// WithLogDetail attaches to a refusal a detail for the operator's log only (what the
// request was checked against, such as the URL a signature was computed over): the
// answer to the client carries err's reason without it.
func WithLogDetail(err error, detail string) error { return detailed{err, detail} }

// LogDetail returns the detail WithLogDetail attached to err, or "".
func LogDetail(err error) string {
	var d detailed
	if errors.As(err, &d) {
		return d.detail
	}
	return ""
}

type detailed struct {
	error
	detail string
}

func (d detailed) Unwrap() error { return d.error }
