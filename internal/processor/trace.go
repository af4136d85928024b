package processor

import (
	"context"
	"strconv"
	"time"

	"go.opentelemetry.io/otel/codes"
	semconv "go.opentelemetry.io/otel/semconv/v1.43.0"
	"go.opentelemetry.io/otel/trace"

	"inboxd/internal/tracing"
)

// Spans of processing (internal/tracing says how they connect to ingest's). A batch is
// one "process inbound_events" span, linked to the "send" span of each of its events
// and with a "receive inbound_events" child for its claim; each event's outcome is a
// "process inbound_events" span of its own under it, linked to that event's "send"
// span, with the event id, the attempt and the outcome. Spans are made only after a
// claim found events (backdated to the claim), so the empty claims that end every
// busy spell leave no trace; with tracing off nothing below runs.

// startBatch starts the span of a batch claimed between claimStart and now.
func (p *Processor) startBatch(ctx context.Context, events []claimed, claimStart time.Time) (context.Context, trace.Span) {
	ctx, span := p.tracer.Start(ctx, "process inbound_events", trace.WithTimestamp(claimStart), trace.WithSpanKind(trace.SpanKindConsumer))
	if !span.IsRecording() {
		return ctx, span
	}
	span.SetAttributes(tracing.Queue...)
	span.SetAttributes(semconv.MessagingOperationTypeProcess, semconv.MessagingOperationName("process"),
		semconv.MessagingBatchMessageCount(len(events)))
	for _, ev := range events {
		if link, ok := tracing.Link(ev.traceparent(), semconv.MessagingMessageID(strconv.FormatInt(ev.ID, 10))); ok {
			span.AddLink(link)
		}
	}
	_, claim := p.tracer.Start(ctx, "receive inbound_events", trace.WithTimestamp(claimStart), trace.WithSpanKind(trace.SpanKindConsumer))
	claim.SetAttributes(tracing.Queue...)
	claim.SetAttributes(semconv.MessagingOperationTypeReceive, semconv.MessagingOperationName("claim"),
		semconv.MessagingBatchMessageCount(len(events)))
	claim.End()
	return ctx, span
}

// traceOutcome records one event's processing, from start to now, under ctx's span.
func (p *Processor) traceOutcome(ctx context.Context, ev claimed, o outcome, recorded bool, start time.Time) {
	if !trace.SpanFromContext(ctx).IsRecording() {
		return
	}
	_, span := p.tracer.Start(ctx, "process inbound_events", trace.WithTimestamp(start), trace.WithSpanKind(trace.SpanKindConsumer))
	defer span.End()
	if link, ok := tracing.Link(ev.traceparent()); ok {
		span.AddLink(link)
	}
	result := map[string]string{"processed": "processed", "pending": "retry", "dead": "dead"}[o.state]
	if !recorded {
		result = "taken_over" // the lease was lost: the new holder records the outcome
	}
	span.SetAttributes(tracing.Queue...)
	span.SetAttributes(semconv.MessagingOperationTypeProcess, semconv.MessagingOperationName("process"),
		semconv.MessagingMessageID(strconv.FormatInt(ev.ID, 10)), tracing.ProviderKey.String(ev.Provider),
		tracing.AttemptKey.Int(ev.Attempts), tracing.OutcomeKey.String(result))
	if o.err != "" {
		span.SetStatus(codes.Error, truncate(o.err, 300))
	}
}

func truncate(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return s[:n] + "…"
}

// traceparent is the stored trace context of the webhook that carried the event.
func (c claimed) traceparent() string {
	if c.Traceparent == nil {
		return ""
	}
	return *c.Traceparent
}
