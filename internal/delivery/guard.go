package delivery

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/netip"
	"net/url"
	"syscall"
	"time"
)

// ErrRefused: an endpoint whose address is not a public one, refused unless
// INBOX_DELIVERY_ALLOW_PRIVATE is set. A subscriber must not be able to make inboxd
// call what only inboxd's network can reach (a database, a cloud's metadata service).
var ErrRefused = errors.New("address refused")

// blocked are the ranges that are not public unicast addresses, beyond what netip
// classifies (loopback, private, link-local, multicast, unspecified): shared address
// space (carrier-grade NAT), IETF protocol assignments, benchmarking, the "this
// network" and reserved blocks, and IPv6's NAT64 and discard prefixes (NAT64 can reach
// any IPv4 address, private ones included).
var blocked = []netip.Prefix{
	netip.MustParsePrefix("0.0.0.0/8"),
	netip.MustParsePrefix("100.64.0.0/10"),
	netip.MustParsePrefix("192.0.0.0/24"),
	netip.MustParsePrefix("198.18.0.0/15"),
	netip.MustParsePrefix("240.0.0.0/4"),
	netip.MustParsePrefix("64:ff9b::/96"),
	netip.MustParsePrefix("64:ff9b:1::/48"),
	netip.MustParsePrefix("100::/64"),
}

// public reports whether an address may be called without INBOX_DELIVERY_ALLOW_PRIVATE.
func public(a netip.Addr) bool {
	a = a.Unmap()
	if !a.IsValid() || a.IsLoopback() || a.IsPrivate() || a.IsLinkLocalUnicast() || a.IsLinkLocalMulticast() ||
		a.IsInterfaceLocalMulticast() || a.IsMulticast() || a.IsUnspecified() || a == netip.AddrFrom4([4]byte{255, 255, 255, 255}) {
		return false
	}
	for _, p := range blocked {
		if p.Contains(a) {
			return false
		}
	}
	return true
}

// control refuses connections to addresses that are not public. It runs after name
// resolution, on the address actually dialled, so a name that resolves to a public
// address when the subscription is made and to a private one later (DNS rebinding)
// is refused too.
func control(_, address string, _ syscall.RawConn) error {
	ap, err := netip.ParseAddrPort(address)
	if err != nil {
		return fmt.Errorf("%w: %q is not an IP address and port", ErrRefused, address)
	}
	if !public(ap.Addr()) {
		return fmt.Errorf("%w: %s is a loopback, private, link-local or reserved address (INBOX_DELIVERY_ALLOW_PRIVATE=true allows it)", ErrRefused, ap.Addr())
	}
	return nil
}

// newClient is the HTTP client of deliveries: no proxy from the environment (it would
// dial the proxy, not the endpoint, and the guard would check the wrong address), no
// redirects (a 3xx is an answer, recorded as a failure: a redirect could lead to an
// address the guard would refuse, and would replay the signed body elsewhere), and
// the guard unless allowPrivate. The timeout of an attempt is its context's.
func newClient(allowPrivate bool) *http.Client {
	dialer := &net.Dialer{Timeout: 5 * time.Second, KeepAlive: 30 * time.Second}
	if !allowPrivate {
		dialer.Control = control
	}
	transport := &http.Transport{
		Proxy:                  nil,
		DialContext:            dialer.DialContext,
		ForceAttemptHTTP2:      true,
		MaxIdleConnsPerHost:    32,
		IdleConnTimeout:        90 * time.Second,
		TLSHandshakeTimeout:    5 * time.Second,
		ExpectContinueTimeout:  time.Second,
		MaxResponseHeaderBytes: 16 << 10,
	}
	return &http.Client{
		Transport:     transport,
		CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse },
	}
}

// CheckURL validates a subscription's URL: http or https, a host, and unless
// allowPrivate, a host that resolves only to public addresses (the same rule the
// dialler enforces at each delivery).
func CheckURL(ctx context.Context, raw string, allowPrivate bool) error {
	u, err := url.Parse(raw)
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" || u.Hostname() == "" {
		return errors.New("url must be an absolute http:// or https:// URL with a host, such as https://crm.example.com/hooks/inboxd")
	}
	if u.Fragment != "" {
		return errors.New("url must not have a #fragment (it is never sent)")
	}
	if allowPrivate {
		return nil
	}
	host := u.Hostname()
	if a, err := netip.ParseAddr(host); err == nil {
		if !public(a) {
			return fmt.Errorf("%w: %s is a loopback, private, link-local or reserved address; inboxd delivers only to public addresses unless INBOX_DELIVERY_ALLOW_PRIVATE=true", ErrRefused, a)
		}
		return nil
	}
	ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	addrs, err := net.DefaultResolver.LookupNetIP(ctx, "ip", host)
	if err != nil {
		return fmt.Errorf("url's host %q does not resolve (%v); subscribe once its DNS name exists", host, err)
	}
	for _, a := range addrs {
		if !public(a) {
			return fmt.Errorf("%w: %s resolves to %s, a loopback, private, link-local or reserved address; inboxd delivers only to public addresses unless INBOX_DELIVERY_ALLOW_PRIVATE=true", ErrRefused, host, a)
		}
	}
	return nil
}
