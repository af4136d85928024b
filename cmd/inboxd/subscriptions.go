package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"go.uber.org/zap"

	"inboxd/internal/delivery"
	"inboxd/internal/feed"
)

// subscriptionsUsage is the help of `inboxd subscriptions`.
const subscriptionsUsage = `Outbound webhooks (docs/consumers.md): the endpoints that get the change feed.
  inboxd subscriptions                                        list them, with their state and breaker
  inboxd subscriptions create --url URL --types T,…           subscribe an endpoint (--providers P,…: theirs only); prints its secret
  inboxd subscriptions show ID                                one subscription, its secret, deliveries by state
  inboxd subscriptions update ID --url|--types|--providers …  change in place: position and secret kept
  inboxd subscriptions deliveries ID [--state dead]           its deliveries, newest first (--before: the next page)
  inboxd subscriptions replay ID --from CHANGE_ID             deliver again from a change on ("" for all kept)
  inboxd subscriptions rotate ID [--keep-previous 24h]        a new secret; the old one signs too meanwhile (0: stops now)
  inboxd subscriptions end-previous ID                        stop the secret the last rotation replaced, now
  inboxd subscriptions ping ID                                send the endpoint a signed ping; print its answer
  inboxd subscriptions pause|resume|delete ID
Change types: ` + "conversation.created, message.created, message.status_changed, contact.erased"

// subscriptionsCmd manages subscriptions from the command line, on the database (the
// service need not run; a running one picks the change up at its next pass).
func subscriptionsCmd(ctx context.Context, args []string, getenv func(string) string, stdout, stderr io.Writer) error {
	verb, name := "list", "subscriptions [VERB [ID]]"
	if len(args) > 0 && !strings.HasPrefix(args[0], "-") {
		verb, args = args[0], args[1:]
		name = "subscriptions " + verb
	}
	fs := cliFlags(name, subscriptionsUsage, stderr)
	url := fs.String("url", "", "create, update: the endpoint's http(s) URL")
	types := fs.String("types", "", "create, update: change types, comma-separated")
	providers := fs.String("providers", "", "create, update: only these providers' conversations (e.g. meta or generic:acme), comma-separated; update: \"\" for every provider")
	allowPrivate := fs.Bool("allow-private", getenv("INBOX_DELIVERY_ALLOW_PRIVATE") == "true", "create, update: allow a loopback or private address (default: INBOX_DELIVERY_ALLOW_PRIVATE); ping: send to one")
	state := fs.String("state", "", "deliveries: only this state: "+strings.Join(delivery.States, ", "))
	limit := fs.Int("limit", 20, "deliveries: how many, at most")
	before := fs.Int64("before", 0, "deliveries: only those with an id below this one (the next page)")
	from := fs.String("from", "", "replay: the change id to deliver again from, itself included")
	keep := fs.Duration("keep-previous", delivery.DefaultPreviousSecret, "rotate: how long the secret replaced goes on signing beside the new one (0: it stops at once; at most a week)")
	asJSON := fs.Bool("json", false, "list, deliveries: print JSON lines instead of a table")
	// The id comes before or after the flags: `replay 3 --from X` and `replay --from X 3`.
	if err := parseArgs(fs, args); err != nil {
		return err
	}
	idArg := fs.Arg(0)
	var id int64
	switch verb {
	case "list", "create":
		if err := strayArgument(fs); err != nil {
			return err
		}
	case "show", "update", "deliveries", "replay", "rotate", "end-previous", "ping", "pause", "resume", "delete":
		if fs.NArg() > 1 {
			return usageError{fmt.Errorf("inboxd subscriptions %s takes one subscription id, got %d arguments", verb, fs.NArg())}
		}
		n, err := strconv.ParseInt(idArg, 10, 64)
		if err != nil || n < 1 {
			return usageError{fmt.Errorf("inboxd subscriptions %s needs a subscription id (`inboxd subscriptions` lists them), got %q", verb, idArg)}
		}
		id = n
	default:
		return usageError{fmt.Errorf("unknown subcommand %q\n%s", verb, subscriptionsUsage)}
	}
	if verb == "replay" && !flagSet(fs.Visit, "from") {
		return usageError{errors.New(`replay needs --from: the change id to deliver again from (a dead delivery's change_id), or --from "" for everything kept`)}
	}
	if verb == "create" && (*url == "" || *types == "") {
		return usageError{fmt.Errorf("create needs --url and --types, e.g. --url https://crm.example.com/hooks --types %s", strings.Join(feed.Types[:2], ","))}
	}
	pool, err := cliPool(ctx, fs, getenv)
	if err != nil {
		return err
	}
	defer pool.Close()
	cliErr := func(err error) error {
		switch {
		case errors.Is(err, delivery.ErrNotFound):
			return usageError{fmt.Errorf("%w (`inboxd subscriptions` lists them)", err)}
		case errors.Is(err, delivery.ErrRefused):
			return callerError(fmt.Errorf("%w (or, here, --allow-private)", err), delivery.ErrBadRequest)
		case errors.Is(err, delivery.ErrBadRequest):
			return callerError(err, delivery.ErrBadRequest)
		case errors.Is(err, delivery.ErrConflict):
			return callerError(err, delivery.ErrConflict)
		case errors.Is(err, feed.ErrCursorExpired):
			return usageError{err}
		}
		return dbAdvice(err)
	}
	// printed prints what a one-subscription verb returned as JSON, or says what
	// went wrong.
	printed := func(v any, err error) error {
		if err != nil {
			return cliErr(err)
		}
		return printJSON(stdout, v)
	}
	// printedQuietly is printed for the verbs that change a subscription: the secret
	// is left out, as the usage says, so that pausing one during an incident does not
	// put it on a shared screen or in a scrollback. create, show and rotate print it.
	printedQuietly := func(sub delivery.Subscription, err error) error {
		sub.Secret = ""
		return printed(sub, err)
	}
	// privateNote says, after a create or update that --allow-private let through,
	// that the server's own setting decides whether anything is delivered there.
	privateNote := func() {
		if *url == "" || !flagSet(fs.Visit, "allow-private") || getenv("INBOX_DELIVERY_ALLOW_PRIVATE") == "true" {
			return
		}
		if err := delivery.CheckURL(ctx, *url, false); errors.Is(err, delivery.ErrRefused) {
			fmt.Fprintln(stderr, "note: this address is not public: the server delivers to it only when it runs with INBOX_DELIVERY_ALLOW_PRIVATE=true; otherwise each delivery dies at its first attempt")
		}
	}
	switch verb {
	case "list":
		subs, err := delivery.List(ctx, pool)
		if err != nil {
			return cliErr(err)
		}
		if *asJSON {
			return printLines(stdout, subs)
		}
		tw := tabwriter.NewWriter(stdout, 0, 0, 2, ' ', 0)
		fmt.Fprintln(tw, "id\tstate\turl\ttypes\tfailures\tblocked_until")
		for _, s := range subs {
			blocked := ""
			if s.BlockedUntil != nil && s.BlockedUntil.After(time.Now()) {
				blocked = s.BlockedUntil.UTC().Format(time.RFC3339)
			}
			fmt.Fprintf(tw, "%d\t%s\t%s\t%s\t%d\t%s\n", s.ID, s.State, printable(s.URL), strings.Join(s.Types, ","), s.Failures, blocked)
		}
		return tw.Flush()
	case "create":
		sub, err := delivery.Create(ctx, pool, *url, splitList(*types), *allowPrivate, providerList(*providers)...)
		if err == nil {
			privateNote()
		}
		return printed(sub, err)
	case "update":
		var c delivery.Change
		if flagSet(fs.Visit, "url") {
			c.URL = url
		}
		if flagSet(fs.Visit, "types") {
			c.Types = splitList(*types)
		}
		if flagSet(fs.Visit, "providers") {
			only := providerList(*providers)
			c.Providers = &only
		}
		sub, err := delivery.Update(ctx, pool, id, c, *allowPrivate)
		if err == nil && c.URL != nil {
			privateNote()
		}
		return printedQuietly(sub, err)
	case "show":
		return printed(delivery.Get(ctx, pool, id))
	case "deliveries":
		if *limit < 1 || *before < 0 {
			return usageError{fmt.Errorf("--limit must be at least 1 and --before a delivery id, got %d and %d", *limit, *before)}
		}
		ds, err := delivery.Deliveries(ctx, pool, id, *state, *before, *limit+1) // one more, to know whether there is a next page
		if err != nil {
			return cliErr(err)
		}
		ds, more := firstPage(ds, *limit)
		if more {
			fmt.Fprintf(stderr, "more deliveries: the next page is --before %d (with the same --state)\n", ds[*limit-1].ID)
		}
		if *asJSON {
			return printLines(stdout, ds)
		}
		tw := tabwriter.NewWriter(stdout, 0, 0, 2, ' ', 0)
		fmt.Fprintln(tw, "id\tchange_id\tconversation\tstate\tattempts\tlast_status\tlast_error")
		for _, d := range ds {
			status, lastErr := "", ""
			if d.LastStatus != nil {
				status = strconv.Itoa(*d.LastStatus)
			}
			if d.LastError != nil {
				lastErr = *d.LastError
			}
			fmt.Fprintf(tw, "%d\t%s\t%d\t%s\t%d\t%s\t%s\n", d.ID, d.ChangeID, d.ConversationID, d.State, d.Attempts, status, printable(lastErr))
		}
		return tw.Flush()
	case "replay":
		return printedQuietly(delivery.Replay(ctx, pool, id, *from))
	case "end-previous":
		return printedQuietly(delivery.EndPreviousSecret(ctx, pool, id))
	case "ping":
		d := delivery.New(pool, delivery.Config{AllowPrivate: *allowPrivate}, zap.NewNop(), delivery.NewMetrics(prometheus.NewRegistry()))
		return printed(d.Ping(ctx, id))
	case "rotate":
		return printed(delivery.RotateSecret(ctx, pool, id, *keep))
	case "pause", "resume":
		f := delivery.Pause
		if verb == "resume" {
			f = delivery.Resume
		}
		return printedQuietly(f(ctx, pool, id))
	default: // delete
		if err := delivery.Delete(ctx, pool, id); err != nil {
			return cliErr(err)
		}
		fmt.Fprintf(stdout, "subscription %d deleted\n", id)
		return nil
	}
}

// splitList splits a comma-separated flag, each item trimmed ("a, b" is a and b).
func splitList(s string) []string {
	items := strings.Split(s, ",")
	for i := range items {
		items[i] = strings.TrimSpace(items[i])
	}
	return items
}

// providerList reads --providers: none ("") is every provider.
func providerList(s string) []string {
	if s == "" {
		return []string{}
	}
	return splitList(s)
}

// flagSet reports whether the flag was given (visit is a parsed FlagSet's Visit).
func flagSet(visit func(func(*flag.Flag)), name string) bool {
	set := false
	visit(func(f *flag.Flag) { set = set || f.Name == name })
	return set
}

// printLines prints each value as a JSON line.
func printLines[T any](w io.Writer, vs []T) error {
	enc := json.NewEncoder(w)
	for _, v := range vs {
		if err := enc.Encode(v); err != nil {
			return err
		}
	}
	return nil
}
