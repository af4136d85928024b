package console

import (
	"errors"
	"fmt"
	"net/http"
	"strconv"
	"strings"
	"time"

	"go.uber.org/zap"

	"inboxd/internal/privacy"
	"inboxd/internal/processor"
	"inboxd/internal/provider/registry"
	"inboxd/internal/readmodel"
	"inboxd/internal/replay"
)

// Events: the list with its filter, and bulk replays of what a filter selects.
//
// The enumerated parts of a filter (state, provider, external id, time range) may be
// in the URL, so that the overview links to them; a contact, a payload text or a
// JSON path are personal or may be, so the form is POSTed and its next page is a form
// too: none of them reaches a URL, the browser's history or an access log.

// filterForm is the filter as the form holds it.
type filterForm struct {
	State, Provider, ExternalID string
	From, To                    string // datetime-local, UTC
	Contact, Text, Path         string
	// Error: dead events with exactly this last error (a failures page group), when
	// HasError.
	Error    string
	HasError bool
	// LookedUp is how Contact was looked up (privacy.Subject.LookedUp), for the
	// page that finds nothing.
	LookedUp string
}

// timeLayouts are what an <input type="datetime-local"> sends, with or without
// seconds, and RFC 3339.
var timeLayouts = []string{"2006-01-02T15:04", "2006-01-02T15:04:05", time.RFC3339}

func parseTime(name, v string) (time.Time, error) {
	if v == "" {
		return time.Time{}, nil
	}
	for _, l := range timeLayouts {
		if t, err := time.ParseInLocation(l, v, time.UTC); err == nil {
			return t, nil
		}
	}
	return time.Time{}, fmt.Errorf("%w: %s must be a date and time like 2026-12-03T14:05 (UTC)", readmodel.ErrBadFilter, name)
}

// inURL refuses a request whose URL carries one of the form fields that must stay out
// of URLs (access logs and browser history keep them): a hand-made link gets told why,
// rather than a page that ignored it.
func inURL(r *http.Request, names ...string) error {
	for _, name := range names {
		if r.URL.Query().Has(name) {
			return fmt.Errorf("%w: %s is personal, or may be, so it is sent in the filter form's body, never in a URL (access logs and browser history keep URLs): use the form on the page", readmodel.ErrBadFilter, name)
		}
	}
	return nil
}

// parseFilter reads the filter from the query string or the form.
func (c *console) parseFilter(r *http.Request) (filterForm, readmodel.EventFilter, error) {
	if err := inURL(r, "contact", "text", "path", "error"); err != nil {
		return filterForm{}, readmodel.EventFilter{Limit: 50}, err
	}
	ff := filterForm{
		State: r.FormValue("state"), Provider: r.FormValue("provider"), ExternalID: strings.TrimSpace(r.FormValue("external_id")),
		From: r.FormValue("from"), To: r.FormValue("to"),
	}
	if r.Method == http.MethodPost {
		ff.Contact, ff.Text, ff.Path = strings.TrimSpace(r.PostFormValue("contact")), r.PostFormValue("text"), strings.TrimSpace(r.PostFormValue("path"))
		_, ff.HasError = r.PostForm["error"]
		ff.Error = r.PostFormValue("error")
	}
	f := readmodel.EventFilter{State: ff.State, Provider: ff.Provider, ExternalID: ff.ExternalID, Text: ff.Text, Path: ff.Path,
		Error: ff.Error, HasError: ff.HasError, Limit: 50}
	var err error
	if f.From, err = parseTime("from", ff.From); err != nil {
		return ff, f, err
	}
	if f.To, err = parseTime("to", ff.To); err != nil {
		return ff, f, err
	}
	if ff.Contact != "" {
		s, err := privacy.NewSubject(ff.Contact, ff.Provider, c.cfg.Redaction)
		if err != nil {
			return ff, f, err
		}
		f.Contacts, ff.LookedUp = s.Forms, s.LookedUp()
	}
	if v := r.FormValue("before"); v != "" {
		n, err := strconv.ParseInt(v, 10, 64)
		if err != nil || n < 1 {
			return ff, f, fmt.Errorf("%w: before must be an event id (the next page's button has one)", readmodel.ErrBadFilter)
		}
		f.Before = n
	}
	return ff, f, f.Validate()
}

type eventsData struct {
	Form      filterForm
	States    []string
	Providers []string
	Page      readmodel.SearchPage
	// Replayable: the filter's state can be replayed in bulk.
	Replayable bool
}

func (c *console) events(w http.ResponseWriter, r *http.Request) {
	ff, f, err := c.parseFilter(r)
	d := eventsData{Form: ff, States: processor.States, Providers: registry.Names(), Replayable: replay.Check(f) == nil}
	if err == nil {
		d.Page, err = readmodel.SearchEvents(r.Context(), c.cfg.Pool, f)
	}
	if err != nil {
		c.filterFail(w, r, err)
		return
	}
	c.render(w, r, http.StatusOK, "events", view{Title: "Events", Nav: "events", Data: d})
}

// filterFail answers a filter that cannot be run: 400 with what to change, or a
// database error.
func (c *console) filterFail(w http.ResponseWriter, r *http.Request, err error) {
	if errors.Is(err, readmodel.ErrBadFilter) || errors.Is(err, readmodel.ErrTooSlow) || errors.Is(err, privacy.ErrBadRequest) ||
		errors.Is(err, replay.ErrBadRequest) {
		c.fail(w, r, nil, http.StatusBadRequest, err.Error())
		return
	}
	c.dbFail(w, r, err)
}

// requireAdmin answers 403 to a read-only session and reports whether the caller may
// change things.
func (c *console) requireAdmin(w http.ResponseWriter, r *http.Request, what string) bool {
	s := sessionOf(r)
	if !s.admin() {
		c.fail(w, r, &s, http.StatusForbidden, "A read-only console session cannot "+what+": log in with an admin token (INBOX_ADMIN_TOKENS).")
		return false
	}
	return true
}

// sampleSize is how many of a bulk replay's events its confirmation shows.
const sampleSize = 10

type previewData struct {
	Form     filterForm
	Count    int64
	TooMany  bool
	UpTo     int64
	Sample   []readmodel.Event
	Rate     int
	MaxRate  int
	MaxCount int
}

// replayPreview is a bulk replay's confirmation: how many events the filter selects
// now, the oldest of them, and the rate to replay them at.
func (c *console) replayPreview(w http.ResponseWriter, r *http.Request) {
	if !c.requireAdmin(w, r, "replay") {
		return
	}
	ff, f, err := c.parseFilter(r)
	if err == nil {
		err = replay.Check(f)
	}
	if err != nil {
		c.filterFail(w, r, err)
		return
	}
	upTo, n, sample, err := readmodel.Matching(r.Context(), c.cfg.Pool, f, replay.MaxEvents, sampleSize)
	if err != nil {
		c.filterFail(w, r, err)
		return
	}
	d := previewData{Form: ff, Count: n, TooMany: n > replay.MaxEvents, UpTo: upTo, Sample: sample,
		Rate: replay.DefaultRate, MaxRate: replay.MaxRate, MaxCount: replay.MaxEvents}
	c.render(w, r, http.StatusOK, "replay-preview", view{Title: "Replay these events?", Nav: "events", Data: d})
}

// replayStart starts the bulk replay the operator confirmed.
func (c *console) replayStart(w http.ResponseWriter, r *http.Request) {
	if !c.requireAdmin(w, r, "replay") {
		return
	}
	_, f, err := c.parseFilter(r)
	if err != nil {
		c.filterFail(w, r, err)
		return
	}
	upTo, err1 := strconv.ParseInt(r.PostFormValue("up_to"), 10, 64)
	total, err2 := strconv.ParseInt(r.PostFormValue("total"), 10, 64)
	rate, err3 := strconv.Atoi(r.PostFormValue("rate"))
	if err1 != nil || err2 != nil || upTo < 0 || total < 0 {
		c.fail(w, r, nil, http.StatusBadRequest, "This confirmation is incomplete: go back to the events, filter and press Replay again.")
		return
	}
	if err3 != nil {
		c.fail(w, r, nil, http.StatusBadRequest, "The rate must be a whole number of events a second, from 1 to "+strconv.Itoa(replay.MaxRate)+".")
		return
	}
	id, err := replay.Start(r.Context(), c.cfg.Pool, f, upTo, total, rate, sessionOf(r).role)
	if err != nil {
		c.filterFail(w, r, err)
		return
	}
	if c.cfg.WakeReplays != nil {
		c.cfg.WakeReplays()
	}
	c.cfg.Log.Info("console bulk replay", zap.Int64("replay_id", id), zap.Int64("events", total), zap.Int("rate", rate))
	http.Redirect(w, r, "/console/replays/"+strconv.FormatInt(id, 10), http.StatusSeeOther)
}

func (c *console) replays(w http.ResponseWriter, r *http.Request) {
	jobs, err := replay.List(r.Context(), c.cfg.Pool, 100)
	if err != nil {
		c.dbFail(w, r, err)
		return
	}
	c.render(w, r, http.StatusOK, "replays", view{Title: "Replays", Nav: "replays", Data: jobs})
}

type jobData struct {
	Job     replay.Job
	Percent int
}

func (c *console) replayJob(w http.ResponseWriter, r *http.Request) {
	id, ok := c.pathID(w, r, "replay")
	if !ok {
		return
	}
	j, err := replay.Get(r.Context(), c.cfg.Pool, id)
	if errors.Is(err, replay.ErrNotFound) {
		c.fail(w, r, nil, http.StatusNotFound, err.Error())
		return
	}
	if err != nil {
		c.dbFail(w, r, err)
		return
	}
	d := jobData{Job: j, Percent: 100}
	if j.State == "running" && j.Total > 0 {
		d.Percent = int(min(99, j.Requeued*100/j.Total))
	}
	v := view{Title: "Replay " + strconv.FormatInt(id, 10), Nav: "replays", Data: d}
	if j.State == "running" {
		v.Refresh = 2 // the page follows the job without a script
	}
	c.render(w, r, http.StatusOK, "replay", v)
}

func (c *console) replayCancel(w http.ResponseWriter, r *http.Request) {
	if !c.requireAdmin(w, r, "cancel a replay") {
		return
	}
	id, ok := c.pathID(w, r, "replay")
	if !ok {
		return
	}
	if _, err := replay.Cancel(r.Context(), c.cfg.Pool, id); err != nil {
		c.dbFail(w, r, err)
		return
	}
	c.cfg.Log.Info("console replay cancelled", zap.Int64("replay_id", id))
	http.Redirect(w, r, "/console/replays/"+strconv.FormatInt(id, 10), http.StatusSeeOther)
}
