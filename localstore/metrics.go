package localstore

import "github.com/prometheus/client_golang/prometheus"

var (
	descCommits = prometheus.NewDesc("ctxprop_store_commits_total",
		"bbolt transactions the store committed (two fsyncs each), about one per commit window while writes come in.", nil, nil)
	descLogSyncs = prometheus.NewDesc("ctxprop_store_log_syncs_total",
		"Groups of durable writes appended to the write-ahead log, one fdatasync each.", nil, nil)
	descChanges = prometheus.NewDesc("ctxprop_store_changes_total",
		"Writes and merges made durable.", nil, nil)
	descCommitSeconds = prometheus.NewDesc("ctxprop_store_commit_seconds_total",
		"Time spent in commits and log syncs, fsync included.", nil, nil)
	descFailures = prometheus.NewDesc("ctxprop_store_commit_failures_total",
		"Commits or log syncs that failed; after one the store refuses writes.", nil, nil)
	descContexts = prometheus.NewDesc("ctxprop_store_contexts",
		"Contexts held, expired ones included until swept.", nil, nil)
	descSeq = prometheus.NewDesc("ctxprop_store_sequence",
		"This replica's sequence number of local writes.", nil, nil)
)

// Collector exports a Store's Stats, read at each scrape, as the ctxprop_store_* metrics.
// The sidecar registers it on the admin API's registry (cmd/sidecar); the admin API itself
// knows no store's internals.
type Collector struct{ store *Store }

// NewCollector returns the Collector of s.
func NewCollector(s *Store) *Collector { return &Collector{s} }

// Describe implements prometheus.Collector.
func (c *Collector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{descCommits, descLogSyncs, descChanges, descCommitSeconds, descFailures, descContexts, descSeq} {
		ch <- d
	}
}

// Collect implements prometheus.Collector.
func (c *Collector) Collect(ch chan<- prometheus.Metric) {
	st := c.store.Stats()
	ch <- prometheus.MustNewConstMetric(descCommits, prometheus.CounterValue, float64(st.Commits))
	ch <- prometheus.MustNewConstMetric(descLogSyncs, prometheus.CounterValue, float64(st.LogSyncs))
	ch <- prometheus.MustNewConstMetric(descChanges, prometheus.CounterValue, float64(st.Changes))
	ch <- prometheus.MustNewConstMetric(descCommitSeconds, prometheus.CounterValue, st.CommitTime.Seconds())
	ch <- prometheus.MustNewConstMetric(descFailures, prometheus.CounterValue, float64(st.Failures))
	ch <- prometheus.MustNewConstMetric(descContexts, prometheus.GaugeValue, float64(st.Contexts))
	ch <- prometheus.MustNewConstMetric(descSeq, prometheus.GaugeValue, float64(st.Seq))
}
