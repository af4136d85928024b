package main

import (
	"bufio"
	"bytes"
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"

	"inboxd/internal/bench"
	"inboxd/internal/pgtest"
	"inboxd/internal/provider/providertest"
)

// TestStopWithAStalledClient: a client that sent its headers and stalls its body does
// not hold up the stop: after the grace period (the ingest timeout and a second) what
// is left is closed, and serve returns nil (exit 0).
func TestStopWithAStalledClient(t *testing.T) {
	t.Parallel()
	base, logs, stop := startServeStoppable(t, map[string]string{
		"DATABASE_URL": pgtest.NewDB(t), "INBOX_ADDR": "127.0.0.1:0", "INBOX_GENERIC_SECRETS": testSecret,
		"INBOX_INGEST_TIMEOUT": "1s", "INBOX_READ_TIMEOUT": "1m",
	})
	conn, err := net.Dial("tcp", strings.TrimPrefix(base, "http://"))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	fmt.Fprintf(conn, "POST /webhooks/generic HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"+
		"webhook-id: evt\r\nwebhook-timestamp: %d\r\nwebhook-signature: v1,AAAA\r\nContent-Length: 100\r\n\r\n{\"type\"", time.Now().Unix())
	pgtest.Eventually(t, "the request is in its handler", 10*time.Second, func() (bool, error) {
		v, _, err := bench.Metric(base, "inbox_ingest_in_flight")
		return v == 1, err
	})
	start := time.Now()
	err = stop()
	took := time.Since(start)
	if err != nil || took > 5*time.Second {
		t.Errorf("stop with a stalled client: %v after %s, want nil within about 2s\n%s", err, took, logs)
	}
	conn.SetReadDeadline(time.Now().Add(time.Second))
	if _, err := io.ReadAll(conn); err != nil {
		t.Errorf("the stalled client's connection: %v, want it closed", err)
	}
}

// TestStalledHeadersAreCutOff: a client that never finishes its headers is
// disconnected at INBOX_READ_TIMEOUT, and others are served meanwhile.
func TestStalledHeadersAreCutOff(t *testing.T) {
	t.Parallel()
	base, _ := startServe(t, map[string]string{
		"DATABASE_URL": pgtest.NewDB(t), "INBOX_ADDR": "127.0.0.1:0", "INBOX_READ_TIMEOUT": "300ms",
	})
	conn, err := net.Dial("tcp", strings.TrimPrefix(base, "http://"))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	fmt.Fprint(conn, "POST /webhooks/generic HTTP/1.1\r\nHost: x\r\nContent-Type: appl")
	start := time.Now()
	conn.SetReadDeadline(start.Add(5 * time.Second))
	_, err = io.ReadAll(conn)
	if took := time.Since(start); err != nil || took > 3*time.Second {
		t.Errorf("stalled headers: connection closed after %s (%v), want about 300ms", took, err)
	}
}

// TestCLINeverPrintsAPassword: usage texts and connection errors show connection
// strings without their password.
func TestCLINeverPrintsAPassword(t *testing.T) {
	t.Parallel()
	const secret = "s3cr3t-pw"
	env := map[string]string{"DATABASE_URL": "postgres://inboxd:" + secret + "@127.0.0.1:1/inboxd?sslmode=disable"}
	getenv := func(k string) string { return env[k] }
	for _, args := range [][]string{
		{"stats", "--bogus"}, {"events", "--bogus"}, {"stats"}, {"events", "--state", "dead"},
		{"serve", "--bogus"}, {"serve"}, {"migrate"}, {"tail"}, {"tail", "--bogus"}, {"events", "replay", "1"},
	} {
		var out bytes.Buffer
		ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
		err := run(ctx, args, getenv, &out, &out)
		cancel()
		if err == nil {
			t.Errorf("inboxd %v succeeded against a closed port", args)
		}
		if strings.Contains(out.String(), secret) || (err != nil && strings.Contains(err.Error(), secret)) {
			t.Errorf("inboxd %v printed the password:\n%s\n%v", args, out.String(), err)
		}
	}
}

// TestHTTPLimits: what a client can hold before anyone knows who it is is bounded:
// headers over 32 KiB are refused with 431; a request on any route whose body stalls
// is cut off at INBOX_READ_TIMEOUT (it held /healthz and /v1 connections for
// minutes); past INBOX_MAX_CONNECTIONS a new connection waits until one closes.
func TestHTTPLimits(t *testing.T) {
	t.Parallel()
	base, _ := startServe(t, map[string]string{
		"DATABASE_URL": pgtest.NewDB(t), "INBOX_ADDR": "127.0.0.1:0", "INBOX_READ_TIMEOUT": "500ms",
		"INBOX_MAX_CONNECTIONS": "3", "INBOX_API_TOKENS": "t",
	})
	addr := strings.TrimPrefix(base, "http://")

	req, _ := http.NewRequest("GET", base+"/healthz", nil)
	req.Header.Set("User-Agent", strings.Repeat("u", 64<<10))
	if resp, err := http.DefaultClient.Do(req); err != nil || resp.StatusCode != http.StatusRequestHeaderFieldsTooLarge {
		t.Errorf("64 KiB of headers: %v %v, want 431", resp, err)
	} else {
		resp.Body.Close()
	}

	for _, path := range []string{"/healthz", "/v1/conversations"} {
		conn, err := net.Dial("tcp", addr)
		if err != nil {
			t.Fatal(err)
		}
		fmt.Fprintf(conn, "GET %s HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer t\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nab", path)
		start := time.Now()
		conn.SetReadDeadline(start.Add(10 * time.Second))
		io.ReadAll(conn) // until the server closes it
		if took := time.Since(start); took > 5*time.Second {
			t.Errorf("GET %s with a stalled body held its connection %s, want it closed near 500ms", path, took)
		}
		conn.Close()
	}

	var held []net.Conn
	for range 3 {
		c, err := net.Dial("tcp", addr)
		if err != nil {
			t.Fatal(err)
		}
		fmt.Fprint(c, "GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n") // served, then kept alive
		bufio.NewReader(c).ReadString('\n')
		held = append(held, c)
	}
	client := &http.Client{Timeout: time.Second, Transport: &http.Transport{DisableKeepAlives: true}}
	if resp, err := client.Get(base + "/healthz"); err == nil {
		resp.Body.Close()
		t.Errorf("a fourth connection past INBOX_MAX_CONNECTIONS=3 was served at once")
	}
	held[0].Close()
	client.Timeout = 10 * time.Second
	if resp, err := client.Get(base + "/healthz"); err != nil || resp.StatusCode != 200 {
		t.Errorf("after one of the three closed: %v %v, want 200", resp, err)
	} else {
		resp.Body.Close()
	}
	for _, c := range held[1:] {
		c.Close()
	}
}

// TestAdminAddr: with INBOX_ADMIN_ADDR, readiness, metrics and the admin endpoints
// move to that address, and the public one serves only webhooks and the /v1 reads.
func TestAdminAddr(t *testing.T) {
	t.Parallel()
	adminAddr := freeAddr(t)
	base, _, _ := launchServe(t, map[string]string{
		"DATABASE_URL": pgtest.NewDB(t), "INBOX_ADDR": "127.0.0.1:0", "INBOX_ADMIN_ADDR": adminAddr,
		"INBOX_GENERIC_SECRETS": testSecret, "INBOX_API_TOKENS": "read-token", "INBOX_ADMIN_TOKENS": "admin-token",
	})
	internal := "http://" + adminAddr
	get := func(url, token string) int {
		t.Helper()
		req, _ := http.NewRequest("GET", url, nil)
		req.Header.Set("Authorization", "Bearer "+token)
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		return resp.StatusCode
	}
	waitReady(t, internal, 10*time.Second) // launchServe returns once the public address listens; the admin one may follow
	for url, want := range map[string]int{
		base + "/readyz": 404, base + "/metrics": 404, base + "/v1/stats": 404, base + "/v1/events": 404,
		base + "/v1/conversations": 200, base + "/healthz": 200,
		internal + "/metrics": 200, internal + "/v1/stats": 200, internal + "/v1/events": 200,
		internal + "/v1/conversations": 404, internal + "/healthz": 200,
	} {
		token := "admin-token"
		if got := get(url, token); got != want {
			t.Errorf("GET %s = %d, want %d", url, got, want)
		}
	}
	body := []byte(`{"type":"message.received","timestamp":"2026-11-25T10:00:00Z","data":{"message_id":"m-adm","channel":"+1555000111","contact":"+1555000222"}}`)
	if status, _, b := do(t, providertest.Request(t, "generic", base, "", testSecret, "evt-adm", body, time.Now())); status != 200 {
		t.Errorf("webhook on the public address: %d %s", status, b)
	}
	if status, _, _ := do(t, providertest.Request(t, "generic", internal, "", testSecret, "evt-adm2", body, time.Now())); status != 404 {
		t.Errorf("webhook on the admin address: %d, want 404", status)
	}
}
