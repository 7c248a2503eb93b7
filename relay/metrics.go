package relay

import (
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// metrics are the relay's counters, read by Collect.
type metrics struct {
	published, publishedDeltas, publishedBytes atomic.Uint64
	applied, receivedBytes, redelivered        atomic.Uint64
	refused, oversized, errors                 atomic.Uint64
	statesWritten, stateBytes, stateConflicts  atomic.Uint64
	statesApplied                              atomic.Uint64
	consumerPending                            atomic.Uint64
	lastApplied                                atomic.Int64 // stream time of the last message handled, unix ns
}

var (
	descPublished       = prometheus.NewDesc("ctxprop_relay_published_messages_total", "Delta messages the stream acknowledged.", nil, nil)
	descPublishedDeltas = prometheus.NewDesc("ctxprop_relay_published_deltas_total", "Context deltas in the messages the stream acknowledged.", nil, nil)
	descPublishedBytes  = prometheus.NewDesc("ctxprop_relay_published_bytes_total", "Bytes of delta messages published, retries included.", nil, nil)
	descApplied         = prometheus.NewDesc("ctxprop_relay_applied_deltas_total", "Deltas of other clusters merged into the store.", nil, nil)
	descReceivedBytes   = prometheus.NewDesc("ctxprop_relay_received_bytes_total", "Bytes of other clusters' delta messages received.", nil, nil)
	descRedelivered     = prometheus.NewDesc("ctxprop_relay_redelivered_messages_total", "Messages received that JetStream had delivered before (a sidecar did not acknowledge them within relay.ack_wait).", nil, nil)
	descRefused         = prometheus.NewDesc("ctxprop_relay_refused_total", "Messages or KV states refused, nothing merged: malformed, or refused by the store.", nil, nil)
	descOversized       = prometheus.NewDesc("ctxprop_relay_oversized_total", "Deltas or states not sent because they exceed the NATS server's max_payload.", nil, nil)
	descErrors          = prometheus.NewDesc("ctxprop_relay_errors_total", "Failed NATS operations and merges (retried).", nil, nil)
	descStatesWritten   = prometheus.NewDesc("ctxprop_relay_states_written_total", "Context states written to the KV bucket.", nil, nil)
	descStateBytes      = prometheus.NewDesc("ctxprop_relay_state_bytes_total", "Bytes of context states written to the KV bucket.", nil, nil)
	descStateConflicts  = prometheus.NewDesc("ctxprop_relay_state_conflicts_total", "KV writes that lost a compare-and-set race and were read and joined again.", nil, nil)
	descStatesApplied   = prometheus.NewDesc("ctxprop_relay_states_applied_total", "KV states that changed the store when merged.", nil, nil)
	descPendingLag      = prometheus.NewDesc("ctxprop_relay_publish_lag_seconds", "Age of the oldest local delta not yet acknowledged by the stream; 0 when none waits.", nil, nil)
	descPendingContexts = prometheus.NewDesc("ctxprop_relay_publish_pending_contexts", "Contexts with local deltas waiting to be published or awaiting the stream's acknowledgement.", nil, nil)
	descConsumerPending = prometheus.NewDesc("ctxprop_relay_consumer_pending_messages", "Messages in the stream this cluster's consumer had not been delivered yet, as of the last message received.", nil, nil)
	descApplyLag        = prometheus.NewDesc("ctxprop_relay_apply_lag_seconds", "Age of the last stream message this sidecar received while the consumer had more pending; 0 once it caught up.", nil, nil)
	descConnected       = prometheus.NewDesc("ctxprop_relay_connected", "1 when connected to NATS with the stream, bucket and consumer set up.", nil, nil)
)

// Describe implements prometheus.Collector.
func (r *Relay) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{descPublished, descPublishedDeltas, descPublishedBytes, descApplied, descReceivedBytes,
		descRedelivered, descRefused, descOversized, descErrors, descStatesWritten, descStateBytes, descStateConflicts,
		descStatesApplied, descPendingLag, descPendingContexts, descConsumerPending, descApplyLag, descConnected} {
		ch <- d
	}
}

// Collect implements prometheus.Collector.
func (r *Relay) Collect(ch chan<- prometheus.Metric) {
	counter := func(d *prometheus.Desc, v *atomic.Uint64) {
		ch <- prometheus.MustNewConstMetric(d, prometheus.CounterValue, float64(v.Load()))
	}
	counter(descPublished, &r.m.published)
	counter(descPublishedDeltas, &r.m.publishedDeltas)
	counter(descPublishedBytes, &r.m.publishedBytes)
	counter(descApplied, &r.m.applied)
	counter(descReceivedBytes, &r.m.receivedBytes)
	counter(descRedelivered, &r.m.redelivered)
	counter(descRefused, &r.m.refused)
	counter(descOversized, &r.m.oversized)
	counter(descErrors, &r.m.errors)
	counter(descStatesWritten, &r.m.statesWritten)
	counter(descStateBytes, &r.m.stateBytes)
	counter(descStateConflicts, &r.m.stateConflicts)
	counter(descStatesApplied, &r.m.statesApplied)
	now := r.opt.Now()
	r.mu.Lock()
	lag, n := 0.0, len(r.pending)+r.inflight
	if n > 0 && !r.oldest.IsZero() {
		lag = now.Sub(r.oldest).Seconds()
	}
	r.mu.Unlock()
	ch <- prometheus.MustNewConstMetric(descPendingLag, prometheus.GaugeValue, lag)
	ch <- prometheus.MustNewConstMetric(descPendingContexts, prometheus.GaugeValue, float64(n))
	ch <- prometheus.MustNewConstMetric(descConsumerPending, prometheus.GaugeValue, float64(r.m.consumerPending.Load()))
	applyLag := 0.0
	if t := r.m.lastApplied.Load(); t != 0 && r.m.consumerPending.Load() > 0 {
		applyLag = now.Sub(time.Unix(0, t)).Seconds()
	}
	ch <- prometheus.MustNewConstMetric(descApplyLag, prometheus.GaugeValue, applyLag)
	connected := 0.0
	if r.Ready() == nil {
		connected = 1
	}
	ch <- prometheus.MustNewConstMetric(descConnected, prometheus.GaugeValue, connected)
}

var _ prometheus.Collector = (*Relay)(nil)
