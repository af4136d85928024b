package main

import (
	"bytes"
	"context"
	"strings"
	"testing"
)

// An unknown bench mode is refused before the bench database is dropped and made
// again: the URL here points nowhere, so touching it would fail differently.
func TestBenchUnknownModeTouchesNothing(t *testing.T) {
	var out bytes.Buffer
	err := run(context.Background(), []string{"warp", "--database-url", "postgres://nobody@127.0.0.1:1/x"},
		func(string) string { return "" }, &out, &out)
	if err == nil || !strings.Contains(err.Error(), `unknown bench mode "warp"`) {
		t.Errorf("bench warp = %v, want the unknown-mode error", err)
	}
}

// TestNeverPrintsAPassword: the usage text and connection errors show the server's
// URL without its password.
func TestNeverPrintsAPassword(t *testing.T) {
	const secret = "s3cr3t-pw"
	getenv := func(k string) string {
		return map[string]string{"INBOXD_BENCH_DATABASE_URL": "postgres://bench:" + secret + "@127.0.0.1:1/postgres"}[k]
	}
	for _, args := range [][]string{{"drain", "--bogus"}, {"drain"}} {
		var out bytes.Buffer
		err := run(context.Background(), args, getenv, &out, &out)
		if err == nil {
			t.Errorf("inboxd-bench %v succeeded against a closed port", args)
		}
		if strings.Contains(out.String(), secret) || (err != nil && strings.Contains(err.Error(), secret)) {
			t.Errorf("inboxd-bench %v printed the password:\n%s\n%v", args, out.String(), err)
		}
	}
}

// TestServerThatExitsFailsAtOnce: a server that exits while starting (River refusing
// its settings) is reported as such, without waiting out the 30 s readiness deadline.
func TestServerThatExitsFailsAtOnce(t *testing.T) {
	o := benchOptions{river: "false"} // exits 1 at once, whatever its arguments
	_, err := o.start(context.Background(), target{name: "river-batched", river: "batched"}, "postgres://nobody@127.0.0.1:1/x")
	if err == nil || !strings.Contains(err.Error(), "exited before it was ready") {
		t.Errorf("start = %v, want the exited-before-ready error", err)
	}
}

// TestStrayArgumentIsRefused: an argument among the flags is refused before anything
// runs, rather than ending the flags there and running with the rest at defaults.
func TestStrayArgumentIsRefused(t *testing.T) {
	var out bytes.Buffer
	for _, args := range [][]string{
		{"drain", "50000", "--database-url", "postgres://nobody@127.0.0.1:1/x"},
		{"drain", "--database-url", "postgres://nobody@127.0.0.1:1/x", "50000"},
	} {
		err := run(context.Background(), args, func(string) string { return "" }, &out, &out)
		if err == nil || !strings.Contains(err.Error(), `unexpected argument "50000"`) {
			t.Errorf("inboxd-bench %q = %v, want the argument refused", args, err)
		}
	}
	// report's arguments are the files it reads.
	err := run(context.Background(), []string{"report", "no-such-results.json"}, func(string) string { return "" }, &out, &out)
	if err == nil || strings.Contains(err.Error(), "unexpected argument") || !strings.Contains(err.Error(), "no-such-results.json") {
		t.Errorf("inboxd-bench report no-such-results.json = %v, want the file not found", err)
	}
}
