package provider

import (
	"strconv"
	"strings"
	"testing"
	"time"
)

func TestLane(t *testing.T) {
	long := strings.Repeat("x", MaxChannel+10)
	for _, c := range []struct{ stored, channel, want string }{
		{"meta", "100000000000001", "meta/100000000000001"},
		{"generic:acme", "support", "generic:acme/support"},
		{"twilio", "", "twilio/"},
		{"generic", long, "generic/" + long[:MaxChannel]},
		// Cut before a character that would not fit whole (é is two bytes).
		{"generic", strings.Repeat("x", MaxChannel-1) + "é", "generic/" + strings.Repeat("x", MaxChannel-1)},
		// What Postgres text refuses becomes U+FFFD.
		{"generic", "a\x00b", "generic/a\uFFFDb"},
		{"twilio", "+1555\xff", "twilio/+1555\uFFFD"},
	} {
		if got := Lane(c.stored, c.channel); got != c.want {
			t.Errorf("Lane(%q, %q) = %q, want %q", c.stored, c.channel, got, c.want)
		}
	}
}

// TestE164: a "+" is a number's only at its start ("1+555…" is not a number, it is
// text to keep as it came).
func TestE164(t *testing.T) {
	for in, want := range map[string]string{
		"+1 (555) 222-3333": "+15552223333",
		" 15552223333 ":     "+15552223333",
		"1+5552223333":      "1+5552223333",
		"++15552223333":     "++15552223333",
	} {
		if got := E164(in); got != want {
			t.Errorf("E164(%q) = %q, want %q", in, got, want)
		}
	}
}

// TestConfigList: a comma-separated setting's values are trimmed and blanks left out
// (a key pasted with a space after its comma is still the key).
func TestConfigList(t *testing.T) {
	c := Config{Values: map[string]string{"K": " whsec_a , ,whsec_b,"}}
	if got := c.List("K"); strings.Join(got, "|") != "whsec_a|whsec_b" {
		t.Errorf("List = %q, want [whsec_a whsec_b]", got)
	}
}

// TestMediaKind and NullIfEmpty: the small readings every normalizer shares.
func TestMediaKind(t *testing.T) {
	for ct, want := range map[string]string{"image/jpeg": "image", "audio/ogg": "audio", "video/mp4": "video", "application/pdf": "document", "": "document"} {
		if got := MediaKind(ct); got != want {
			t.Errorf("MediaKind(%q) = %q, want %q", ct, got, want)
		}
	}
	for in, want := range map[string]string{"": "", "null": "", `{"code":1}`: `{"code":1}`} {
		if got := string(NullIfEmpty([]byte(in))); got != want {
			t.Errorf("NullIfEmpty(%q) = %q, want %q", in, got, want)
		}
	}
}

// FuzzE164: any address is read without a panic into what it is stored and searched
// as, which is stable (a stored address normalized again is itself, so a search for
// it finds it) and is either the trimmed text or "+" and 7 to 15 digits.
func FuzzE164(f *testing.F) {
	for _, s := range []string{"+1 (555) 222-3333", "15552223333", " +44.20.7946.0958 ", "whatsapp:+15552223333", "+", "123456", "1234567890123456", "++15552223333", "1+5552223333"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		got := E164(s)
		if again := E164(got); again != got {
			t.Fatalf("E164(%q) = %q, but E164(%q) = %q", s, got, got, again)
		}
		if got == strings.TrimSpace(s) {
			return
		}
		digits := strings.TrimPrefix(got, "+")
		if len(digits) == len(got) || len(digits) < 7 || len(digits) > 15 || strings.Trim(digits, "0123456789") != "" {
			t.Fatalf("E164(%q) = %q: neither the text nor a phone number", s, got)
		}
	})
}

// TestCheckTimestamp: a timestamp within the tolerance passes; one outside says which
// way, by how much at a readable scale, and both clocks; milliseconds are named.
func TestCheckTimestamp(t *testing.T) {
	now := time.Date(2026, 12, 6, 0, 18, 33, 0, time.UTC)
	unix := func(d time.Duration) string { return strconv.FormatInt(now.Add(d).Unix(), 10) }
	for ts, want := range map[string]string{
		unix(-5 * time.Minute):                "",
		unix(5 * time.Minute):                 "",
		unix(-7*time.Minute - 12*time.Second): "is 7m12s behind this server's clock (2026-12-06T00:18:33Z), more than the ±5m0s allowed",
		unix(5*time.Hour + 3*time.Minute):     "(2026-12-06T05:21:33Z) is 5h3m ahead of this server's clock",
		"1":                                   "webhook-timestamp 1 (1970-01-01T00:00:01Z) is 20793 days behind",
		"-9223372036854775807":                "webhook-timestamp -9223372036854775807 is not a time of years 0000 to 9999",
		unix(0) + "000":                       "looks like milliseconds",
		"soon":                                `"soon" is not a Unix time in seconds`,
	} {
		err := CheckTimestamp("webhook-timestamp", ts, now)
		if (want == "") != (err == nil) || (err != nil && !strings.Contains(err.Error(), want)) {
			t.Errorf("CheckTimestamp(%s) = %v, want %q", ts, err, want)
		}
	}
}

func TestMatches(t *testing.T) {
	for _, tc := range []struct {
		filter, stored string
		want           bool
	}{
		{"generic", "generic", true},
		{"generic", "generic:acme", true},
		{"generic:acme", "generic:acme", true},
		{"generic:acme", "generic", false},
		{"generic:acme", "generic:acmex", false},
		{"generic", "genericx", false},
		{"twilio", "generic", false},
	} {
		if got := Matches(tc.filter, tc.stored); got != tc.want {
			t.Errorf("Matches(%q, %q) = %v, want %v", tc.filter, tc.stored, got, tc.want)
		}
	}
}
