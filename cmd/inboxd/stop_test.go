package main

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"net"
	"strings"
	"testing"
	"time"

	"inboxd/internal/bench"
	"inboxd/internal/pgtest"
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
