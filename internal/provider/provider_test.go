package provider

import (
	"strings"
	"testing"
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
