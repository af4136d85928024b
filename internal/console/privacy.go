package console

import (
	"net/http"
	"strings"
	"time"

	"go.uber.org/zap"

	"inboxd/internal/jsonhttp"
	"inboxd/internal/privacy"
	"inboxd/internal/provider/registry"
)

// A contact's erasure and export from the console (admin only), as the API's
// POST /v1/erasures and GET /v1/contacts/{address}/export do them. The contact is
// sent in forms' bodies only, never in an address; the preview shows what an
// erasure would remove (privacy.DryRun) before anything is erased.

// subjectForm is who an erasure or an export is about, as typed.
type subjectForm struct {
	Contact  string
	Provider string // "": every provider
}

// Providers are the choices of the form's provider.
func (subjectForm) Providers() []string { return registry.Names() }

func postedSubject(r *http.Request) subjectForm {
	return subjectForm{Contact: strings.TrimSpace(r.PostFormValue("contact")), Provider: r.PostFormValue("provider")}
}

type erasuresData struct {
	Receipts []privacy.Receipt
	Form     subjectForm
	CanErase bool
}

type previewErasure struct {
	Form    subjectForm
	Subject privacy.Subject
	Counts  privacy.Counts
}

// Nothing reports that nothing is held: the page then says how the address was
// looked up.
func (p previewErasure) Nothing() bool { return p.Counts == privacy.Counts{} }

// Erasures: the receipts, newest first (an erasure keeps no address once done; a
// receipt shows the address's keyed hash), and the form that starts one.
func (c *console) erasures(w http.ResponseWriter, r *http.Request) {
	v := view{Title: "Erasures", Nav: "erasures"}
	if r.URL.Query().Get("done") == "erase" {
		v.Flash = "Erasure started: its receipt below says done once nothing is left (the page reloads itself until then)."
	}
	c.erasuresPage(w, r, http.StatusOK, v, subjectForm{})
}

func (c *console) erasuresPage(w http.ResponseWriter, r *http.Request, status int, v view, f subjectForm) {
	rs, err := privacy.Receipts(r.Context(), c.cfg.Pool, 100)
	if err != nil {
		c.dbFail(w, r, err)
		return
	}
	for _, rec := range rs {
		if rec.State == "running" {
			v.Refresh = 2 // until the receipt says done
		}
	}
	v.Data = erasuresData{Receipts: rs, Form: f, CanErase: c.cfg.Eraser != nil}
	c.render(w, r, status, "erasures", v)
}

// subject reads the form's contact and provider; a refused one is answered (400 on
// the erasures page, saying why) and reported as not ok.
func (c *console) subject(w http.ResponseWriter, r *http.Request, what string) (privacy.Subject, subjectForm, bool) {
	if !c.requireAdmin(w, r, what) {
		return privacy.Subject{}, subjectForm{}, false
	}
	if c.cfg.Eraser == nil {
		c.fail(w, r, nil, http.StatusNotFound, "This console cannot "+what+": it runs without an eraser.")
		return privacy.Subject{}, subjectForm{}, false
	}
	f := postedSubject(r)
	s, err := c.cfg.Eraser.Subject(f.Contact, f.Provider)
	if err != nil {
		c.erasuresPage(w, r, http.StatusBadRequest, view{Title: "Erasures", Nav: "erasures",
			Error: reason(err, privacy.ErrBadRequest)}, f)
		return privacy.Subject{}, f, false
	}
	return s, f, true
}

// erasurePreview (POST /console/erasures/preview) shows what erasing the form's
// contact would remove, with the buttons that erase or export it.
func (c *console) erasurePreview(w http.ResponseWriter, r *http.Request) {
	s, f, ok := c.subject(w, r, "erase or export a contact")
	if !ok {
		return
	}
	counts, err := privacy.DryRun(r.Context(), c.cfg.Pool, s)
	if err != nil {
		c.dbFail(w, r, err)
		return
	}
	c.render(w, r, http.StatusOK, "erasure-preview", view{Title: "Erase this contact?", Nav: "erasures", Data: previewErasure{Form: f, Subject: s, Counts: counts}})
}

// startErasure (POST /console/erasures) records an erasure, which this process's
// eraser runs, and leads to the receipts.
func (c *console) startErasure(w http.ResponseWriter, r *http.Request) {
	s, _, ok := c.subject(w, r, "erase a contact")
	if !ok {
		return
	}
	rec, err := c.cfg.Eraser.Start(r.Context(), s)
	if err != nil {
		c.dbFail(w, r, err)
		return
	}
	c.cfg.Log.Info("console erasure", zap.Int64("erasure_id", rec.ID))
	http.Redirect(w, r, "/console/erasures?done=erase", http.StatusSeeOther)
}

// export (POST /console/exports) sends everything held about the form's contact as
// one JSON document to save (privacy.Export). An error after the first byte breaks
// the download off, which no JSON reader takes for a whole document.
func (c *console) export(w http.ResponseWriter, r *http.Request) {
	s, _, ok := c.subject(w, r, "export a contact")
	if !ok {
		return
	}
	_ = http.NewResponseController(w).SetWriteDeadline(time.Time{}) // as long as the contact's history takes
	out := &jsonhttp.Lazy{W: w, Header: http.Header{"Content-Disposition": {`attachment; filename="inboxd-export.json"`}}}
	if _, err := privacy.Export(r.Context(), c.cfg.Pool, s, out); err != nil {
		if !out.Started {
			c.dbFail(w, r, err)
			return
		}
		c.cfg.Log.Error("console export cut short", zap.Error(err))
		panic(http.ErrAbortHandler)
	}
	c.cfg.Log.Info("console export")
}
