package delivery

import (
	"context"
	"errors"
	"net/netip"
	"strings"
	"testing"
	"time"

	"inboxd/internal/provider/generic"
)

func TestPublic(t *testing.T) {
	for _, tc := range []struct {
		addr string
		ok   bool
	}{
		{"93.184.215.14", true},
		{"2606:2800:21f:cb07:6820:80da:af6b:8b2c", true},
		{"127.0.0.1", false},
		{"127.8.9.10", false},
		{"::1", false},
		{"10.1.2.3", false},
		{"172.16.0.1", false},
		{"192.168.1.1", false},
		{"169.254.169.254", false}, // cloud metadata
		{"fd00:ec2::254", false},   // AWS's IPv6 metadata
		{"fe80::1", false},
		{"100.64.0.1", false}, // carrier-grade NAT
		{"0.0.0.0", false},
		{"::", false},
		{"0.1.2.3", false},
		{"224.0.0.1", false},
		{"255.255.255.255", false},
		{"198.18.0.1", false},
		{"::ffff:127.0.0.1", false}, // IPv4-mapped loopback
		{"::ffff:8.8.8.8", true},
		{"64:ff9b::a00:1", false},   // NAT64 of 10.0.0.1
		{"64:ff9b:1::a00:1", false}, // local-use NAT64
		{"192.0.0.9", false},        // IETF protocol assignments
		{"240.0.0.1", false},        // reserved
		{"100::1", false},           // discard-only
		{"ff02::1", false},          // link-local multicast
		{"ff05::2", false},          // site-local multicast
		{"192.0.1.1", true},         // beside 192.0.0.0/24
		{"198.20.0.1", true},        // beside 198.18.0.0/15
	} {
		if got := public(netip.MustParseAddr(tc.addr)); got != tc.ok {
			t.Errorf("public(%s) = %v, want %v", tc.addr, got, tc.ok)
		}
	}
}

func TestCheckURL(t *testing.T) {
	ctx := context.Background()
	for _, tc := range []struct {
		url, want string // want: part of the error; "" for none
	}{
		{"https://93.184.215.14/hooks", ""},
		{"http://127.0.0.1:9000/hooks", "INBOX_DELIVERY_ALLOW_PRIVATE"},
		{"http://[::1]/hooks", "INBOX_DELIVERY_ALLOW_PRIVATE"},
		{"http://localhost/hooks", "INBOX_DELIVERY_ALLOW_PRIVATE"},
		{"http://169.254.169.254/latest/meta-data", "INBOX_DELIVERY_ALLOW_PRIVATE"},
		{"ftp://example.com/", "http:// or https://"},
		{"/relative", "http:// or https://"},
		{"https:///nohost", "http:// or https://"},
		{"https://example.com/#frag", "fragment"},
		{"https://no-such-host.invalid/", "does not resolve"},
	} {
		err := CheckURL(ctx, tc.url, false)
		if (err == nil) != (tc.want == "") || (err != nil && !strings.Contains(err.Error(), tc.want)) {
			t.Errorf("CheckURL(%q) = %v, want an error containing %q", tc.url, err, tc.want)
		}
	}
	if err := CheckURL(ctx, "http://127.0.0.1:9000/hooks", true); err != nil {
		t.Errorf("with AllowPrivate: %v", err)
	}
}

// TestControlRefusesPrivate: the dialler's guard, which runs on the address actually
// dialled (after DNS), refuses what CheckURL refuses.
func TestControlRefusesPrivate(t *testing.T) {
	if err := control("tcp", "127.0.0.1:80", nil); !errors.Is(err, ErrRefused) {
		t.Errorf("control(127.0.0.1:80) = %v, want ErrRefused", err)
	}
	if err := control("tcp", "93.184.215.14:443", nil); err != nil {
		t.Errorf("control(public) = %v", err)
	}
}

func TestClassify(t *testing.T) {
	now := time.Date(2026, 12, 3, 12, 0, 0, 0, time.UTC)
	for _, tc := range []struct {
		status     int
		retryAfter string
		delivered  bool
		retry      bool
		after      time.Duration
	}{
		{200, "", true, false, 0},
		{204, "", true, false, 0},
		{299, "", true, false, 0},
		{500, "", false, true, 0},
		{503, "7", false, true, 7 * time.Second},
		{429, "Thu, 03 Dec 2026 12:00:30 GMT", false, true, 30 * time.Second},
		{429, "soon", false, true, 0},
		{429, "-5", false, true, 0},
		{408, "", false, true, 0},
		{400, "", false, false, 0},
		{401, "", false, false, 0},
		{404, "", false, false, 0},
		{410, "", false, false, 0},
		{301, "", false, false, 0},
		{307, "", false, false, 0},
	} {
		r := classify(tc.status, tc.retryAfter, []byte("nope"), now)
		if (r.err == "") != tc.delivered || r.retry != tc.retry || r.retryAfter != tc.after || r.status != tc.status {
			t.Errorf("classify(%d, %q) = %+v, want delivered %v, retry %v after %v", tc.status, tc.retryAfter, r, tc.delivered, tc.retry, tc.after)
		}
	}
	if r := classify(503, "", []byte(strings.Repeat("x", 1000)), now); len(r.err) > 300 {
		t.Errorf("error text is %d bytes: a response body must be clipped", len(r.err))
	}
}

func TestDelayHonoursRetryAfterWithinBounds(t *testing.T) {
	if d := (result{retryAfter: 90 * time.Second}).delay(1); d != 90*time.Second {
		t.Errorf("delay with Retry-After 90s = %v", d)
	}
	if d := (result{retryAfter: 48 * time.Hour}).delay(1); d != maxRetryAfter {
		t.Errorf("delay with Retry-After 48h = %v, want the cap %v", d, maxRetryAfter)
	}
	if d := (result{}).delay(1); d < 500*time.Millisecond || d > time.Second {
		t.Errorf("delay after attempt 1 = %v, want Backoff's 0.5-1s", d)
	}
}

// FuzzClassify: any status, Retry-After and body give a result, never a panic, a
// negative delay, or an error text longer than a line's worth.
func FuzzClassify(f *testing.F) {
	f.Add(503, "120", []byte("busy"))
	f.Add(429, "Wed, 21 Oct 2015 07:28:00 GMT", []byte{0xff, 0xfe})
	f.Add(200, "", []byte(nil))
	f.Add(503, "10000000000", []byte(nil)) // more seconds than a Duration holds
	f.Fuzz(func(t *testing.T, status int, retryAfter string, body []byte) {
		if len(body) > responseCap {
			body = body[:responseCap]
		}
		r := classify(status, retryAfter, body, time.Now())
		if r.retryAfter < 0 || len(r.err) > 400 {
			t.Fatalf("classify(%d, %q) = %+v", status, retryAfter, r)
		}
		if d := r.delay(3); d < 0 || d > maxRetryAfter+time.Hour {
			t.Fatalf("delay %v", d)
		}
	})
}

func TestNewSecretWorksWithTheSigner(t *testing.T) {
	s := newSecret()
	if !strings.HasPrefix(s, "whsec_") || s == newSecret() {
		t.Fatalf("newSecret() = %q", s)
	}
	if _, err := generic.ParseKeys([]string{s}); err != nil {
		t.Errorf("a new secret is not one inboxd itself would accept: %v", err)
	}
}
