package bench

import (
	"io"
	"net/http"
	"strconv"
	"strings"
)

// Metric reads one series (its name with labels exactly as served, e.g.
// `inbox_retention_deleted_total{what="processed_events"}`) from base's /metrics;
// ok is false while the series is not served.
func Metric(base, series string) (value float64, ok bool, err error) {
	resp, err := http.Get(base + "/metrics")
	if err != nil {
		return 0, false, err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		return 0, false, err
	}
	for _, line := range strings.Split(string(b), "\n") {
		if v, found := strings.CutPrefix(line, series+" "); found {
			value, err = strconv.ParseFloat(v, 64)
			return value, err == nil, err
		}
	}
	return 0, false, nil
}
