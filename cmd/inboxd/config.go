package main

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"

	"inboxd/internal/delivery"
	"inboxd/internal/ingest"
	"inboxd/internal/processor"
	"inboxd/internal/provider"
	"inboxd/internal/provider/registry"
	"inboxd/internal/redact"
)

// defaultMaxConnections bounds the HTTP connections open at once: well above what
// providers and readers open (a few dozen), well below what exhausts a process.
const defaultMaxConnections = 4096

const defaultDatabaseURL = "postgres://postgres@127.0.0.1:5432/inboxd?sslmode=disable"

// config is every setting (docs/configuration.md). Each comes from an environment variable and
// can be overridden by the flag of the same meaning.
type config struct {
	DatabaseURL string
	ListenURL   string // default: DatabaseURL
	ReadURL     string // default: DatabaseURL
	PollOnly    bool
	Addr        string
	AdminAddr   string // internal listener for readiness, metrics and admin; empty: Addr serves all
	PublicURL   string
	// Providers holds each provider's settings by key (provider.Setting), as
	// registry.Open reads them.
	Providers      map[string]string
	Endpoints      []provider.Endpoint // the providers as configured (check)
	APITokens      []string
	AdminTokens    []string
	Workers        int
	BatchSize      int
	BatchWait      time.Duration
	LaneWeights    map[string]int
	MaxBodyBytes   int
	BodyMemory     int
	MaxAttempts    int
	SweepInterval  time.Duration
	Lease          time.Duration
	Retention      time.Duration
	DeadRetention  time.Duration
	IngestTimeout  time.Duration
	CommitWait     time.Duration
	ReadTimeout    time.Duration
	MaxInFlight    int
	MaxConnections int
	Migrate        bool
	LogLevel       string
	LogFormat      string
	DebugAddr      string
	// TrustTraceparent: webhook spans join the caller's trace (trusted callers only).
	TrustTraceparent bool
	// Dev allows the README's sample secrets (local trials only).
	Dev            bool
	Redact         []string // INBOX_REDACT rules
	RedactDefaults bool
	RedactionKey   string
	Redaction      *redact.Policy // the rules in force (check)
	// The console (internal/console).
	ConsoleReadTokens []string
	ConsoleTraceURL   string
	// Outbound webhooks (internal/delivery).
	DeliveryTimeout      time.Duration
	DeliveryGiveUp       time.Duration
	DeliveryAllowPrivate bool
}

// option ties a flag to its environment variable and default.
type option struct {
	flag, env, def, usage string
	secret                bool // never echo its value
	set                   func(string) error
}

// envPrefix turns a library's setting key (provider.Setting) into its variable.
const envPrefix = "INBOX_"

// settingName is the variable of a setting key ("GENERIC_SECRETS" →
// INBOX_GENERIC_SECRETS): what errors in the libraries name.
func settingName(key string) string { return envPrefix + key }

func options(c *config) []option {
	return append(coreOptions(c), providerOptions(c)...)
}

// providerOptions are the settings each provider declares, in registry order, after
// INBOX_PUBLIC_URL: adding a provider adds its settings here without a line of cmd.
func providerOptions(c *config) []option {
	c.Providers = map[string]string{}
	var opts []option
	for _, p := range registry.All {
		for _, s := range p.Settings {
			opts = append(opts, option{
				flag: strings.ToLower(strings.ReplaceAll(s.Key, "_", "-")), env: settingName(s.Key),
				usage: s.Usage, secret: s.Secret, set: providerValue(c.Providers, s.Key),
			})
		}
	}
	return opts
}

func providerValue(values map[string]string, key string) func(string) error {
	return func(s string) error {
		values[key] = s
		return nil
	}
}

func coreOptions(c *config) []option {
	return []option{
		{"database-url", "DATABASE_URL", defaultDatabaseURL, "Postgres connection string (may go through a transaction-mode pooler)", false, str(&c.DatabaseURL)},
		{"listen-database-url", "INBOX_LISTEN_DATABASE_URL", "", "direct connection string for LISTEN and migrations when DATABASE_URL goes through a transaction-mode pooler (default: DATABASE_URL)", false, str(&c.ListenURL)},
		{"read-database-url", "INBOX_READ_DATABASE_URL", "", "connection string the /v1 read endpoints use, e.g. a replica (default: DATABASE_URL)", false, str(&c.ReadURL)},
		{"poll-only", "INBOX_POLL_ONLY", "false", "no LISTEN at all: the sweep drives processing (latency up to INBOX_SWEEP_INTERVAL)", false, boolean(&c.PollOnly)},
		{"addr", "INBOX_ADDR", ":8080", "HTTP listen address (webhooks, API, /metrics, /healthz)", false, str(&c.Addr)},
		{"admin-addr", "INBOX_ADMIN_ADDR", "", "serve /readyz, /metrics and the admin endpoints on this address instead of INBOX_ADDR (a private one, e.g. 127.0.0.1:9091); INBOX_ADDR then serves the webhooks and the /v1 reads", false, str(&c.AdminAddr)},
		{"public-url", "INBOX_PUBLIC_URL", "http://localhost:8080", "base URL providers call; Twilio signs it", false, str(&c.PublicURL)},
		{"api-tokens", "INBOX_API_TOKENS", "", "bearer tokens for /v1 reads, comma-separated", true, list(&c.APITokens)},
		{"admin-tokens", "INBOX_ADMIN_TOKENS", "", "bearer tokens for admin endpoints, comma-separated", true, list(&c.AdminTokens)},
		{"workers", "INBOX_WORKERS", strconv.Itoa(processor.DefaultWorkers()), "concurrent processing batches per process (4 per CPU it may use: GOMAXPROCS, which follows a container's CPU limit)", false, positive(&c.Workers)},
		{"batch-size", "INBOX_BATCH_SIZE", strconv.Itoa(processor.DefaultBatchSize), "events claimed and applied per transaction (1 to 1000)", false, between(&c.BatchSize, 1, processor.MaxBatchSize)},
		{"batch-wait", "INBOX_BATCH_WAIT", shortDuration(processor.DefaultBatchWait), "longest an event another process committed waits for others to share its claim, when events come closer together than this; 0 claims at once", false, durationOrZero(&c.BatchWait)},
		{"lane-weights", "INBOX_LANE_WEIGHTS", "", "weigh lanes' shares of each claim: lane=weight pairs, comma-separated, e.g. meta/100000000000001=4 (weights 1 to 100; other lanes weigh 1; docs/lanes.md)", false, laneWeights(&c.LaneWeights)},
		{"max-body-bytes", "INBOX_MAX_BODY_BYTES", strconv.Itoa(ingest.DefaultMaxBodyBytes), "largest accepted webhook body", false, positive(&c.MaxBodyBytes)},
		{"body-memory", "INBOX_BODY_MEMORY", strconv.Itoa(ingest.DefaultBodyMemory), "bytes of webhook bodies being received at once, all requests together (bodies are buffered before their signatures are checked); more are answered 503 with Retry-After", false, positive(&c.BodyMemory)},
		{"ingest-timeout", "INBOX_INGEST_TIMEOUT", shortDuration(ingest.DefaultTimeout), "longest a webhook waits for its commit, queue time included; then 503 with Retry-After (at least 100ms)", false, durationAtLeast(&c.IngestTimeout, ingest.MinTimeout, "a shorter one answers webhooks 503 whenever a commit takes an ordinary moment")},
		{"commit-wait", "INBOX_COMMIT_WAIT", shortDuration(ingest.DefaultCommitWait), "longest a webhook waits for others to share its commit when webhooks come closer together than this; 0 commits at once; at most half INBOX_INGEST_TIMEOUT", false, durationOrZero(&c.CommitWait)},
		{"read-timeout", "INBOX_READ_TIMEOUT", shortDuration(ingest.DefaultReadTimeout), "longest a client may take to send a request's headers, and again its body", false, duration(&c.ReadTimeout)},
		{"max-inflight", "INBOX_MAX_INFLIGHT", strconv.Itoa(ingest.DefaultMaxInFlight), "webhook requests handled at once; more are answered 503 with Retry-After", false, positive(&c.MaxInFlight)},
		{"max-connections", "INBOX_MAX_CONNECTIONS", strconv.Itoa(defaultMaxConnections), "HTTP connections open at once; more wait to be accepted until one closes", false, positive(&c.MaxConnections)},
		{"max-attempts", "INBOX_MAX_ATTEMPTS", strconv.Itoa(processor.DefaultMaxAttempts), "attempts before an event is dead", false, positive(&c.MaxAttempts)},
		{"sweep-interval", "INBOX_SWEEP_INTERVAL", shortDuration(processor.DefaultSweepInterval), "sweep period (missed notifications, due retries, expired leases)", false, duration(&c.SweepInterval)},
		{"lease", "INBOX_LEASE", shortDuration(processor.DefaultLease), "how long a claim is held before others may take it over (at least 1s: it is also the processor's statement timeout)", false, durationAtLeast(&c.Lease, processor.MinLease, "the lease is also each processing statement's timeout: a shorter one times out ordinary batches")},
		{"retention", "INBOX_RETENTION", shortDuration(processor.DefaultRetention), "processed events (and parked statuses) older than this are deleted, their messages kept; 0 keeps them", false, durationOrZero(&c.Retention)},
		{"dead-retention", "INBOX_DEAD_RETENTION", shortDuration(processor.DefaultDeadRetention), "dead events older than this are deleted; 0 keeps them", false, durationOrZero(&c.DeadRetention)},
		{"migrate", "INBOX_MIGRATE", "true", "create the database if missing and apply migrations at start", false, boolean(&c.Migrate)},
		{"log-level", "INBOX_LOG_LEVEL", "info", "debug, info, warn or error", false, oneOf(&c.LogLevel, "debug", "info", "warn", "error")},
		{"log-format", "INBOX_LOG_FORMAT", "json", "json or console", false, oneOf(&c.LogFormat, "json", "console")},
		{"redact", "INBOX_REDACT", "", "redaction rules provider:selector=action, comma-separated (action remove, mask or hash; docs/privacy.md)", false, list(&c.Redact)},
		{"redact-defaults", "INBOX_REDACT_DEFAULTS", "on", "on: each provider's documented fields (location, device metadata) are removed at ingest; off: kept", false, onOff(&c.RedactDefaults)},
		{"redaction-key", "INBOX_REDACTION_KEY", "", "the key of the hash action (HMAC-SHA256); at least 16 bytes", true, str(&c.RedactionKey)},
		{"console-read-tokens", "INBOX_CONSOLE_READ_TOKENS", "", "tokens that log in to the web console (/console) to look only, comma-separated (INBOX_ADMIN_TOKENS log in with every right)", true, list(&c.ConsoleReadTokens)},
		{"console-trace-url", "INBOX_CONSOLE_TRACE_URL", "", "the console links an event's trace id with this pattern, e.g. http://localhost:16686/trace/{trace_id} (Jaeger)", false, str(&c.ConsoleTraceURL)},
		{"delivery-timeout", "INBOX_DELIVERY_TIMEOUT", shortDuration(delivery.DefaultTimeout), "longest one attempt to deliver a change to a subscriber may take; then it is retried", false, duration(&c.DeliveryTimeout)},
		{"delivery-give-up", "INBOX_DELIVERY_GIVE_UP", shortDuration(delivery.DefaultGiveUp), "how long a delivery is retried before it is dead (listed, replayable)", false, duration(&c.DeliveryGiveUp)},
		{"delivery-allow-private", "INBOX_DELIVERY_ALLOW_PRIVATE", "false", "let subscriptions deliver to loopback, private and link-local addresses (refused by default)", false, boolean(&c.DeliveryAllowPrivate)},
		{"dev", "INBOX_DEV", "false", "allow the README's sample secrets and tokens, for trying inboxd locally; never in a deployment", false, boolean(&c.Dev)},
		{"trust-traceparent", "INBOX_TRUST_TRACEPARENT", "false", "webhook spans join the trace a caller's traceparent names (only for callers inside your network; by default a new trace links to it)", false, boolean(&c.TrustTraceparent)},
		{"debug-addr", "INBOX_DEBUG_ADDR", "", "serve Go's pprof profiles (/debug/pprof/) on this address; keep it private, e.g. 127.0.0.1:6060", false, str(&c.DebugAddr)},
	}
}

// loadConfig reads the environment, then flags in args, and reports every bad value
// at once (not just the first) so that one fix-and-retry is enough.
//
// A flag beats its variable: the environment is the deployment's setting, a flag is
// what someone typed to override it for one run. Values are parsed after both are
// known, so an invalid variable that a flag overrides is not an error. A secret's
// value is never echoed in an error message.
func loadConfig(name string, args []string, getenv func(string) string, stderr io.Writer) (config, error) {
	var c config
	opts := options(&c)
	fs := flag.NewFlagSet("inboxd "+name, flag.ContinueOnError)
	fs.SetOutput(io.Discard)
	values := make([]*string, len(opts))
	for i, o := range opts {
		v := o.def
		if e := getenv(o.env); e != "" {
			v = e
		}
		values[i] = fs.String(o.flag, v, o.usage)
	}
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			printUsage(stderr, name, opts)
			return c, err
		}
		return c, usageError{fmt.Errorf("%w (`inboxd %s --help` lists the flags)", err, name)}
	}
	if err := strayArgument(fs); err != nil {
		return c, err
	}
	var errs []error
	for i, o := range opts {
		if err := o.set(*values[i]); err != nil {
			shown := *values[i]
			if o.secret {
				shown = "…"
			}
			errs = append(errs, fmt.Errorf("%s (--%s) = %q: %w", o.env, o.flag, shown, err))
		}
	}
	errs = append(errs, c.check()...)
	if len(errs) > 0 {
		return c, usageError{errors.Join(errs...)}
	}
	c.ListenURL = or(c.ListenURL, c.DatabaseURL)
	c.ReadURL = or(c.ReadURL, c.DatabaseURL)
	return c, nil
}

// check validates what the options' parsers cannot see alone: addresses, and each
// provider's settings (registry.Open, whose endpoints the service then uses), so that
// a bad value stops the start before anything is touched.
func (c *config) check() []error {
	var errs []error
	if _, _, err := net.SplitHostPort(c.Addr); err != nil {
		errs = append(errs, fmt.Errorf("INBOX_ADDR (--addr) = %q: want host:port or :port, such as :8080 or 127.0.0.1:8080", c.Addr))
	}
	if c.BodyMemory < c.MaxBodyBytes {
		errs = append(errs, fmt.Errorf("INBOX_BODY_MEMORY (--body-memory) = %d is below INBOX_MAX_BODY_BYTES = %d: a body that large could never be received; raise it or lower INBOX_MAX_BODY_BYTES", c.BodyMemory, c.MaxBodyBytes))
	}
	if c.IngestTimeout > 0 && c.CommitWait > c.IngestTimeout/2 {
		errs = append(errs, fmt.Errorf("INBOX_COMMIT_WAIT (--commit-wait) = %s is over half INBOX_INGEST_TIMEOUT = %s: webhooks that share a commit wait up to that long for it, and would be answered 503; it is meant to be milliseconds (default %s)",
			c.CommitWait, c.IngestTimeout, shortDuration(ingest.DefaultCommitWait)))
	}
	if _, _, err := net.SplitHostPort(c.AdminAddr); c.AdminAddr != "" && err != nil {
		errs = append(errs, fmt.Errorf("INBOX_ADMIN_ADDR (--admin-addr) = %q: want host:port, such as 127.0.0.1:9091", c.AdminAddr))
	}
	if u, err := url.Parse(c.PublicURL); err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		errs = append(errs, fmt.Errorf("INBOX_PUBLIC_URL (--public-url) = %q: want the base URL providers call, such as https://inbox.example.com", c.PublicURL))
	}
	if !c.Dev {
		errs = append(errs, c.samples()...)
	}
	policy, err := c.redaction()
	if err != nil {
		errs = append(errs, err)
	}
	c.Redaction = policy
	endpoints, err := registry.Open(c.providerConfig())
	if err != nil {
		errs = append(errs, err)
	}
	c.Endpoints = endpoints
	return errs
}

// sampleSecrets are the secrets and tokens the README and compose.yaml show (the
// generic one is also the Standard Webhooks reference vector's): anyone can sign with
// them or read with them, so a service that runs with one is open to all.
var sampleSecrets = []string{
	"whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw", "dev-read-token", "dev-admin-token", "dev-twilio", "dev-meta", "dev-verify",
}

// samples refuses a sample secret, naming where it is, unless INBOX_DEV is set.
func (c *config) samples() []error {
	values := map[string][]string{envPrefix + "API_TOKENS": c.APITokens, envPrefix + "ADMIN_TOKENS": c.AdminTokens}
	for key, v := range c.Providers {
		values[settingName(key)] = strings.Split(v, ",")
	}
	var errs []error
	for name, vs := range values {
		for _, v := range vs {
			if slices.Contains(sampleSecrets, strings.TrimSpace(v)) {
				errs = append(errs, fmt.Errorf("%s holds a sample value from the README, which anyone can use: set a secret of your own, or INBOX_DEV=true to try inboxd locally", name))
				break
			}
		}
	}
	slices.SortFunc(errs, func(a, b error) int { return strings.Compare(a.Error(), b.Error()) })
	return errs
}

// redaction builds the redaction policy: each provider's defaults (unless off), then
// INBOX_REDACT's rules, each checked against what the provider cannot do without.
func (c *config) redaction() (*redact.Policy, error) {
	var rules []redact.Rule
	var errs []error
	protect := map[string]redact.Protection{}
	for _, p := range registry.All {
		protect[p.Name] = p.Protected
		if c.RedactDefaults {
			for _, sel := range p.RedactDefaults {
				rules = append(rules, redact.Rule{Provider: p.Name, Path: redact.Pointer(sel), Action: redact.Remove, Text: p.Name + ":" + sel + "=remove (default)"})
			}
		}
	}
	for _, text := range c.Redact {
		r, err := redact.ParseRule(text)
		if err != nil {
			errs = append(errs, fmt.Errorf("INBOX_REDACT: %w", err))
			continue
		}
		rules = append(rules, r)
	}
	if c.RedactionKey != "" && len(c.RedactionKey) < 16 {
		errs = append(errs, errors.New("INBOX_REDACTION_KEY: at least 16 bytes (a short key lets anyone hash candidate numbers and find the stored ones)"))
	}
	policy, err := redact.NewPolicy(rules, protect, []byte(c.RedactionKey))
	if err != nil {
		errs = append(errs, fmt.Errorf("INBOX_REDACT: %w", err))
	}
	if c.RedactionKey == "" && slices.ContainsFunc(rules, func(r redact.Rule) bool { return r.Action == redact.Hash }) {
		errs = append(errs, errors.New("INBOX_REDACTION_KEY: unset, and INBOX_REDACT has a hash rule: set a key of at least 16 bytes"))
	}
	return policy, errors.Join(errs...)
}

// providerConfig is what the providers read.
func (c *config) providerConfig() provider.Config {
	return provider.Config{PublicURL: c.PublicURL, Values: c.Providers, Name: settingName}
}

// printUsage lists every flag with its variable and built-in default (never the
// environment's value: that may be a secret).
func printUsage(w io.Writer, name string, opts []option) {
	fmt.Fprintf(w, "usage: inboxd %s [flags]\n\n", name)
	for _, c := range commands() {
		if c.name == name {
			fmt.Fprintf(w, "inboxd %s: %s.\n", name, c.summary)
		}
	}
	fmt.Fprint(w, "Every flag can also be set by its environment variable.\n\n")
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "flag\tvariable\tdefault\tmeaning")
	for _, o := range opts {
		def := o.def
		if def == "" {
			def = "(unset)"
		}
		fmt.Fprintf(tw, "--%s\t%s\t%s\t%s\n", o.flag, o.env, def, o.usage)
	}
	tw.Flush()
}

func str(p *string) func(string) error { return func(s string) error { *p = s; return nil } }

// list splits comma-separated values (token rotation: "new,old"), ignoring blanks.
func list(p *[]string) func(string) error {
	return func(s string) error {
		*p = nil
		for _, v := range strings.Split(s, ",") {
			if v = strings.TrimSpace(v); v != "" {
				*p = append(*p, v)
			}
		}
		return nil
	}
}

func positive(p *int) func(string) error {
	return func(s string) error {
		n, err := strconv.Atoi(s)
		if err != nil || n <= 0 {
			return errors.New("want a whole number above 0")
		}
		*p = n
		return nil
	}
}

// between is positive within [lo, hi].
func between(p *int, lo, hi int) func(string) error {
	return func(s string) error {
		n, err := strconv.Atoi(s)
		if err != nil || n < lo || n > hi {
			return fmt.Errorf("want a whole number from %d to %d", lo, hi)
		}
		*p = n
		return nil
	}
}

// durationAtLeast is duration no shorter than lo; why says what a shorter one breaks.
func durationAtLeast(p *time.Duration, lo time.Duration, why string) func(string) error {
	return func(s string) error {
		var d time.Duration
		if err := duration(&d)(s); err != nil {
			return err
		}
		if d < lo {
			return fmt.Errorf("want at least %s: %s", shortDuration(lo), why)
		}
		*p = d
		return nil
	}
}

func duration(p *time.Duration) func(string) error {
	return func(s string) error {
		d, err := time.ParseDuration(s)
		if err != nil || d <= 0 {
			return errors.New("want a positive duration such as 500ms, 1s or 2m")
		}
		*p = d
		return nil
	}
}

// shortDuration writes d as people do: 168h, not 168h0m0s.
func shortDuration(d time.Duration) string {
	s := d.String()
	if strings.HasSuffix(s, "m0s") {
		s = strings.TrimSuffix(s, "0s")
	}
	if strings.HasSuffix(s, "h0m") {
		s = strings.TrimSuffix(s, "0m")
	}
	return s
}

// durationOrZero is duration that also takes 0 (off).
func durationOrZero(p *time.Duration) func(string) error {
	return func(s string) error {
		d, err := time.ParseDuration(s)
		if err != nil || d < 0 {
			return errors.New("want a duration such as 168h or 30m, or 0 to turn it off")
		}
		*p = d
		return nil
	}
}

func onOff(p *bool) func(string) error {
	return func(s string) error {
		switch s {
		case "on":
			*p = true
		case "off":
			*p = false
		default:
			return errors.New("want on or off")
		}
		return nil
	}
}

func boolean(p *bool) func(string) error {
	return func(s string) error {
		b, err := strconv.ParseBool(s)
		if err != nil {
			return errors.New("want true or false")
		}
		*p = b
		return nil
	}
}

func laneWeights(p *map[string]int) func(string) error {
	return func(s string) error {
		w, err := processor.ParseLaneWeights(s)
		if err != nil {
			return err
		}
		*p = w
		return nil
	}
}

func oneOf(p *string, allowed ...string) func(string) error {
	return func(s string) error {
		for _, a := range allowed {
			if s == a {
				*p = s
				return nil
			}
		}
		return fmt.Errorf("want one of %s", strings.Join(allowed, ", "))
	}
}
