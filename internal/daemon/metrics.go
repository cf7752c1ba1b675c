package daemon

import (
	"net/http"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/idend/idend/internal/loader"
)

// collector reads the daemon's counters when Prometheus scrapes, so that
// the hot path only bumps atomics.
type collector struct {
	d        *Daemon
	records  *prometheus.Desc
	bad      *prometheus.Desc
	lost     *prometheus.Desc
	sessions *prometheus.Desc
}

func metricsHandler(d *Daemon) http.Handler {
	reg := prometheus.NewRegistry()
	reg.MustRegister(&collector{
		d:        d,
		records:  prometheus.NewDesc("idend_kernel_records_total", "Kernel records written to the recording.", nil, nil),
		bad:      prometheus.NewDesc("idend_kernel_records_undecodable_total", "Ring buffer samples that could not be decoded.", nil, nil),
		lost:     prometheus.NewDesc("idend_kernel_records_lost_total", "Records lost to a full ring buffer.", []string{"ring", "kind"}, nil),
		sessions: prometheus.NewDesc("idend_sessions", "Open sessions.", nil, nil),
	})
	return promhttp.HandlerFor(reg, promhttp.HandlerOpts{})
}

func (c *collector) Describe(ch chan<- *prometheus.Desc) {
	ch <- c.records
	ch <- c.bad
	ch <- c.lost
	ch <- c.sessions
}

func (c *collector) Collect(ch chan<- prometheus.Metric) {
	ch <- prometheus.MustNewConstMetric(c.records, prometheus.CounterValue, float64(c.d.p.records.Load()))
	ch <- prometheus.MustNewConstMetric(c.bad, prometheus.CounterValue, float64(c.d.p.bad.Load()))
	ch <- prometheus.MustNewConstMetric(c.sessions, prometheus.GaugeValue, float64(len(c.d.m.list())))
	losses, err := c.d.m.loader.Losses()
	if err != nil {
		return
	}
	for ring := range loader.RingCount {
		for kind := range loader.KindCount {
			if name := kindName(kind); name != "" {
				ch <- prometheus.MustNewConstMetric(c.lost, prometheus.CounterValue,
					float64(losses[ring][kind]), ringName(ring), name)
			}
		}
	}
}
