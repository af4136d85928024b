package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"strings"
	"text/tabwriter"
	"time"
	"unicode"

	"inboxd/internal/privacy"
	"inboxd/internal/provider/registry"
	"inboxd/internal/readmodel"
)

// conversationsCmd lists conversations, latest activity first: all, or a contact's
// (the address as people type it: "+1 555 123 4567", "15551234567" and
// "+15551234567" are one number).
func conversationsCmd(ctx context.Context, args []string, getenv func(string) string, stdout, stderr io.Writer) error {
	if len(args) > 0 && args[0] == "show" {
		return threadCmd(ctx, args[1:], getenv, stdout, stderr)
	}
	var f readmodel.ConversationFilter
	var contact string
	var asJSON bool
	fs := cliFlags("conversations", "Lists conversations, latest activity first. `inboxd conversations show ID` shows one\n"+
		"with its latest messages.\n  inboxd conversations --contact +15551234567", stderr)
	fs.StringVar(&contact, "contact", "", "only this contact's (a phone number in any usual spelling, or a provider's user id; found hashed too, under INBOX_REDACT)")
	fs.StringVar(&f.Provider, "provider", "", "only this provider's: "+strings.Join(registry.Names(), ", "))
	fs.IntVar(&f.Limit, "limit", 20, "how many, at most")
	fs.BoolVar(&asJSON, "json", false, "print JSON lines instead of a table")
	if err := parseFlags(fs, args); err != nil {
		return err
	}
	if err := readmodel.CheckProvider(f.Provider); err != nil { // before connecting: a typo is not a database problem
		return usageError{err}
	}
	if f.Limit < 1 {
		return usageError{fmt.Errorf("--limit must be at least 1, got %d", f.Limit)}
	}
	var subject privacy.Subject
	if contact != "" {
		policy, err := redactionFromEnv(getenv)
		if err != nil {
			return err
		}
		if subject, err = privacy.NewSubject(contact, f.Provider, policy); err != nil {
			return callerError(err, privacy.ErrBadRequest)
		}
		f.Contacts = subject.Forms
	}
	pool, err := cliPool(ctx, fs, getenv)
	if err != nil {
		return err
	}
	defer pool.Close()
	limit := f.Limit
	f.Limit++ // one more, to know whether some are left out
	list, err := readmodel.ListConversations(ctx, pool, f)
	if err != nil {
		return dbAdvice(err)
	}
	list, more := firstPage(list, limit)
	if more {
		fmt.Fprintf(stderr, "more conversations: these are the %d with the latest activity; raise --limit, or narrow with --contact or --provider\n", limit)
	}
	if asJSON {
		return printLines(stdout, list)
	}
	if len(list) == 0 && contact != "" {
		fmt.Fprintf(stderr, "no conversation with %s: looked up as %s\n", printable(contact), subject.LookedUp())
	}
	tw := tabwriter.NewWriter(stdout, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "id\tprovider\tchannel\tcontact\tlast_message_at")
	for _, c := range list {
		fmt.Fprintf(tw, "%d\t%s\t%s\t%s\t%s\n", c.ID, c.Provider, printable(c.ChannelAddress), printable(c.ContactAddress),
			c.LastMessageAt.UTC().Format(time.RFC3339))
	}
	return tw.Flush()
}

// threadCmd prints one conversation with its latest messages, oldest first as a
// thread reads: a line per message with its time, direction, status and text.
func threadCmd(ctx context.Context, args []string, getenv func(string) string, stdout, stderr io.Writer) error {
	fs := cliFlags("conversations show", "Shows one conversation with its latest messages, oldest first.\n  inboxd conversations show ID", stderr)
	limit := fs.Int("limit", 20, "how many of the latest messages, at most")
	asJSON := fs.Bool("json", false, "print the conversation and its messages as one JSON document, as the API shows them")
	if err := parseArgs(fs, args); err != nil {
		return err
	}
	id, err := showID(fs, "conversation", "conversations")
	if err != nil {
		return err
	}
	if *limit < 1 {
		return usageError{fmt.Errorf("--limit must be at least 1, got %d", *limit)}
	}
	pool, err := cliPool(ctx, fs, getenv)
	if err != nil {
		return err
	}
	defer pool.Close()
	thread, err := readmodel.ReadThread(ctx, pool, id, *limit)
	if errors.Is(err, readmodel.ErrNotFound) {
		return fmt.Errorf("%w (`inboxd conversations` lists them)", err)
	}
	if err != nil {
		return dbAdvice(err)
	}
	if thread.Earlier {
		fmt.Fprintf(stderr, "earlier messages: these are the latest %d; raise --limit, or page through them all with GET /v1/conversations/%d/messages\n", *limit, id)
	}
	if *asJSON {
		return printJSON(stdout, thread)
	}
	c := thread.Conversation
	fmt.Fprintf(stdout, "conversation %d  %s  channel %s  contact %s", c.ID, c.Provider, printable(c.ChannelAddress), printable(c.ContactAddress))
	if c.ContactName != nil {
		fmt.Fprintf(stdout, " (%s)", printable(*c.ContactName))
	}
	fmt.Fprintln(stdout)
	if len(thread.Messages) == 0 {
		fmt.Fprintln(stdout, "no messages")
		return nil
	}
	tw := tabwriter.NewWriter(stdout, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "id\tsent_at\tdirection\tstatus\ttext")
	for _, m := range thread.Messages {
		fmt.Fprintf(tw, "%d\t%s\t%s\t%s\t%s\n", m.ID, m.SentAt.UTC().Format(time.RFC3339), m.Direction, m.Status, oneLine(m))
	}
	return tw.Flush()
}

// oneLine is a message's text on one line, cut at 80 characters (--json has it
// whole), or its type in brackets where it has none (an image, a location).
func oneLine(m readmodel.Message) string {
	if m.Text == nil {
		return "(" + m.Type + ")"
	}
	text := strings.Join(strings.FieldsFunc(*m.Text, func(r rune) bool { return unicode.IsSpace(r) || unicode.IsControl(r) }), " ")
	if r := []rune(text); len(r) > 80 {
		text = string(r[:79]) + "…"
	}
	return text
}
