package main

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"inboxd/internal/bench"
	"inboxd/internal/pgtest"
)

var (
	binaryOnce sync.Once
	binaryPath string
	binaryErr  error
)

// inboxdBinary builds the binary once per test run (INBOXD_TEST_BINARY runs another
// build instead: an older one, to see the figures it gives).
func inboxdBinary(t *testing.T) string {
	t.Helper()
	if b := os.Getenv("INBOXD_TEST_BINARY"); b != "" {
		return b
	}
	binaryOnce.Do(func() {
		dir, err := os.MkdirTemp("", "inboxd-bin-")
		if err != nil {
			binaryErr = err
			return
		}
		binaryPath = filepath.Join(dir, "inboxd")
		if out, err := exec.Command("go", "build", "-o", binaryPath, ".").CombinedOutput(); err != nil {
			binaryErr = fmt.Errorf("build: %v\n%s", err, out)
		}
	})
	if binaryErr != nil {
		t.Fatal(binaryErr)
	}
	return binaryPath // shared by the run's tests; in the OS's temp dir
}

// startBinary runs the binary with env until t ends and returns its base URL.
func startBinary(t *testing.T, env map[string]string) string {
	t.Helper()
	addr := freeAddr(t)
	ctx, cancel := context.WithCancel(context.Background())
	cmd := exec.CommandContext(ctx, inboxdBinary(t))
	// GOGC=10: collect often, so that the heap in use is close to what is live (these
	// tests read it to see what a client can make the process hold).
	cmd.Env = append(os.Environ(), "INBOX_ADDR="+addr, "GOGC=10", "INBOX_DEV=true")
	for k, v := range env {
		cmd.Env = append(cmd.Env, k+"="+v)
	}
	var logs bytes.Buffer
	cmd.Stdout, cmd.Stderr = &logs, &logs
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cancel(); cmd.Wait() })
	base := "http://" + addr
	waitReady(t, base, 60*time.Second)
	return base
}

// freeAddr returns a loopback address no one listens on now (the OS's pick).
func freeAddr(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().String()
}

// heap reads the binary's heap in use, after a collection has had a chance to run.
func heap(t *testing.T, base string) float64 {
	t.Helper()
	v, ok, err := bench.Metric(base, "go_memstats_heap_inuse_bytes")
	if err != nil || !ok {
		t.Fatalf("heap: %v (served: %v)", err, ok)
	}
	return v
}

const mib = 1 << 20

// TestStalledBodiesHoldBoundedMemory reproduces the security review's finding 3: 100
// unsigned requests that each announce a body just under the limit (Meta's, the
// largest), send all but the last kilobyte and stall. Before, the heap grew by
// hundreds of megabytes (each body buffered, a slot each); now the body memory
// budget (INBOX_BODY_MEMORY, 64 MiB) bounds it, and the rest are refused at once.
func TestStalledBodiesHoldBoundedMemory(t *testing.T) {
	t.Parallel()
	base := startBinary(t, map[string]string{
		"DATABASE_URL": pgtest.NewDB(t), "INBOX_META_APP_SECRET": "meta-secret-meta-secret", "INBOX_META_VERIFY_TOKEN": "v",
		"INBOX_READ_TIMEOUT": "1m",
	})
	before := heap(t, base)
	const n, size = 100, 4<<20 - 1024
	chunk := bytes.Repeat([]byte("x"), 64<<10)
	var wg sync.WaitGroup
	var mu sync.Mutex
	refused := 0
	conns := make([]net.Conn, n)
	for i := range n {
		wg.Go(func() {
			c, err := net.Dial("tcp", strings.TrimPrefix(base, "http://"))
			if err != nil {
				t.Error(err)
				return
			}
			conns[i] = c
			fmt.Fprintf(c, "POST /webhooks/meta HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nX-Hub-Signature-256: sha256=00\r\nContent-Length: %d\r\n\r\n", size)
			for sent := 0; sent+len(chunk) <= size-1024; sent += len(chunk) {
				if _, err := c.Write(chunk); err != nil {
					mu.Lock()
					refused++ // answered and closed before its body was read
					mu.Unlock()
					return
				}
			}
		})
	}
	wg.Wait()
	time.Sleep(time.Second) // the admitted bodies are in
	during := heap(t, base)
	for _, c := range conns {
		if c != nil {
			c.Close()
		}
	}
	growth := (during - before) / mib
	t.Logf("heap in use: %.0f MiB before, %.0f MiB with %d stalled 4 MiB bodies (+%.0f MiB); %d refused at once", before/mib, during/mib, n, growth, refused)
	if growth > 64+32 {
		t.Errorf("the heap grew by %.0f MiB with stalled bodies, want at most the 64 MiB body budget and a margin", growth)
	}
	if refused == 0 {
		t.Error("no request was refused: the test did not reach the budget")
	}
}

// TestSpanFloodHoldsBoundedMemory reproduces the review's finding 1: with the trace
// collector unreachable, 300 unsigned POSTs with a 1 MiB User-Agent. Before, each was
// answered 401 and its span, holding the whole User-Agent, waited in the export
// queue: hundreds of megabytes. Now headers over 32 KiB are refused (431) before any
// span exists, and what a span keeps of a client's values is cut to 256 bytes.
func TestSpanFloodHoldsBoundedMemory(t *testing.T) {
	t.Parallel()
	base := startBinary(t, map[string]string{
		"DATABASE_URL": pgtest.NewDB(t), "INBOX_GENERIC_SECRETS": testSecret,
		"OTEL_EXPORTER_OTLP_ENDPOINT": "http://127.0.0.1:1", // nobody there: spans queue up
	})
	before := heap(t, base)
	ua := strings.Repeat("u", 1<<20)
	client := &http.Client{Timeout: 10 * time.Second}
	var wg sync.WaitGroup
	for w := range 30 { // 300 requests; a refused one takes the server's 500 ms close
		wg.Go(func() {
			for i := range 10 {
				req, _ := http.NewRequest("POST", base+"/webhooks/generic", strings.NewReader(`{}`))
				req.Header.Set("Content-Type", "application/json")
				req.Header.Set("User-Agent", ua)
				req.Header.Set("webhook-id", fmt.Sprintf("flood-%d-%d", w, i))
				req.Header.Set("webhook-timestamp", fmt.Sprint(time.Now().Unix()))
				req.Header.Set("webhook-signature", "v1,AAAA")
				resp, err := client.Do(req)
				if err != nil {
					continue // refused while still sending its header: the connection is closed, as it should be
				}
				io.Copy(io.Discard, resp.Body)
				resp.Body.Close()
				if resp.StatusCode != http.StatusRequestHeaderFieldsTooLarge {
					t.Errorf("an unsigned POST with a 1 MiB header: %d, want 431", resp.StatusCode)
					return
				}
			}
		})
	}
	wg.Wait()
	after := heap(t, base)
	growth := (after - before) / mib
	t.Logf("heap in use: %.0f MiB before, %.0f MiB after 300 unsigned POSTs with a 1 MiB User-Agent (+%.0f MiB)", before/mib, after/mib, growth)
	if growth > 16 {
		t.Errorf("the heap grew by %.0f MiB, want at most 16", growth)
	}
}

// TestSpanQueueDropsAndCounts: with a trace collector that takes connections and
// never answers (the export waits on it), spans beyond the export queue are dropped,
// never waited for by a request, and counted in inbox_trace_spans_dropped_total.
func TestSpanQueueDropsAndCounts(t *testing.T) {
	t.Parallel()
	stuck, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer stuck.Close()
	go func() { // accept and hold every connection, answering nothing
		var held []net.Conn
		for {
			c, err := stuck.Accept()
			if err != nil {
				for _, c := range held {
					c.Close()
				}
				return
			}
			held = append(held, c)
		}
	}()
	base := startBinary(t, map[string]string{
		"DATABASE_URL": pgtest.NewDB(t), "INBOX_GENERIC_SECRETS": testSecret,
		"OTEL_EXPORTER_OTLP_ENDPOINT": "http://" + stuck.Addr().String(),
	})
	client := &http.Client{Timeout: 10 * time.Second}
	var wg sync.WaitGroup
	for w := range 8 {
		wg.Go(func() {
			for i := range 500 {
				req, _ := http.NewRequest("POST", base+"/webhooks/generic", strings.NewReader(`{}`))
				req.Header.Set("Content-Type", "application/json")
				req.Header.Set("webhook-id", fmt.Sprintf("q-%d-%d", w, i))
				req.Header.Set("webhook-timestamp", fmt.Sprint(time.Now().Unix()))
				req.Header.Set("webhook-signature", "v1,AAAA")
				resp, err := client.Do(req)
				if err != nil {
					t.Error(err)
					return
				}
				io.Copy(io.Discard, resp.Body)
				resp.Body.Close()
			}
		})
	}
	wg.Wait()
	dropped, ok, err := bench.Metric(base, "inbox_trace_spans_dropped_total")
	if err != nil || !ok || dropped == 0 {
		t.Errorf("after 4,000 spans with the collector away: %v dropped (served %v, %v), want some, counted", dropped, ok, err)
	}
	t.Logf("4,000 requests with the collector stuck: %.0f spans dropped", dropped)
}
