package twilio

import (
	"bytes"
	"crypto/sha1"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os"
	"strings"
	"testing"
	"time"

	"inboxd/internal/provider"
)

// Vectors from Twilio's SDK test suites: twilio-python tests/unit/test_request_validator.py
// and twilio-go client/request_validator_test.go (token "12345", the same URL and
// parameters in both).
const (
	twilioToken = "12345"
	twilioURL   = "https://mycompany.com/myapp.php?foo=1&bar=2"
)

func twilioParams() url.Values {
	return url.Values{
		"CallSid": {"CA1234567890ABCDE"}, "Digits": {"1234"}, "From": {"+14158675309"},
		"To": {"+18005551212"}, "Caller": {"+14158675309"},
	}
}

func TestSignTwilioSDKVectors(t *testing.T) {
	dup := url.Values{"Sid": {"CA123"}, "SidAccount": {"AC123"}, "Digits": {"5678", "1234"}}
	tests := []struct {
		name   string
		url    string
		params url.Values
		want   string
	}{
		{"python/go: compute_signature", twilioURL, twilioParams(), "RSOYDt4T1cUTdK1PDd93/VVr8B8="},
		{"python: duplicate keys, values sorted", twilioURL, dup, "IK+Dwps556ElfBT0I3Rgjkr1wJU="},
		{"python: https with port 443", strings.Replace(twilioURL, ".com", ".com:443", 1), twilioParams(), "kvajT1Ptam85bY51eRf/AJRuM3w="},
		{"python: http with port 80", strings.Replace(strings.Replace(twilioURL, ".com", ".com:80", 1), "https", "http", 1), twilioParams(), "0ZXoZLH/DfblKGATFgpif+LLRf4="},
		{"python/go: http with port 1234", strings.Replace(strings.Replace(twilioURL, ".com", ".com:1234", 1), "https", "http", 1), twilioParams(), "Zmvh+3yNM1Phv2jhDCwEM3q5ebU="},
	}
	for _, tt := range tests {
		if got := Sign(twilioToken, tt.url, tt.params); got != tt.want {
			t.Errorf("%s: signTwilio = %q, want %q", tt.name, got, tt.want)
		}
	}
}

func TestVerifyTwilio(t *testing.T) {
	tampered := twilioParams()
	tampered.Set("Digits", "9999")
	extra := twilioParams()
	extra.Set("NewParamTwilioAdded", "x")
	tests := []struct {
		name    string
		tokens  []string
		url     string
		params  url.Values
		header  string
		wantErr error
	}{
		{"valid", []string{twilioToken}, twilioURL, twilioParams(), "RSOYDt4T1cUTdK1PDd93/VVr8B8=", nil},
		{"secondary token during rotation", []string{"new-token", twilioToken}, twilioURL, twilioParams(), "RSOYDt4T1cUTdK1PDd93/VVr8B8=", nil},
		{"wrong token", []string{"54321"}, twilioURL, twilioParams(), "RSOYDt4T1cUTdK1PDd93/VVr8B8=", provider.ErrBadSignature},
		{"tampered parameter", []string{twilioToken}, twilioURL, tampered, "RSOYDt4T1cUTdK1PDd93/VVr8B8=", provider.ErrBadSignature},
		{"parameter added that was not signed", []string{twilioToken}, twilioURL, extra, "RSOYDt4T1cUTdK1PDd93/VVr8B8=", provider.ErrBadSignature},
		{"other query string", []string{twilioToken}, "https://mycompany.com/myapp.php?foo=1&bar=3", twilioParams(), "RSOYDt4T1cUTdK1PDd93/VVr8B8=", provider.ErrBadSignature},
		// go: "returns true when https and port is specified but signature is generated without it"
		{"configured URL has a port, signature without", []string{twilioToken}, strings.Replace(twilioURL, ".com", ".com:1234", 1), twilioParams(), "RSOYDt4T1cUTdK1PDd93/VVr8B8=", nil},
		// python: test_validation_adds_port_on_https
		{"signature with default port, URL without", []string{twilioToken}, twilioURL, twilioParams(), "kvajT1Ptam85bY51eRf/AJRuM3w=", nil},
		{"http, signature with port 80", []string{twilioToken}, strings.Replace(twilioURL, "https", "http", 1), twilioParams(), "0ZXoZLH/DfblKGATFgpif+LLRf4=", nil},
		{"missing header", []string{twilioToken}, twilioURL, twilioParams(), "", provider.ErrNoSignature},
		{"header not base64", []string{twilioToken}, twilioURL, twilioParams(), "%%%", provider.ErrBadSignature},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := verifyTwilio(tt.tokens, tt.url, tt.params, tt.header)
			if !errors.Is(err, tt.wantErr) || (tt.wantErr == nil && err != nil) {
				t.Errorf("verifyTwilio = %v, want %v", err, tt.wantErr)
			}
		})
	}
}

// Round trips from twilio-node spec/unit/webhooks/webhooks.spec.js: signed for one URL
// (as Twilio saw it), verified against another (as it reached us).
func TestVerifyTwilioNodeCases(t *testing.T) {
	const token = "s3cr3t"
	for _, tc := range []struct {
		signed, received string
		want             bool
	}{
		{"https://example.com/path?test=param", "https://example.com/path?test=param2", false},
		{"https://example.com:443/path?test=param", "https://example.com:443/path?test=param", true},
		{"https://example.com:443/path?test=param", "https://example.com/path?test=param", true},
		{"https://example.com/path?test=param", "https://example.com/path?test=param", true},
		{"https://example.com/path?test=param", "https://example.com:443/path?test=param", true},
		{"https://example.com/path?test=param'WithQuote", "https://example.com/path?test=param'WithQuote", true},
		{"https://example.com/path?test=param'WithQuote", "https://example.com/path?test=param%27WithQuote", true},
		{"https://example.com/path?test=param%27WithQuote", "https://example.com/path?test=param'WithQuote", true},
		{"https://example.com/path?test=param%27WithQuote", "https://example.com/path?test=param%27WithQuote", true},
	} {
		sig := Sign(token, tc.signed, url.Values{})
		if got := verifyTwilio([]string{token}, tc.received, url.Values{}, sig) == nil; got != tc.want {
			t.Errorf("signed for %s, received at %s: valid = %v, want %v", tc.signed, tc.received, got, tc.want)
		}
	}
}

// Parameter order in the body does not matter: names are sorted before signing.
func TestVerifyTwilioReorderedBody(t *testing.T) {
	for _, body := range []string{
		"CallSid=CA1234567890ABCDE&Caller=%2B14158675309&Digits=1234&From=%2B14158675309&To=%2B18005551212",
		"To=%2B18005551212&From=%2B14158675309&Digits=1234&Caller=%2B14158675309&CallSid=CA1234567890ABCDE",
	} {
		params, _ := url.ParseQuery(body)
		if err := verifyTwilio([]string{twilioToken}, twilioURL, params, "RSOYDt4T1cUTdK1PDd93/VVr8B8="); err != nil {
			t.Errorf("body %s: %v", body, err)
		}
	}
}

func FuzzVerifyTwilio(f *testing.F) {
	f.Add(twilioURL, "CallSid=CA1234567890ABCDE&Digits=1234", "RSOYDt4T1cUTdK1PDd93/VVr8B8=")
	f.Add("http://[::1]:80/x?y", "a=1&a=2&a=1", "")
	f.Add("%zz", ";;;", "====")
	f.Fuzz(func(t *testing.T, rawURL, body, header string) {
		params, err := url.ParseQuery(body)
		if err != nil {
			return
		}
		if verifyTwilio([]string{twilioToken}, rawURL, params, header) == nil {
			matched := false
			for _, u := range urlVariants(rawURL) {
				matched = matched || Sign(twilioToken, u, params) == header
			}
			if !matched {
				t.Errorf("verified %q for %s without it being any variant's signature", header, rawURL)
			}
		}
	})
}

func FuzzParseTwilio(f *testing.F) {
	for _, name := range []string{"inbound_sms.form", "inbound_whatsapp_media.form", "status_delivered.form"} {
		f.Add(readTestdata(f, name))
	}
	f.Add([]byte("MessageSid=&From=x"))
	f.Fuzz(func(t *testing.T, body []byte) {
		events, err := parse(formRequest(body), body)
		if err != nil {
			if !errors.Is(err, provider.ErrMalformed) {
				t.Errorf("error %v does not wrap provider.ErrMalformed", err)
			}
			return
		}
		if len(events) != 1 || events[0].ExternalID == "" {
			t.Errorf("parse = %+v, want one event with an external id", events)
		}
	})
}

// verifyTwilio checks an auth-token signature of a form post.
func verifyTwilio(tokens []string, fullURL string, params url.Values, header string) error {
	return check(sha1.New, tokens, fullURL, params, header)
}

func readTestdata(t testing.TB, name string) []byte {
	t.Helper()
	b, err := os.ReadFile("testdata/" + name)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func formRequest(body []byte) *http.Request {
	r := httptest.NewRequest("POST", "/webhooks/twilio", bytes.NewReader(body))
	r.Header.Set("Content-Type", formType)
	return r
}

// testVerifier is a verifier of requests to https://inbox.example.com.
func testVerifier(tokens, shared []string) verifier {
	return verifier{tokens: tokens, sharedKeys: shared, base: "https://inbox.example.com",
		tokenName: TokensKey, sharedName: SharedKeysKey, urlName: "PUBLIC_URL"}
}

// TestSharedKey: a SharedKey signature (the settings header) is checked with the
// shared keys and the algorithm named; its failures say what is wrong, never the URL.
func TestSharedKey(t *testing.T) {
	const path = "/webhooks/twilio?x=1"
	body := []byte("MessageSid=SM1&From=%2B15551234567&To=%2B15557778888&Body=hi")
	params, _ := url.ParseQuery(string(body))
	full := "https://inbox.example.com" + path
	tests := []struct {
		name, settings, sig string
		v                   verifier
		wantErr             error
		wantReason          string
	}{
		{"HMAC_SHA256", "key=KS1,algorithm=HMAC_SHA256", SignShared("shared-1", "HMAC_SHA256", full, params), testVerifier(nil, []string{"shared-1"}), nil, ""},
		{"HMAC_SHA1", "key=KS1, algorithm=HMAC_SHA1", SignShared("shared-1", "HMAC_SHA1", full, params), testVerifier(nil, []string{"shared-1"}), nil, ""},
		{"second key during rotation", "key=KS2,algorithm=HMAC_SHA256", SignShared("shared-2", "HMAC_SHA256", full, params), testVerifier(nil, []string{"shared-1", "shared-2"}), nil, ""},
		{"wrong key", "key=KS9,algorithm=HMAC_SHA256", SignShared("nope", "HMAC_SHA256", full, params), testVerifier([]string{"tok"}, []string{"shared-1"}), provider.ErrBadSignature, "TWILIO_SHARED_KEYS"},
		{"algorithm mismatch", "key=KS1,algorithm=HMAC_SHA256", SignShared("shared-1", "HMAC_SHA1", full, params), testVerifier(nil, []string{"shared-1"}), provider.ErrBadSignature, "HMAC_SHA256"},
		{"unknown algorithm", "key=KS1,algorithm=HMAC_MD5", Sign("shared-1", full, params), testVerifier(nil, []string{"shared-1"}), provider.ErrBadSignature, "HMAC_MD5"},
		{"no shared key configured", "key=KS1,algorithm=HMAC_SHA256", SignShared("shared-1", "HMAC_SHA256", full, params), testVerifier([]string{"tok"}, nil), provider.ErrBadSignature, "TWILIO_SHARED_KEYS is not set"},
		{"no auth token configured", "", Sign("tok", full, params), testVerifier(nil, []string{"shared-1"}), provider.ErrBadSignature, "signed with the auth token (no X-Twilio-Webhooks-Signature-Settings header) and TWILIO_AUTH_TOKEN is not set"},
		{"auth token signature still works beside shared keys", "", Sign("tok", full, params), testVerifier([]string{"tok"}, []string{"shared-1"}), nil, ""},
		{"wrong auth token names the token first", "", Sign("wrong", full, params), testVerifier([]string{"tok"}, nil), provider.ErrBadSignature, "check TWILIO_AUTH_TOKEN (the account's auth token), then that PUBLIC_URL"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := httptest.NewRequest("POST", path, bytes.NewReader(body))
			r.Header.Set("Content-Type", formType)
			r.Header.Set(SignatureHeader, tt.sig)
			if tt.settings != "" {
				r.Header.Set(SettingsHeader, tt.settings)
			}
			err := tt.v.verify(r, body, time.Now())
			if !errors.Is(err, tt.wantErr) || (tt.wantErr == nil && err != nil) {
				t.Fatalf("verify = %v, want %v", err, tt.wantErr)
			}
			if err != nil && !strings.Contains(err.Error(), tt.wantReason) {
				t.Errorf("reason %q does not say %q", err, tt.wantReason)
			}
			if err != nil && tt.settings != "" && strings.Contains(err.Error(), "PUBLIC_URL") {
				t.Errorf("a SharedKey failure blames the URL: %q", err)
			}
		})
	}
}

// TestJSONWebhook: the URL carries bodySHA256 and the signature covers the URL alone.
func TestJSONWebhook(t *testing.T) {
	body := []byte(`{"MessageSid":"SM1","From":"+15551234567","To":"+15557778888","Body":"héllo 👋"}`)
	signedPath := strings.TrimPrefix(JSONURL("https://inbox.example.com/webhooks/twilio", body), "https://inbox.example.com")
	v := testVerifier([]string{"tok"}, nil)
	for _, tc := range []struct {
		name, path string
		body       []byte
		token      string
		wantErr    error
	}{
		{"valid", signedPath, body, "tok", nil},
		{"body changed", signedPath, append([]byte(" "), body...), "tok", provider.ErrBadSignature},
		{"wrong token", signedPath, body, "nope", provider.ErrBadSignature},
		{"no bodySHA256", "/webhooks/twilio", body, "tok", provider.ErrNoSignature},
	} {
		r := httptest.NewRequest("POST", tc.path, bytes.NewReader(tc.body))
		r.Header.Set("Content-Type", "application/json")
		r.Header.Set(SignatureHeader, Sign(tc.token, "https://inbox.example.com"+tc.path, nil))
		if err := v.verify(r, tc.body, time.Now()); !errors.Is(err, tc.wantErr) || (tc.wantErr == nil && err != nil) {
			t.Errorf("%s: verify = %v, want %v", tc.name, err, tc.wantErr)
		}
	}
	r := httptest.NewRequest("POST", signedPath, nil)
	r.Header.Set("Content-Type", "application/json")
	events, err := parse(r, body)
	if err != nil || len(events) != 1 || events[0].ExternalID != "SM1" || string(events[0].Payload) != string(body) || events[0].Channel != "+15557778888" {
		t.Errorf("parse(JSON) = %+v, %v; want one event SM1 on channel +15557778888 with the body as payload", events, err)
	}
}

func channels(events []provider.Event) []string {
	var out []string
	for _, e := range events {
		out = append(out, e.Channel)
	}
	return out
}

// TestParseChannel: a webhook's channel (its lane) is our number: To of an inbound
// message, From of a status callback.
func TestParseChannel(t *testing.T) {
	for name, want := range map[string]string{"inbound_sms.form": "+15557778888", "status_delivered.form": "+15557778888"} {
		body := readTestdata(t, name)
		events, err := parse(formRequest(body), body)
		if err != nil || len(events) != 1 || events[0].Channel != want {
			t.Errorf("%s: parse = %d events (%v), channels %v; want one event on channel %s", name, len(events), err, channels(events), want)
		}
	}
}

// FuzzVerifyRequest: the whole verifier (form or JSON, auth token or SharedKey),
// from the request as it arrives. What one pair of credentials accepts, another
// pair refuses, so acceptance rests on a key; and an accepted JSON webhook's body
// is the one its URL's bodySHA256 names.
func FuzzVerifyRequest(f *testing.F) {
	const base = "https://inboxd.example.com"
	ours := verifier{tokens: []string{"token-a"}, sharedKeys: []string{"shared-a"}, base: base}
	others := verifier{tokens: []string{"token-b"}, sharedKeys: []string{"shared-b"}, base: base}
	form := "From=%2B15552223333&Body=hi&MessageSid=SM1"
	params, _ := url.ParseQuery(form)
	jsonBody := `{"MessageSid":"SM1","Body":"hi"}`
	jsonPath := JSONURL("/webhooks/twilio", []byte(jsonBody))
	type seed struct {
		path, contentType, settings, signature string
		body                                   []byte
		accepted                               bool
	}
	for _, sd := range []seed{
		{"/webhooks/twilio", "application/x-www-form-urlencoded", "", Sign("token-a", base+"/webhooks/twilio", params), []byte(form), true},
		{"/webhooks/twilio", "application/x-www-form-urlencoded", "key=KS1,algorithm=HMAC_SHA256",
			SignShared("shared-a", "HMAC_SHA256", base+"/webhooks/twilio", params), []byte(form), true},
		{jsonPath, "application/json", "key=KS1, algorithm=HMAC_SHA1", SignShared("shared-a", "HMAC_SHA1", base+jsonPath, nil), []byte(jsonBody), true},
		{jsonPath, "application/json", "key=KS1,algorithm=HMAC_SHA1", SignShared("shared-a", "HMAC_SHA1", base+jsonPath, nil), []byte(`{"MessageSid":"SM2"}`), false},
		{"/webhooks/twilio?x='", "text/plain", "algorithm=MD5", "====", []byte("a=%zz"), false},
	} {
		f.Add(sd.path, sd.contentType, sd.settings, sd.signature, sd.body)
		if err := ours.verify(request(sd.path, sd.contentType, sd.settings, sd.signature), sd.body, time.Now()); (err == nil) != sd.accepted {
			f.Fatalf("seed %s %s: verify = %v, want accepted %v", sd.path, sd.settings, err, sd.accepted)
		}
	}
	f.Fuzz(func(t *testing.T, path, contentType, settings, signature string, body []byte) {
		r := request(path, contentType, settings, signature)
		if r == nil || ours.verify(r, body, time.Now()) != nil {
			return
		}
		if err := others.verify(r, body, time.Now()); err == nil {
			t.Fatalf("a request verified under two different sets of credentials: %s %q", path, signature)
		}
		if isJSON(r) {
			sum := sha256.Sum256(body)
			if r.URL.Query().Get("bodySHA256") != hex.EncodeToString(sum[:]) {
				t.Fatalf("a JSON webhook verified with a body its bodySHA256 does not name: %s %q", path, body)
			}
		}
	})
}

// request is a POST to path (a request URI) with the signature headers, as it
// arrives; nil when path is not a request URI.
func request(path, contentType, settings, signature string) *http.Request {
	u, err := url.ParseRequestURI(path)
	if err != nil || !strings.HasPrefix(path, "/") {
		return nil
	}
	r := &http.Request{Method: "POST", URL: u, Header: http.Header{}}
	r.Header.Set("Content-Type", contentType)
	r.Header.Set(SignatureHeader, signature)
	if settings != "" {
		r.Header.Set(SettingsHeader, settings)
	}
	return r
}
