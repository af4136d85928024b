package main

import (
	"context"
	"encoding/json"
	"io"
	"net/http"
	"os"
	"regexp"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/prometheus/prometheus/promql/parser"
	"go.yaml.in/yaml/v3"

	"inboxd/internal/delivery/deliverytest"
	"inboxd/internal/pgtest"
	"inboxd/internal/provider/providertest"
)

// TestDashboardAndAlertsNameServedMetrics parses every PromQL expression of the Grafana
// dashboard and of the alert rules, and checks that each metric it names is served by
// a running inboxd: a renamed metric cannot leave a panel or an alert silently empty.
func TestDashboardAndAlertsNameServedMetrics(t *testing.T) {
	t.Parallel()
	exprs := map[string]string{} // where → expression
	var dash struct {
		Panels []struct {
			Title   string
			Targets []struct{ Expr string }
		}
	}
	readFile(t, "../../deploy/grafana/inboxd.json", func(b []byte) error { return json.Unmarshal(b, &dash) })
	for _, p := range dash.Panels {
		for _, tg := range p.Targets {
			// Grafana's interval variable, as Grafana substitutes it.
			exprs["dashboard panel "+p.Title+": "+tg.Expr] = strings.ReplaceAll(tg.Expr, "$__rate_interval", "5m")
		}
	}
	var rules struct {
		Groups []struct {
			Rules []struct{ Alert, Expr string }
		}
	}
	readFile(t, "../../deploy/prometheus/alerts.yml", func(b []byte) error { return yaml.Unmarshal(b, &rules) })
	for _, g := range rules.Groups {
		for _, r := range g.Rules {
			exprs["alert "+r.Alert] = r.Expr
		}
	}
	if len(exprs) < 20 {
		t.Fatalf("found %d expressions; the files were not read as expected", len(exprs))
	}

	named := map[string][]string{} // metric → where
	p := parser.NewParser(parser.Options{})
	for where, e := range exprs {
		expr, err := p.ParseExpr(e)
		if err != nil {
			t.Errorf("%s: %q does not parse: %v", where, e, err)
			continue
		}
		parser.Inspect(expr, func(n parser.Node, _ []parser.Node) error {
			if vs, ok := n.(*parser.VectorSelector); ok {
				named[vs.Name] = append(named[vs.Name], where)
			}
			return nil
		})
	}

	dbURL := pgtest.NewDB(t)
	// The per-lane series exist while a lane has pending events: one waits for a
	// retry an hour away.
	if conn, err := pgx.Connect(context.Background(), dbURL); err != nil {
		t.Fatal(err)
	} else {
		_, err = conn.Exec(context.Background(), `INSERT INTO inbound_events (provider, external_id, payload, lane, run_at)
VALUES ('generic', 'later', '{}', 'generic/+15550001111', now() + interval '1 hour')`)
		conn.Close(context.Background())
		if err != nil {
			t.Fatal(err)
		}
	}
	base, _ := startServe(t, map[string]string{"DATABASE_URL": dbURL, "INBOX_ADDR": "127.0.0.1:0", "INBOX_GENERIC_SECRETS": testSecret,
		"INBOX_DELIVERY_ALLOW_PRIVATE": "true"})
	// The per-subscription series exist once a subscription has had a delivery and
	// a sweep has read its lag.
	consumer := deliverytest.New(t)
	if err := run(context.Background(), []string{"subscriptions", "create", "--url", consumer.URL, "--types", "message.created", "--allow-private", "--database-url", dbURL},
		func(string) string { return "" }, io.Discard, io.Discard); err != nil {
		t.Fatal(err)
	}
	body := `{"type":"message.received","timestamp":"2026-11-25T10:00:00Z","data":{"message_id":"m-o","channel":"+15550001111","contact":"+15552223333","text":"hi"}}`
	if status, _, b := do(t, providertest.Request(t, "generic", base, "", testSecret, "evt-o", []byte(body), time.Now())); status != 200 {
		t.Fatalf("webhook: %d %s", status, b)
	}
	pgtest.Eventually(t, "the message delivered", 30*time.Second, func() (bool, error) { return len(consumer.Delivered()) == 1, nil })
	time.Sleep(1500 * time.Millisecond) // a sweep reads the lag
	resp, err := http.Get(base + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	scraped, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	served := map[string]bool{"up": true} // up is Prometheus's own, for every target
	for _, line := range strings.Split(string(scraped), "\n") {
		if line != "" && !strings.HasPrefix(line, "#") {
			served[strings.FieldsFunc(line, func(r rune) bool { return r == '{' || r == ' ' })[0]] = true
		}
	}
	if !served["go_build_info"] { // which build each process runs, during a rollout
		t.Errorf("/metrics has no go_build_info")
	}
	var names []string
	for name := range named {
		names = append(names, name)
	}
	sort.Strings(names)
	for _, name := range names {
		if !served[name] {
			t.Errorf("%s is not served by inboxd, but %v use it", name, named[name])
		}
	}
	t.Logf("%d expressions name %d metrics, all served: %s", len(exprs), len(names), strings.Join(names, ", "))
}

func readFile(t *testing.T, path string, decode func([]byte) error) {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	if err := decode(b); err != nil {
		t.Fatalf("%s: %v", path, err)
	}
}

// TestComposeIsSafeByDefault: compose.yaml publishes every port on 127.0.0.1 only (a
// port on all interfaces goes around host firewalls) and takes every secret from the
// environment, refusing to start without it: no secret is written in the file, and
// Grafana's anonymous users may look but not administer.
func TestComposeIsSafeByDefault(t *testing.T) {
	var compose struct {
		Services map[string]struct {
			Ports       []string          `yaml:"ports"`
			Environment map[string]string `yaml:"environment"`
		} `yaml:"services"`
	}
	readFile(t, "../../compose.yaml", func(b []byte) error { return yaml.Unmarshal(b, &compose) })
	secret := regexp.MustCompile(`(?i)(PASSWORD|SECRET|TOKEN)`)
	for name, svc := range compose.Services {
		for _, p := range svc.Ports {
			if !strings.HasPrefix(p, "127.0.0.1:") {
				t.Errorf("service %s publishes %q: want it bound to 127.0.0.1", name, p)
			}
		}
		for k, v := range svc.Environment {
			if secret.MatchString(k) && !strings.HasPrefix(v, "${") {
				t.Errorf("service %s sets %s in the file: want ${%s:?…} from the environment", name, k, k)
			}
			if k == "GF_AUTH_ANONYMOUS_ORG_ROLE" && v != "Viewer" {
				t.Errorf("Grafana's anonymous role is %s, want Viewer", v)
			}
		}
	}
	if url := compose.Services["inboxd"].Environment["DATABASE_URL"]; !strings.Contains(url, "${POSTGRES_PASSWORD") {
		t.Errorf("inboxd's DATABASE_URL %q has no password from the environment", url)
	}
}
