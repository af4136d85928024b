package main

import (
	"bytes"
	"errors"
	"flag"
	"strings"
	"testing"
	"time"
)

func TestLoadConfigDefaults(t *testing.T) {
	c, err := loadConfig("serve", nil, func(string) string { return "" }, &bytes.Buffer{})
	if err != nil {
		t.Fatal(err)
	}
	if c.DatabaseURL != defaultDatabaseURL || c.Addr != ":8080" || c.MaxBodyBytes != 4194304 ||
		c.MaxAttempts != 12 || c.SweepInterval != time.Second || c.Lease != 30*time.Second || !c.Migrate {
		t.Errorf("defaults = %+v", c)
	}
}

func TestLoadConfigEnvThenFlags(t *testing.T) {
	env := map[string]string{"INBOX_GENERIC_SECRETS": "whsec_a, whsec_b", "INBOX_WORKERS": "3", "INBOX_ADDR": ":1"}
	c, err := loadConfig("serve", []string{"--addr", ":2"}, func(k string) string { return env[k] }, &bytes.Buffer{})
	if err != nil {
		t.Fatal(err)
	}
	if got := strings.Join(c.GenericSecrets, "|"); got != "whsec_a|whsec_b" || c.Workers != 3 || c.Addr != ":2" {
		t.Errorf("secrets %q workers %d addr %q; want whsec_a|whsec_b, 3, :2 (flag beats env)", got, c.Workers, c.Addr)
	}
}

// Every bad variable is reported at once, and secrets are not echoed.
func TestLoadConfigReportsEveryError(t *testing.T) {
	env := map[string]string{"INBOX_WORKERS": "many", "INBOX_LEASE": "soon", "INBOX_LOG_FORMAT": "xml"}
	_, err := loadConfig("serve", nil, func(k string) string { return env[k] }, &bytes.Buffer{})
	for _, want := range []string{"INBOX_WORKERS", "INBOX_LEASE", "INBOX_LOG_FORMAT"} {
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("error %v does not name %s", err, want)
		}
	}
}

func TestServeHelpListsEveryVariable(t *testing.T) {
	var out bytes.Buffer
	_, err := loadConfig("serve", []string{"--help"}, func(string) string { return "" }, &out)
	if !errors.Is(err, flag.ErrHelp) {
		t.Fatalf("err = %v, want flag.ErrHelp", err)
	}
	var c config
	for _, o := range options(&c) {
		if !strings.Contains(out.String(), o.env) || !strings.Contains(out.String(), "--"+o.flag) {
			t.Errorf("--help does not list %s / --%s", o.env, o.flag)
		}
	}
}
