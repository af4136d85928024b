package ingest

import (
	"errors"
	"net/url"
	"strings"
	"testing"
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
		if got := SignTwilio(twilioToken, tt.url, tt.params); got != tt.want {
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
		{"wrong token", []string{"54321"}, twilioURL, twilioParams(), "RSOYDt4T1cUTdK1PDd93/VVr8B8=", errBadSignature},
		{"tampered parameter", []string{twilioToken}, twilioURL, tampered, "RSOYDt4T1cUTdK1PDd93/VVr8B8=", errBadSignature},
		{"parameter added that was not signed", []string{twilioToken}, twilioURL, extra, "RSOYDt4T1cUTdK1PDd93/VVr8B8=", errBadSignature},
		{"other query string", []string{twilioToken}, "https://mycompany.com/myapp.php?foo=1&bar=3", twilioParams(), "RSOYDt4T1cUTdK1PDd93/VVr8B8=", errBadSignature},
		// go: "returns true when https and port is specified but signature is generated without it"
		{"configured URL has a port, signature without", []string{twilioToken}, strings.Replace(twilioURL, ".com", ".com:1234", 1), twilioParams(), "RSOYDt4T1cUTdK1PDd93/VVr8B8=", nil},
		// python: test_validation_adds_port_on_https
		{"signature with default port, URL without", []string{twilioToken}, twilioURL, twilioParams(), "kvajT1Ptam85bY51eRf/AJRuM3w=", nil},
		{"http, signature with port 80", []string{twilioToken}, strings.Replace(twilioURL, "https", "http", 1), twilioParams(), "0ZXoZLH/DfblKGATFgpif+LLRf4=", nil},
		{"missing header", []string{twilioToken}, twilioURL, twilioParams(), "", errNoSignature},
		{"header not base64", []string{twilioToken}, twilioURL, twilioParams(), "%%%", errBadSignature},
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
		sig := SignTwilio(token, tc.signed, url.Values{})
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
				matched = matched || SignTwilio(twilioToken, u, params) == header
			}
			if !matched {
				t.Errorf("verified %q for %s without it being any variant's signature", header, rawURL)
			}
		}
	})
}

func FuzzParseTwilio(f *testing.F) {
	for _, name := range []string{"inbound_sms.form", "inbound_whatsapp_media.form", "status_delivered.form"} {
		f.Add(readTestdata(f, "twilio/"+name))
	}
	f.Add([]byte("MessageSid=&From=x"))
	f.Fuzz(func(t *testing.T, body []byte) {
		events, err := parseTwilio(body)
		if err != nil {
			if !errors.Is(err, errMalformed) {
				t.Errorf("error %v does not wrap errMalformed", err)
			}
			return
		}
		if len(events) != 1 || events[0].ExternalID == "" {
			t.Errorf("parseTwilio = %+v, want one event with an external id", events)
		}
	})
}
