package console

import (
	"errors"
	"fmt"
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/go-chi/chi/v5"
	"go.uber.org/zap"

	"inboxd/internal/delivery"
	"inboxd/internal/feed"
	"inboxd/internal/privacy"
	"inboxd/internal/readmodel"
)

// Conversations: the latest conversations, or a contact's, found through a POST form
// so that the address stays out of URLs, browser history and access logs; and one
// conversation's thread with each message's status.

type conversationsData struct {
	Contact       string
	LookedUp      string // how the contact was looked up (privacy.Subject.LookedUp)
	Conversations []readmodel.Conversation
	Older         *readmodel.Key // the next page's position; nil: this is the last
}

// conversationsPage is how many conversations a page shows.
const conversationsPage = 50

func (c *console) conversations(w http.ResponseWriter, r *http.Request) {
	f := readmodel.ConversationFilter{Limit: conversationsPage + 1} // one more, to know whether there is an older page
	d := conversationsData{}
	if err := inURL(r, "contact"); err != nil {
		c.filterFail(w, r, err)
		return
	}
	if q := r.URL.Query(); q.Get("at") != "" || q.Get("id") != "" {
		at, terr := time.Parse(time.RFC3339Nano, q.Get("at"))
		id, ierr := strconv.ParseInt(q.Get("id"), 10, 64)
		if terr != nil || ierr != nil || id < 1 {
			c.fail(w, r, nil, http.StatusBadRequest, "at and id must be a conversation's last message time (RFC 3339) and its id, as the Older link gives them.")
			return
		}
		f.After = &readmodel.Key{T: at, ID: id}
	}
	if r.Method == http.MethodPost {
		if d.Contact = strings.TrimSpace(r.PostFormValue("contact")); d.Contact != "" {
			s, err := privacy.NewSubject(d.Contact, "", c.cfg.Redaction) // its hashes too, as the events' filter
			if err != nil {
				c.filterFail(w, r, err)
				return
			}
			f.Contacts, d.LookedUp = s.Forms, s.LookedUp()
		}
	}
	cs, err := readmodel.ListConversations(r.Context(), c.cfg.Pool, f)
	if err != nil {
		c.dbFail(w, r, err)
		return
	}
	d.Conversations = cs
	if len(cs) > conversationsPage {
		last := cs[conversationsPage-1]
		d.Conversations = cs[:conversationsPage]
		if d.Contact == "" { // a contact's are found by a POST, and its few fit a page
			d.Older = &readmodel.Key{T: last.LastMessageAt, ID: last.ID}
		}
	}
	c.render(w, r, http.StatusOK, "conversations", view{Title: "Conversations", Nav: "conversations", Data: d})
}

type threadData struct {
	readmodel.Thread
	Shown    int // the most messages the page shows
	CanErase bool
}

// threadMessages is the most messages a conversation's page shows: its latest.
const threadMessages = 200

func (c *console) conversation(w http.ResponseWriter, r *http.Request) {
	id, ok := c.pathID(w, r, "conversation")
	if !ok {
		return
	}
	thread, err := readmodel.ReadThread(r.Context(), c.cfg.Pool, id, threadMessages)
	if err != nil {
		c.dbFail(w, r, err)
		return
	}
	c.render(w, r, http.StatusOK, "conversation", view{Title: "Conversation " + strconv.FormatInt(id, 10), Nav: "conversations",
		Data: threadData{Thread: thread, Shown: threadMessages, CanErase: c.cfg.Eraser != nil}})
}

// Subscriptions (outbound webhooks): each with its breaker and deliveries by state,
// and a subscription's dead deliveries with their errors.

type subscriptionsData struct {
	Subscriptions []delivery.Subscription
	CanPing       bool
	Form          subscriptionForm // the new subscription's
	Keeps         []keepChoice     // the rotation's choices
}

// actionDone is what the subscriptions page says after an action (?done=), by name:
// the address carries no text of its own.
var actionDone = map[string]string{
	"pause":        "Paused: nothing is sent until it is resumed; what it is owed meanwhile is kept.",
	"resume":       "Resumed: what waited is being sent, and the breaker is closed.",
	"replay":       "Replayed: that change and every one after it are being sent again, in order.",
	"end-previous": "The old secret no longer signs: deliveries carry the new secret's signature only.",
	"delete":       "Deleted, with every delivery it was owed.",
	"update":       "Changed: the changes after its position go to its URL, as its types and providers now choose them.",
}

func (c *console) subscriptions(w http.ResponseWriter, r *http.Request) {
	v := view{Title: "Subscriptions", Nav: "subscriptions", Flash: actionDone[r.URL.Query().Get("done")]}
	c.subscriptionsPage(w, r, http.StatusOK, v, defaultForm)
}

// subscriptionsPage renders the subscriptions, each with its deliveries by state,
// with v's flash or error, and the new-subscription form filled in as f.
func (c *console) subscriptionsPage(w http.ResponseWriter, r *http.Request, status int, v view, f subscriptionForm) {
	subs, err := delivery.List(r.Context(), c.cfg.Pool)
	if err != nil {
		c.dbFail(w, r, err)
		return
	}
	for i := range subs {
		full, err := delivery.Get(r.Context(), c.cfg.Pool, subs[i].ID)
		if err != nil {
			c.dbFail(w, r, err)
			return
		}
		subs[i].Deliveries = full.Deliveries // the secret stays out of the page
	}
	v.Data = subscriptionsData{Subscriptions: subs, CanPing: c.cfg.Ping != nil, Form: f, Keeps: rotationKeeps}
	c.render(w, r, status, "subscriptions", v)
}

// subscriptionAction pauses, resumes, replays (from the form's change id), pings a
// subscription or stops its rotated-out secret (admin only). A ping's answer is
// shown at once; the others lead back to the list, which says what was done.
func (c *console) subscriptionAction(w http.ResponseWriter, r *http.Request) {
	action := chi.URLParam(r, "action")
	if !c.requireAdmin(w, r, action+" a subscription") {
		return
	}
	id, ok := c.pathID(w, r, "subscription")
	if !ok {
		return
	}
	ctx := r.Context()
	var err error
	switch action {
	case "ping":
		if c.cfg.Ping == nil {
			c.fail(w, r, nil, http.StatusNotFound, "This console cannot ping: it runs without a deliverer.")
			return
		}
		p, err := c.cfg.Ping(ctx, id)
		if err != nil {
			c.deliveryFail(w, r, err)
			return
		}
		c.cfg.Log.Info("console subscription ping", zap.Int64("subscription_id", id), zap.Bool("delivered", p.Delivered))
		v := view{Title: "Subscriptions", Nav: "subscriptions"}
		if p.Delivered {
			v.Flash = fmt.Sprintf("Ping of subscription %d: the endpoint answered %d in %.1f ms.", id, *p.Status, p.DurationMS)
		} else {
			v.Error = fmt.Sprintf("Ping of subscription %d: not delivered: %s.", id, *p.Error)
		}
		c.subscriptionsPage(w, r, http.StatusOK, v, defaultForm)
		return
	case "end-previous":
		_, err = delivery.EndPreviousSecret(ctx, c.cfg.Pool, id)
	case "pause":
		_, err = delivery.Pause(ctx, c.cfg.Pool, id)
	case "resume":
		_, err = delivery.Resume(ctx, c.cfg.Pool, id)
	case "replay":
		_, err = delivery.Replay(ctx, c.cfg.Pool, id, r.PostFormValue("from"))
	}
	if err != nil {
		c.deliveryFail(w, r, err)
		return
	}
	c.cfg.Log.Info("console subscription "+action, zap.Int64("subscription_id", id))
	if (action == "resume" || action == "replay") && c.cfg.WakeDeliveries != nil {
		c.cfg.WakeDeliveries()
	}
	http.Redirect(w, r, "/console/subscriptions?done="+action, http.StatusSeeOther)
}

type deliveriesData struct {
	Subscription int64
	State        string
	Deliveries   []delivery.Delivery
	Older        int64 // the next page's before; 0: this is the last
}

// deliveriesPage is how many deliveries a page shows.
const deliveriesPage = 100

func (c *console) deliveries(w http.ResponseWriter, r *http.Request) {
	id, ok := c.pathID(w, r, "subscription")
	if !ok {
		return
	}
	q := r.URL.Query()
	state := q.Get("state")
	var before int64
	if b := q.Get("before"); b != "" {
		var err error
		if before, err = strconv.ParseInt(b, 10, 64); err != nil || before < 1 {
			c.fail(w, r, nil, http.StatusBadRequest, "before must be a delivery id, a positive whole number (the Older link gives one).")
			return
		}
	}
	// One more than a page, to know whether there is an older one.
	ds, err := delivery.Deliveries(r.Context(), c.cfg.Pool, id, state, before, deliveriesPage+1)
	if err != nil {
		c.deliveryFail(w, r, err)
		return
	}
	d := deliveriesData{Subscription: id, State: state, Deliveries: ds}
	if len(ds) > deliveriesPage {
		d.Deliveries, d.Older = ds[:deliveriesPage], ds[deliveriesPage-1].ID
	}
	c.render(w, r, http.StatusOK, "deliveries", view{Title: "Deliveries", Nav: "subscriptions", Data: d})
}

func (c *console) deliveryFail(w http.ResponseWriter, r *http.Request, err error) {
	switch {
	case errors.Is(err, delivery.ErrNotFound):
		c.fail(w, r, nil, http.StatusNotFound, err.Error()+"; the Subscriptions page lists them")
	case errors.Is(err, delivery.ErrBadRequest):
		c.fail(w, r, nil, http.StatusBadRequest, err.Error())
	case errors.Is(err, delivery.ErrConflict):
		c.fail(w, r, nil, http.StatusConflict, err.Error())
	case errors.Is(err, feed.ErrCursorExpired):
		c.fail(w, r, nil, http.StatusGone, err.Error())
	default:
		c.dbFail(w, r, err)
	}
}
