package main

import (
	"bytes"
	"context"
	"errors"
	"flag"
	"fmt"
	"inboxd/internal/pgtest"
	"inboxd/internal/provider/providertest"
	"inboxd/internal/provider/registry"
	"os"
	"os/exec"
	"regexp"
	"runtime"
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

// TestDefaultWorkersFollowGOMAXPROCS: four workers per CPU the process may use,
// which in a container is its CPU limit (Go's GOMAXPROCS), not the host's CPUs: a
// process limited to one CPU gets 4, whatever the host has. (Not parallel: it sets
// GOMAXPROCS.)
func TestDefaultWorkersFollowGOMAXPROCS(t *testing.T) {
	defer runtime.GOMAXPROCS(runtime.GOMAXPROCS(1))
	c, err := loadConfig("serve", nil, func(string) string { return "" }, &bytes.Buffer{})
	if err != nil {
		t.Fatal(err)
	}
	if c.Workers != 4 {
		t.Errorf("INBOX_WORKERS's default with GOMAXPROCS 1 on %d CPUs = %d, want 4", runtime.NumCPU(), c.Workers)
	}
}

func TestLoadConfigEnvThenFlags(t *testing.T) {
	env := map[string]string{"INBOX_GENERIC_SECRETS": "whsec_c2VjcmV0LW51bWJlci1vbmU=, whsec_c2VjcmV0LW51bWJlci10d28=", "INBOX_WORKERS": "3", "INBOX_ADDR": ":1"}
	c, err := loadConfig("serve", []string{"--addr", ":2", "--telnyx-public-key", providertest.TelnyxPublicKey},
		func(k string) string { return env[k] }, &bytes.Buffer{})
	if err != nil {
		t.Fatal(err)
	}
	if got := c.Providers["GENERIC_SECRETS"]; got != "whsec_c2VjcmV0LW51bWJlci1vbmU=, whsec_c2VjcmV0LW51bWJlci10d28=" || c.Workers != 3 || c.Addr != ":2" {
		t.Errorf("secrets %q workers %d addr %q; want the two secrets, 3, :2 (flag beats env)", got, c.Workers, c.Addr)
	}
	var enabled []string
	for _, e := range c.Endpoints {
		if e.Webhook != nil {
			enabled = append(enabled, e.Name)
		}
	}
	if got := strings.Join(enabled, ","); got != "generic,telnyx" {
		t.Errorf("enabled providers %q, want generic,telnyx (a provider's setting is a flag too)", got)
	}
}

// Every bad variable is reported at once, and secrets are not echoed.
func TestLoadConfigReportsEveryError(t *testing.T) {
	env := map[string]string{"INBOX_WORKERS": "many", "INBOX_LEASE": "soon", "INBOX_LOG_FORMAT": "xml",
		"INBOX_ADDR": "localhost", "INBOX_GENERIC_SECRETS": "MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw", "INBOX_TELNYX_PUBLIC_KEY": "c2hvcnQ=",
		"INBOX_META_APP_SECRET": "s3cret-value"}
	_, err := loadConfig("serve", nil, func(k string) string { return env[k] }, &bytes.Buffer{})
	for _, want := range []string{"INBOX_WORKERS", "INBOX_LEASE", "INBOX_LOG_FORMAT", "INBOX_ADDR", "INBOX_GENERIC_SECRETS",
		"INBOX_TELNYX_PUBLIC_KEY", "INBOX_META_VERIFY_TOKEN"} {
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("error %v does not name %s", err, want)
		}
	}
	for _, secret := range []string{"MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw", "s3cret-value"} {
		if err != nil && strings.Contains(err.Error(), secret) {
			t.Errorf("error %v echoes a secret", err)
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

// TestConfigurationDocListsEverySetting: docs/configuration.md's settings table has
// exactly the variables the binary accepts, each with the default it uses.
func TestConfigurationDocListsEverySetting(t *testing.T) {
	doc, err := os.ReadFile("../../docs/configuration.md")
	if err != nil {
		t.Fatal(err)
	}
	documented := map[string]string{} // variable -> default column
	row := regexp.MustCompile("^\\| `([A-Z_]+)`[^|]*\\| ([^|]*) \\|")
	for _, line := range strings.Split(string(doc), "\n") {
		if m := row.FindStringSubmatch(line); m != nil {
			documented[m[1]] = strings.TrimSpace(m[2])
		}
	}
	var c config
	for _, o := range options(&c) {
		def, ok := documented[o.env]
		if !ok {
			t.Errorf("docs/configuration.md does not list %s", o.env)
			continue
		}
		delete(documented, o.env)
		want := "`" + o.def + "`"
		if o.def == "" {
			want = "unset"
		}
		if o.env == "INBOX_WORKERS" {
			want = "4 × CPUs" // computed on the machine that runs it
		}
		if !strings.HasPrefix(def, want) {
			t.Errorf("docs/configuration.md: %s defaults to %q, the binary to %q", o.env, def, want)
		}
	}
	for v := range documented {
		t.Errorf("docs/configuration.md lists %s, which the binary does not accept", v)
	}
}

// TestEveryProviderIsDocumented: each provider of the registry has its section and
// a row of the signature table in docs/webhooks.md, and its path in the OpenAPI
// document.
func TestEveryProviderIsDocumented(t *testing.T) {
	webhooks, err := os.ReadFile("../../docs/webhooks.md")
	if err != nil {
		t.Fatal(err)
	}
	openapi, err := os.ReadFile("../../internal/api/openapi.yaml")
	if err != nil {
		t.Fatal(err)
	}
	for _, p := range registry.All {
		path := "/webhooks/" + p.Name
		if !strings.Contains(string(webhooks), "## `POST "+path+"`") && !strings.Contains(string(webhooks), "`POST "+path+"` —") {
			t.Errorf("docs/webhooks.md has no section for %s", path)
		}
		if !strings.Contains(string(webhooks), "| `"+path+"` |") {
			t.Errorf("docs/webhooks.md's signature table has no row for %s", path)
		}
		if !strings.Contains(string(openapi), "\n  "+path+":") {
			t.Errorf("openapi.yaml has no path %s", path)
		}
	}
}

// TestBadSettingsTouchNothing: the binary started with a bad setting exits 2 with a
// line naming it, before anything is touched: the database it was pointed at is not
// created.
func TestBadSettingsTouchNothing(t *testing.T) {
	t.Parallel()
	binary := inboxdBinary(t)
	for i, bad := range []map[string]string{
		{"INBOX_ADDR": "localhost"},
		{"INBOX_PUBLIC_URL": "inbox.example.com"},
		{"INBOX_WORKERS": "0"},
		{"INBOX_LEASE": "soon"},
		{"INBOX_GENERIC_SECRETS": "MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"}, // no whsec_ prefix
		{"INBOX_META_APP_SECRET": "only-half"},
		{"INBOX_TELNYX_PUBLIC_KEY": "c2hvcnQ="},
		{"INBOX_LOG_LEVEL": "loud"},
		{"INBOX_GENERIC_SECRETS": "whsec_YQ=="},   // a 1-byte secret
		{"INBOX_ADMIN_TOKENS": "dev-admin-token"}, // the README's sample, without INBOX_DEV
		{"INBOX_RETENTON": "0"},                   // a misspelt setting, which would leave the retention at 7 days
	} {
		name := fmt.Sprintf("inboxd_badcfg_%d_%d", time.Now().UnixNano(), i)
		t.Cleanup(func() { pgtest.DropDatabase(t, name) })
		// A start that got past the check would serve until stopped: wide bound.
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		cmd := exec.CommandContext(ctx, binary)
		cmd.Env = append(os.Environ(), "DATABASE_URL="+pgtest.DatabaseURL(name))
		var variable string
		for k, v := range bad {
			cmd.Env, variable = append(cmd.Env, k+"="+v), k
		}
		out, err := cmd.CombinedOutput()
		var exit *exec.ExitError
		if !errors.As(err, &exit) || exit.ExitCode() != 2 || !strings.Contains(string(out), variable) {
			t.Errorf("%v: %v, output %q; want exit status 2 naming %s", bad, err, out, variable)
		}
		if pgtest.DatabaseExists(t, name) {
			t.Errorf("%v: the database was created before the setting was checked", bad)
		}
	}
}

// TestMisspeltSettings: an INBOX_ variable near a setting's name is refused, naming
// the setting it was probably meant for, never its value; another unknown one is
// named on stderr and ignored; the settings themselves, and other variables, pass.
func TestMisspeltSettings(t *testing.T) {
	for _, c := range []struct {
		environ    []string
		err, notes string // err "": accepted
	}{
		{[]string{"INBOX_RETENTION=0", "DATABASE_URL=x", "HOME=/root", "INBOXD_TEST_DATABASE_URL=x", "INBOX_TELNYX_PUBLIC_KEY=k"}, "", ""},
		{[]string{"INBOX_RETENTON=0"}, "INBOX_RETENTON is not a setting: did you mean INBOX_RETENTION?\n`inboxd serve --help` lists the settings", ""},
		{[]string{"INBOX_GENERIC_SECRET=whsec_secret-value"}, "did you mean INBOX_GENERIC_SECRETS?", ""},
		{[]string{"INBOX_DATABASE_URL=postgres://x"}, "INBOX_DATABASE_URL is not a setting: did you mean DATABASE_URL?", ""},
		{[]string{"inbox_addr=:9000"}, "did you mean INBOX_ADDR?", ""},
		{[]string{"INBOX_TWILIO_AUTHTOKEN=t", "INBOX_LEAS=1s"}, "INBOX_LEAS is not a setting: did you mean INBOX_LEASE?\nINBOX_TWILIO_AUTHTOKEN is not a setting: did you mean INBOX_TWILIO_AUTH_TOKEN?", ""},
		{[]string{"INBOX_DEPLOYMENT_COLOUR=blue"}, "", "inboxd: INBOX_DEPLOYMENT_COLOUR is not a setting of inboxd; it is ignored"},
	} {
		var notes bytes.Buffer
		err := checkEnvironment(c.environ, &notes)
		var usage usageError
		switch {
		case c.err == "" && err != nil:
			t.Errorf("%v: %v, want it accepted", c.environ, err)
		case c.err != "" && (!errors.As(err, &usage) || !strings.Contains(err.Error(), c.err)):
			t.Errorf("%v: %v, want a usage error with %q", c.environ, err, c.err)
		case err != nil && strings.Contains(err.Error(), "secret-value"):
			t.Errorf("%v: %v echoes a value", c.environ, err)
		case !strings.Contains(notes.String(), c.notes) || c.notes == "" && notes.Len() > 0:
			t.Errorf("%v: stderr %q, want %q", c.environ, &notes, c.notes)
		}
	}
}

// TestSettingsThatWouldBreakTheService: a setting the service would start with but
// then fail under (every claim timed out by a 1 ms lease, every webhook after a burst
// answered 503 for a commit wait beyond the ingest timeout) is refused, naming what it
// breaks; the bounds themselves are accepted.
func TestSettingsThatWouldBreakTheService(t *testing.T) {
	for _, c := range []struct {
		env  map[string]string
		want string // "" accepted
	}{
		{map[string]string{"INBOX_LEASE": "1ms"}, "INBOX_LEASE (--lease) = \"1ms\": want at least 1s"},
		{map[string]string{"INBOX_LEASE": "1s"}, ""},
		{map[string]string{"INBOX_INGEST_TIMEOUT": "1ms"}, "INBOX_INGEST_TIMEOUT (--ingest-timeout) = \"1ms\": want at least 100ms"},
		{map[string]string{"INBOX_BATCH_SIZE": "100000"}, "INBOX_BATCH_SIZE (--batch-size) = \"100000\": want a whole number from 1 to 1000"},
		{map[string]string{"INBOX_BATCH_SIZE": "1000"}, ""},
		{map[string]string{"INBOX_COMMIT_WAIT": "10s"}, "INBOX_COMMIT_WAIT (--commit-wait) = 10s is over half INBOX_INGEST_TIMEOUT = 5s"},
		{map[string]string{"INBOX_COMMIT_WAIT": "1s", "INBOX_INGEST_TIMEOUT": "1s"}, "is over half INBOX_INGEST_TIMEOUT = 1s"},
		{map[string]string{"INBOX_COMMIT_WAIT": "500ms", "INBOX_INGEST_TIMEOUT": "1s"}, ""},
	} {
		_, err := loadConfig("serve", nil, func(k string) string { return c.env[k] }, &bytes.Buffer{})
		switch {
		case c.want == "" && err != nil:
			t.Errorf("%v: %v, want it accepted", c.env, err)
		case c.want != "" && (err == nil || !strings.Contains(err.Error(), c.want)):
			t.Errorf("%v: %v, want an error with %q", c.env, err, c.want)
		}
	}
}

// TestSampleSecretsNeedDev: the README's sample secrets and tokens start a service
// only with INBOX_DEV=true; the error names every variable that holds one.
func TestSampleSecretsNeedDev(t *testing.T) {
	env := map[string]string{"INBOX_GENERIC_SECRETS": "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw", "INBOX_API_TOKENS": "mine,dev-read-token"}
	_, err := loadConfig("serve", nil, func(k string) string { return env[k] }, &bytes.Buffer{})
	for _, want := range []string{"INBOX_GENERIC_SECRETS", "INBOX_API_TOKENS", "INBOX_DEV=true"} {
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("error %v does not name %s", err, want)
		}
	}
	env["INBOX_DEV"] = "true"
	if _, err := loadConfig("serve", nil, func(k string) string { return env[k] }, &bytes.Buffer{}); err != nil {
		t.Errorf("with INBOX_DEV=true: %v", err)
	}
}

// TestEachSettingCheck: each check that needs more than one setting, or more than a
// value's parser sees, refuses what it is for and names the variable and the fix.
func TestEachSettingCheck(t *testing.T) {
	for _, tc := range []struct {
		env  map[string]string
		want string
	}{
		{map[string]string{"INBOX_MAX_BODY_BYTES": "2097152", "INBOX_BODY_MEMORY": "1048576"}, "INBOX_BODY_MEMORY (--body-memory) = 1048576 is below INBOX_MAX_BODY_BYTES"},
		{map[string]string{"INBOX_ADMIN_ADDR": "9091"}, "INBOX_ADMIN_ADDR (--admin-addr) = \"9091\": want host:port"},
		{map[string]string{"INBOX_PUBLIC_URL": "ftp://inbox.example.com"}, "INBOX_PUBLIC_URL (--public-url)"},
		{map[string]string{"INBOX_PUBLIC_URL": "https://"}, "INBOX_PUBLIC_URL (--public-url)"},
		{map[string]string{"INBOX_GENERIC_SECRETS": "whsec_c2VjcmV0LW51bWJlci1vbmU=, whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"}, "INBOX_GENERIC_SECRETS holds a sample value"},
		{map[string]string{"INBOX_REDACTION_KEY": "fifteen bytes.."}, "INBOX_REDACTION_KEY: at least 16 bytes"},
		{map[string]string{"INBOX_REDACT": "generic:/data/contact=hash"}, "INBOX_REDACTION_KEY: unset, and INBOX_REDACT has a hash rule"},
	} {
		if _, err := loadConfig("serve", nil, func(k string) string { return tc.env[k] }, &bytes.Buffer{}); err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%v: %v, want an error saying %q", tc.env, err, tc.want)
		}
	}
	ok := map[string]string{"INBOX_MAX_BODY_BYTES": "1048576", "INBOX_BODY_MEMORY": "1048576", "INBOX_ADMIN_ADDR": "127.0.0.1:9091",
		"INBOX_PUBLIC_URL": "https://inbox.example.com", "INBOX_REDACT": "generic:/data/contact=hash", "INBOX_REDACTION_KEY": "sixteen bytes..."}
	if _, err := loadConfig("serve", nil, func(k string) string { return ok[k] }, &bytes.Buffer{}); err != nil {
		t.Errorf("the same settings at their bounds: %v", err)
	}
}
