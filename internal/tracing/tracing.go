// Package tracing sets up OpenTelemetry tracing from the standard OTEL_* variables and
// holds what inboxd's spans share: the messaging attributes, and the W3C trace context
// that an event carries from the webhook that stored it to the process that applies it
// (inbound_events.traceparent, the way River's otelriver keeps it in job metadata).
//
// Without OTEL_EXPORTER_OTLP_ENDPOINT (or OTEL_EXPORTER_OTLP_TRACES_ENDPOINT) nothing is
// set up: the tracer provider is the no-op one, spans are never recording, and the code
// that builds attributes and links checks IsRecording first, so tracing costs nothing.
package tracing

import (
	"context"
	"fmt"
	"strings"
	"time"

	"go.opentelemetry.io/otel"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/exporters/otlp/otlptrace/otlptracegrpc"
	"go.opentelemetry.io/otel/exporters/otlp/otlptrace/otlptracehttp"
	"go.opentelemetry.io/otel/propagation"
	"go.opentelemetry.io/otel/sdk/resource"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	semconv "go.opentelemetry.io/otel/semconv/v1.43.0"
	"go.opentelemetry.io/otel/trace"
	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
)

// Attribute keys of inboxd's own (the rest follow the OpenTelemetry messaging
// conventions).
const (
	ProviderKey  = attribute.Key("inboxd.provider")
	EventIDsKey  = attribute.Key("inboxd.event_ids")
	AttemptKey   = attribute.Key("inboxd.attempt")
	OutcomeKey   = attribute.Key("inboxd.outcome") // processed, retry, dead (or taken_over)
	RequestIDKey = attribute.Key("inboxd.request_id")
)

// Queue is the attributes every span about the queue carries.
var Queue = []attribute.KeyValue{
	semconv.MessagingSystemKey.String("inboxd"),
	semconv.MessagingDestinationName("inbound_events"),
}

// MaxQueuedSpans bounds the spans waiting for the exporter: when the collector is away
// the queue fills and further spans are dropped and counted (a request never waits
// for it). With Limits, what a full queue holds is bounded: a few megabytes.
const MaxQueuedSpans = 2048

// Limits bounds what one span may hold. Attribute values are cut to 256 bytes: some
// come from what a client sent before it was authenticated (its User-Agent, the Host
// it named), and an unlimited value let 300 unsigned requests with a 1 MB User-Agent
// hold hundreds of megabytes in the export queue.
func Limits() sdktrace.SpanLimits {
	l := sdktrace.NewSpanLimits()
	l.AttributeValueLengthLimit = 256
	l.AttributeCountLimit = 64
	l.EventCountLimit = 16
	l.LinkCountLimit = 256 // a batch links to each event's ingest span
	l.AttributePerEventCountLimit = 16
	l.AttributePerLinkCountLimit = 16
	return l
}

// Propagator reads and writes the W3C trace context (traceparent, tracestate): in
// the headers of a webhook a provider sent, and with each stored event.
var Propagator propagation.TextMapPropagator = propagation.TraceContext{}

// Setup builds the tracer provider the OTEL_* variables ask for (getenv reads them).
// With no OTLP endpoint, or OTEL_SDK_DISABLED=true, tracing is off: it returns nil,
// and the components then use the no-op provider.
// The exporter speaks OTEL_EXPORTER_OTLP_(TRACES_)PROTOCOL: http/protobuf (the
// default), http/json or grpc; the service name is OTEL_SERVICE_NAME, else "inboxd"; the sampler
// is OTEL_TRACES_SAMPLER (the SDK reads it, and the other OTEL_* settings of the
// exporter and the batch processor, from the process environment). shutdown flushes
// what is buffered.
func Setup(ctx context.Context, getenv func(string) string, log *zap.Logger) (*Traces, error) {
	endpoint := first(getenv("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT"), getenv("OTEL_EXPORTER_OTLP_ENDPOINT"))
	if endpoint == "" || strings.EqualFold(getenv("OTEL_SDK_DISABLED"), "true") {
		return &Traces{Shutdown: func(context.Context) error { return nil }}, nil
	}
	exp, err := exporter(ctx, getenv, endpoint)
	if err != nil {
		return nil, err
	}
	res, err := resource.New(ctx,
		resource.WithAttributes(semconv.ServiceName(first(getenv("OTEL_SERVICE_NAME"), "inboxd"))),
		resource.WithFromEnv(), resource.WithTelemetrySDK(), resource.WithHost())
	if err != nil {
		return nil, fmt.Errorf("OpenTelemetry resource: %w", err)
	}
	// Export failures (a collector that is down) must not flood the log: one a minute.
	sampled := log.WithOptions(zap.WrapCore(everyMinute))
	otel.SetErrorHandler(otel.ErrorHandlerFunc(func(err error) {
		sampled.Warn("traces could not be exported; check OTEL_EXPORTER_OTLP_ENDPOINT and the collector", zap.Error(err))
	}))
	queue := newDroppingQueue(sdktrace.NewBatchSpanProcessor(exp, sdktrace.WithBlocking(), sdktrace.WithMaxQueueSize(512)), MaxQueuedSpans)
	provider := sdktrace.NewTracerProvider(
		sdktrace.WithSpanProcessor(queue),
		sdktrace.WithRawSpanLimits(Limits()),
		sdktrace.WithResource(res))
	log.Info("exporting traces", zap.String("endpoint", endpoint))
	return &Traces{Provider: provider, Shutdown: provider.Shutdown, queue: queue}, nil
}

// Traces is tracing as Setup configured it.
type Traces struct {
	// Provider makes the spans; nil when tracing is off.
	Provider trace.TracerProvider
	// Shutdown flushes what is queued and stops the exporter.
	Shutdown func(context.Context) error
	queue    *droppingQueue
}

// Dropped counts the spans left out because the export queue was full (the collector
// away or too slow).
func (t *Traces) Dropped() uint64 {
	if t.queue == nil {
		return 0
	}
	return t.queue.dropped.Load()
}

// exporter builds the OTLP exporter for the configured protocol. The endpoint is
// given as an option because getenv, not the process environment, is the
// configuration (tests run several services in one process).
func exporter(ctx context.Context, getenv func(string) string, endpoint string) (sdktrace.SpanExporter, error) {
	traces := getenv("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT") != ""
	switch proto := first(getenv("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL"), getenv("OTEL_EXPORTER_OTLP_PROTOCOL"), "http/protobuf"); proto {
	case "http/protobuf", "http/json":
		encoding := otlptracehttp.EncodingProtobuf
		if proto == "http/json" {
			encoding = otlptracehttp.EncodingJSON
		}
		if !traces { // the base endpoint: traces go to its /v1/traces
			endpoint = strings.TrimRight(endpoint, "/") + "/v1/traces"
		}
		return otlptracehttp.New(ctx, otlptracehttp.WithEndpointURL(endpoint), otlptracehttp.WithEncoding(encoding))
	case "grpc":
		return otlptracegrpc.New(ctx, otlptracegrpc.WithEndpointURL(endpoint))
	default:
		return nil, fmt.Errorf("OTEL_EXPORTER_OTLP_PROTOCOL=%s is not supported: use http/protobuf (the default), http/json or grpc", proto)
	}
}

// Traceparent returns the W3C traceparent of the span in ctx, or "" when there is no
// valid one (tracing off).
func Traceparent(ctx context.Context) string {
	if !trace.SpanContextFromContext(ctx).IsValid() {
		return ""
	}
	c := propagation.MapCarrier{}
	Propagator.Inject(ctx, c)
	return c.Get("traceparent")
}

// Link returns a link to the span a stored traceparent names; ok is false when there
// is none.
func Link(traceparent string, attrs ...attribute.KeyValue) (link trace.Link, ok bool) {
	if traceparent == "" {
		return trace.Link{}, false
	}
	sc := trace.SpanContextFromContext(Propagator.Extract(context.Background(), propagation.MapCarrier{"traceparent": traceparent}))
	return trace.Link{SpanContext: sc, Attributes: attrs}, sc.IsValid()
}

// everyMinute lets one line of each message through a minute.
func everyMinute(c zapcore.Core) zapcore.Core {
	return zapcore.NewSamplerWithOptions(c, time.Minute, 1, 0)
}

func first(values ...string) string {
	for _, v := range values {
		if v != "" {
			return v
		}
	}
	return ""
}
