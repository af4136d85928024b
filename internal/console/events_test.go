package console

import (
	"errors"
	"testing"
	"time"

	"inboxd/internal/readmodel"
)

func TestParseTime(t *testing.T) {
	for v, want := range map[string]time.Time{
		"":                          {},
		"2026-12-03T14:05":          time.Date(2026, 12, 3, 14, 5, 0, 0, time.UTC), // datetime-local is UTC
		"2026-12-03T14:05:09":       time.Date(2026, 12, 3, 14, 5, 9, 0, time.UTC),
		"2026-12-03T15:05:09+01:00": time.Date(2026, 12, 3, 14, 5, 9, 0, time.UTC),
	} {
		if got, err := parseTime("from", v); err != nil || !got.Equal(want) {
			t.Errorf("parseTime(%q) = %v, %v; want %v", v, got, err, want)
		}
	}
	for _, v := range []string{"yesterday", "2026-12-03", "2026-12-03T14", "2026-12-03T14:05Z"} {
		if _, err := parseTime("from", v); !errors.Is(err, readmodel.ErrBadFilter) {
			t.Errorf("parseTime(%q) = %v, want a bad filter", v, err)
		}
	}
}

// FuzzParseTime: a console time filter is refused as a bad filter, or read as a
// time that its RFC 3339 form, and its datetime-local form to the second (UTC), read
// back to.
func FuzzParseTime(f *testing.F) {
	for _, v := range []string{"2026-12-03T14:05", "2026-12-03T14:05:09", "2026-12-03T15:05:09.5+01:00", "2026-12-03", ""} {
		f.Add(v)
	}
	f.Fuzz(func(t *testing.T, v string) {
		got, err := parseTime("from", v)
		if err != nil {
			if !errors.Is(err, readmodel.ErrBadFilter) {
				t.Fatalf("parseTime(%q) = %v, not a bad filter", v, err)
			}
			return
		}
		if v == "" {
			if !got.IsZero() {
				t.Fatalf("parseTime(\"\") = %v, want the zero time (no filter)", got)
			}
			return
		}
		for again, want := range map[string]time.Time{
			got.Format(time.RFC3339Nano):            got,
			got.UTC().Format("2006-01-02T15:04:05"): got.Truncate(time.Second),
		} {
			if t2, err := parseTime("from", again); err != nil || !t2.Equal(want) {
				t.Fatalf("parseTime(%q) = %v, but %q reads as %v, %v; want %v", v, got, again, t2, err, want)
			}
		}
	})
}
