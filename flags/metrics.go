package flags

import (
	"sync/atomic"

	"github.com/prometheus/client_golang/prometheus"
)

// Evaluation paths, the "via" label of ctxprop_flags_evaluations_total.
const (
	viaOFREP = iota
	viaPin
	viaCount
)

var viaNames = [viaCount]string{"ofrep", "pin"}

// outcomes are every reason and error code an evaluation gives. A reason is the
// feature_flag_result_reason label with error_type empty; an error code is error_type with
// the reason ERROR: the OpenTelemetry feature flag attributes feature_flag.result.reason
// and error.type as Prometheus spells them, with the values OFREP answers.
var outcomes = []string{
	ReasonStatic, ReasonDefault, ReasonTargetingMatch, ReasonSplit, ReasonDisabled,
	CodeFlagNotFound, CodeParseError, CodeTargetingKeyMissing, CodeInvalidContext, CodeGeneral,
}

// reasonError is the OpenFeature reason of an evaluation that failed.
const reasonError = "ERROR"

// firstErrorOutcome is the index of the first error code in outcomes.
const firstErrorOutcome = 5

var outcomeIndex = func() map[string]int {
	m := make(map[string]int, len(outcomes))
	for i, o := range outcomes {
		m[o] = i
	}
	return m
}()

// counters are bumped on the request path: plain atomics, no locks, no label lookups.
type counters struct {
	evaluations [viaCount][10]atomic.Uint64
	changes     atomic.Uint64
}

func (c *counters) count(via int, r Result) {
	o := r.Reason
	if r.ErrorCode != "" {
		o = r.ErrorCode
	}
	if i, ok := outcomeIndex[o]; ok {
		c.evaluations[via][i].Add(1)
	}
}

// Collector exports the metrics of f; register it on the admin server's registry:
//
//	srv.Registry().MustRegister(flags.NewCollector(f))
type Collector struct {
	f           *Flags
	evaluations *prometheus.Desc
	serving     *prometheus.Desc
	refused     *prometheus.Desc
	changes     *prometheus.Desc
}

var _ prometheus.Collector = (*Collector)(nil)

// NewCollector returns the collector of f's metrics.
func NewCollector(f *Flags) *Collector {
	return &Collector{
		f:           f,
		evaluations: prometheus.NewDesc("ctxprop_flags_evaluations_total", "Flag evaluations, by path (ofrep, pin), reason and, for the reason ERROR, error code.", []string{"via", "feature_flag_result_reason", "error_type"}, nil),
		serving:     prometheus.NewDesc("ctxprop_flags_serving", "Flags serving (files and API merged).", nil, nil),
		refused:     prometheus.NewDesc("ctxprop_flags_refused", "Flag definitions or files refused now; GET /v1/flags lists them.", nil, nil),
		changes:     prometheus.NewDesc("ctxprop_flags_configuration_changes_total", "Changes of the flag configuration served.", nil, nil),
	}
}

// Describe implements prometheus.Collector.
func (c *Collector) Describe(ch chan<- *prometheus.Desc) {
	ch <- c.evaluations
	ch <- c.serving
	ch <- c.refused
	ch <- c.changes
}

// Collect implements prometheus.Collector.
func (c *Collector) Collect(ch chan<- prometheus.Metric) {
	for via := range viaCount {
		for i, o := range outcomes {
			reason, errType := o, ""
			if i >= firstErrorOutcome {
				reason, errType = reasonError, o
			}
			ch <- prometheus.MustNewConstMetric(c.evaluations, prometheus.CounterValue, float64(c.f.counters.evaluations[via][i].Load()), viaNames[via], reason, errType)
		}
	}
	ch <- prometheus.MustNewConstMetric(c.serving, prometheus.GaugeValue, float64(len(c.f.snap.Load().keys)))
	ch <- prometheus.MustNewConstMetric(c.refused, prometheus.GaugeValue, float64(len(c.f.Problems())))
	ch <- prometheus.MustNewConstMetric(c.changes, prometheus.CounterValue, float64(c.f.counters.changes.Load()))
}
