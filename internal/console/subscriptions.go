package console

import (
	"errors"
	"fmt"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"time"

	"go.uber.org/zap"

	"inboxd/internal/delivery"
	"inboxd/internal/feed"
)

// Subscriptions made, changed, rotated and deleted from the console (admin only).
// A secret is shown on its subscription's secret page only, to an admin, as the API
// shows it to admins: never in the list, a URL or a log line. A create or a
// rotation answers with a redirect to that page (POST, redirect, GET), so that
// reloading it shows the secret again rather than making a second subscription or
// rotating once more, which would drop the secret just copied.

// subscriptionForm is the form that creates or changes a subscription, kept as
// typed when it is refused.
type subscriptionForm struct {
	URL       string
	Types     []string
	Providers string
}

// Checked reports whether the form has type t ticked.
func (f subscriptionForm) Checked(t string) bool { return slices.Contains(f.Types, t) }

// AllTypes are the types the form offers: every change type.
func (subscriptionForm) AllTypes() []string { return feed.Types }

// postedForm reads the subscription form of a POST.
func postedForm(r *http.Request) subscriptionForm {
	return subscriptionForm{URL: strings.TrimSpace(r.PostFormValue("url")), Types: r.PostForm["types"], Providers: strings.TrimSpace(r.PostFormValue("providers"))}
}

// reason is what a page says of a request refused with err, a wrapped kind (such as
// delivery.ErrBadRequest): its message without the kind's word.
func reason(err, kind error) string {
	return strings.TrimPrefix(err.Error(), kind.Error()+": ") + "."
}

// defaultForm is the form as the page first shows it: every type ticked.
var defaultForm = subscriptionForm{Types: feed.Types}

// secretData is the secret page: the subscription, and what led there (?done=).
type secretData struct {
	Subscription delivery.Subscription
	Done         string // "create", "rotate" or nothing
}

// keepChoice is one of the rotation's choices: a duration and what it means.
type keepChoice struct{ Value, Label string }

// rotationKeeps are the console's choices of how long a rotated-out secret goes on
// signing, the API's default first.
var rotationKeeps = []keepChoice{
	{delivery.DefaultPreviousSecret.String(), "for a day"},
	{"1h", "for an hour"},
	{delivery.MaxPreviousSecret.String(), "for a week"},
	{"0s", "not at all (it leaked)"},
}

// splitList reads a comma- or space-separated list, dropping empty items.
func splitList(s string) []string {
	return strings.FieldsFunc(s, func(r rune) bool { return r == ',' || r == ' ' || r == '\t' || r == '\n' || r == '\r' })
}

func (c *console) createSubscription(w http.ResponseWriter, r *http.Request) {
	if !c.requireAdmin(w, r, "create a subscription") {
		return
	}
	f := postedForm(r)
	s, err := delivery.Create(r.Context(), c.cfg.Pool, f.URL, f.Types, c.cfg.AllowPrivate, splitList(f.Providers)...)
	if errors.Is(err, delivery.ErrBadRequest) {
		c.subscriptionsPage(w, r, http.StatusBadRequest, view{Title: "Subscriptions", Nav: "subscriptions", Error: "Not created: " + reason(err, delivery.ErrBadRequest)}, f)
		return
	}
	if err != nil {
		c.deliveryFail(w, r, err)
		return
	}
	c.cfg.Log.Info("console subscription create", zap.Int64("subscription_id", s.ID), zap.Strings("types", s.Types))
	http.Redirect(w, r, secretPage(s.ID, "create"), http.StatusSeeOther)
}

// secretPage is the address of subscription id's secret page, after done.
func secretPage(id int64, done string) string {
	return "/console/subscriptions/" + strconv.FormatInt(id, 10) + "/secret?done=" + done
}

// secret shows a subscription's secret (admin only), and after a rotation until
// when the old one signs too.
func (c *console) secret(w http.ResponseWriter, r *http.Request) {
	if !c.requireAdmin(w, r, "see a secret") {
		return
	}
	id, ok := c.pathID(w, r, "subscription")
	if !ok {
		return
	}
	s, err := delivery.Get(r.Context(), c.cfg.Pool, id)
	if err != nil {
		c.deliveryFail(w, r, err)
		return
	}
	done := r.URL.Query().Get("done")
	title := "Secret of subscription " + strconv.FormatInt(id, 10)
	switch done {
	case "create":
		title = "Subscription " + strconv.FormatInt(id, 10) + " created"
	case "rotate":
		title += " rotated"
	default:
		done = ""
	}
	c.cfg.Log.Info("console subscription secret shown", zap.Int64("subscription_id", id))
	c.render(w, r, http.StatusOK, "subscription-secret", view{Title: title, Nav: "subscriptions", Data: secretData{Subscription: s, Done: done}})
}

// rotateSecret gives a subscription a new secret, the old one signing too for the
// form's keep (a duration; 0s: not at all).
func (c *console) rotateSecret(w http.ResponseWriter, r *http.Request) {
	if !c.requireAdmin(w, r, "rotate a secret") {
		return
	}
	id, ok := c.pathID(w, r, "subscription")
	if !ok {
		return
	}
	keep, err := time.ParseDuration(r.PostFormValue("keep"))
	if err != nil {
		c.fail(w, r, nil, http.StatusBadRequest, fmt.Sprintf("How long the old secret goes on signing must be a duration such as 24h or 0s, not %q.", clip(r.PostFormValue("keep"), 32)))
		return
	}
	if _, err := delivery.RotateSecret(r.Context(), c.cfg.Pool, id, keep); err != nil {
		c.deliveryFail(w, r, err)
		return
	}
	c.cfg.Log.Info("console subscription rotate", zap.Int64("subscription_id", id), zap.Duration("keep_previous", keep))
	http.Redirect(w, r, secretPage(id, "rotate"), http.StatusSeeOther)
}

type deleteData struct {
	Subscription delivery.Subscription
	Owed         int64 // deliveries not yet made: waiting, pending, delivering
	Dead         int64
}

// deleteSubscription asks first: without the form's confirm it shows what the
// subscription still owes (dropped with it) and a button that confirms.
func (c *console) deleteSubscription(w http.ResponseWriter, r *http.Request) {
	if !c.requireAdmin(w, r, "delete a subscription") {
		return
	}
	id, ok := c.pathID(w, r, "subscription")
	if !ok {
		return
	}
	if r.PostFormValue("confirm") != "yes" {
		s, err := delivery.Get(r.Context(), c.cfg.Pool, id)
		if err != nil {
			c.deliveryFail(w, r, err)
			return
		}
		s.Secret = ""
		d := deleteData{Subscription: s, Owed: s.Deliveries["waiting"] + s.Deliveries["pending"] + s.Deliveries["delivering"], Dead: s.Deliveries["dead"]}
		c.render(w, r, http.StatusOK, "subscription-delete", view{Title: "Delete subscription " + strconv.FormatInt(id, 10) + "?", Nav: "subscriptions", Data: d})
		return
	}
	if err := delivery.Delete(r.Context(), c.cfg.Pool, id); err != nil {
		c.deliveryFail(w, r, err)
		return
	}
	c.cfg.Log.Info("console subscription delete", zap.Int64("subscription_id", id))
	http.Redirect(w, r, "/console/subscriptions?done=delete", http.StatusSeeOther)
}

type editData struct {
	ID   int64
	Form subscriptionForm
}

// editSubscription shows a subscription's URL, types and providers in a form (GET)
// and changes them (POST) in place, keeping its secret and position; a refused
// change is a 400 on the form as typed.
func (c *console) editSubscription(w http.ResponseWriter, r *http.Request) {
	if !c.requireAdmin(w, r, "change a subscription") {
		return
	}
	id, ok := c.pathID(w, r, "subscription")
	if !ok {
		return
	}
	page := func(status int, f subscriptionForm, msg string) {
		c.render(w, r, status, "subscription-edit", view{Title: "Change subscription " + strconv.FormatInt(id, 10), Nav: "subscriptions",
			Error: msg, Data: editData{ID: id, Form: f}})
	}
	if r.Method != http.MethodPost {
		s, err := delivery.Get(r.Context(), c.cfg.Pool, id)
		if err != nil {
			c.deliveryFail(w, r, err)
			return
		}
		page(http.StatusOK, subscriptionForm{URL: s.URL, Types: s.Types, Providers: strings.Join(s.Providers, ", ")}, "")
		return
	}
	f := postedForm(r)
	providers := splitList(f.Providers)
	types := append([]string{}, f.Types...) // none ticked is none, not "keep them"
	_, err := delivery.Update(r.Context(), c.cfg.Pool, id, delivery.Change{URL: &f.URL, Types: types, Providers: &providers}, c.cfg.AllowPrivate)
	if errors.Is(err, delivery.ErrBadRequest) {
		page(http.StatusBadRequest, f, "Not changed: "+reason(err, delivery.ErrBadRequest))
		return
	}
	if err != nil {
		c.deliveryFail(w, r, err)
		return
	}
	c.cfg.Log.Info("console subscription update", zap.Int64("subscription_id", id))
	if c.cfg.WakeDeliveries != nil {
		c.cfg.WakeDeliveries() // a new URL closes the breaker
	}
	http.Redirect(w, r, "/console/subscriptions?done=update", http.StatusSeeOther)
}
