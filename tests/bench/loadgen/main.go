// loadgen: the load generator of the webhook benchmark, in Go so that the load it offers is not bounded by a
// Python client on the same two cores. Closed loop (-rate 0: -conns workers send -requests bodies back to back)
// measures saturation; open loop (-rate R for -duration) offers a fixed arrival rate whatever the server does, so
// queueing shows up as latency, timeouts or shed requests. -warmup sends that many requests on the same
// connections before the measured run. The summary includes the CPU time this process used (user + system), so a
// benchmark can show that the client was not what limited the server. Standard library only; prints one JSON summary.
package main

import (
	"bufio"
	"bytes"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"net/http"
	"os"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"
)

type result struct {
	latency time.Duration
	outcome string // allowed, denied, shed, timeout, error
}

type summary struct {
	Mode        string         `json:"mode"`
	Sent        int            `json:"sent"`
	Seconds     float64        `json:"seconds"`
	OfferedRate float64        `json:"offered_rate"`
	Throughput  float64        `json:"throughput"`
	Outcomes    map[string]int `json:"outcomes"`
	P50Ms       float64        `json:"p50_ms"`
	P99Ms       float64        `json:"p99_ms"`
	MaxMs       float64        `json:"max_ms"`
	MaxInFlight int64          `json:"max_in_flight"`
	CPUSeconds  float64        `json:"cpu_seconds"`
	Connections int            `json:"connections"`
}

func main() {
	url := flag.String("url", "", "https URL of /validate (or any http(s) URL with -plain)")
	caFile := flag.String("ca", "", "CA certificate (PEM) of the server (none: plain http or the system roots)")
	plain := flag.Bool("plain", false, "any answer with status 200 is \"ok\" (not an AdmissionReview: a model server)")
	bodiesFile := flag.String("bodies", "", "file with one AdmissionReview JSON per line")
	conns := flag.Int("conns", 16, "closed loop: workers; open loop: maximum connections")
	requests := flag.Int("requests", 2000, "closed loop: requests in all (0: as many as fit in -duration)")
	rate := flag.Float64("rate", 0, "open loop: requests per second (0: closed loop)")
	duration := flag.Duration("duration", 5*time.Second, "open loop, or closed loop with -requests 0: how long")
	warmup := flag.Int("warmup", 0, "closed loop: requests sent first on the same connections, not measured")
	unique := flag.String("unique", "", "every occurrence of this text in a body is replaced by the request's "+
		"sequence number, zero-padded to the same length, so that no two requests are alike")
	timeout := flag.Duration("timeout", 10*time.Second, "per-request timeout (the webhook configuration's)")
	flag.Parse()

	bodies, err := readBodies(*bodiesFile)
	check(err)
	client, err := newClient(*caFile, *conns, *timeout)
	check(err)

	var sequence atomic.Int64
	mark := []byte(*unique)
	stamp := func(body []byte) []byte {
		if len(mark) == 0 || !bytes.Contains(body, mark) {
			return body
		}
		number := []byte(fmt.Sprintf("%0*d", len(mark), sequence.Add(1)))
		return bytes.ReplaceAll(body, mark, number[len(number)-len(mark):])
	}

	var inFlight, maxInFlight atomic.Int64
	send := func(body []byte) result {
		body = stamp(body)
		now := inFlight.Add(1)
		for {
			seen := maxInFlight.Load()
			if now <= seen || maxInFlight.CompareAndSwap(seen, now) {
				break
			}
		}
		defer inFlight.Add(-1)
		started := time.Now()
		outcome := post(client, *url, body, *plain)
		return result{time.Since(started), outcome}
	}

	var results []result
	var mu sync.Mutex
	record := func(r result) { mu.Lock(); results = append(results, r); mu.Unlock() }
	closedLoop := func(count int, until time.Time, keep bool) {
		var next atomic.Int64
		var wg sync.WaitGroup
		for w := 0; w < *conns; w++ {
			wg.Add(1)
			go func() {
				defer wg.Done()
				for {
					i := int(next.Add(1)) - 1
					if (count > 0 && i >= count) || (count == 0 && !time.Now().Before(until)) {
						return
					}
					r := send(bodies[i%len(bodies)])
					if keep {
						record(r)
					}
				}
			}()
		}
		wg.Wait()
	}
	if *rate <= 0 && *warmup > 0 {
		closedLoop(*warmup, time.Time{}, false)
		maxInFlight.Store(0)
	}
	cpuBefore := cpuSeconds()
	started := time.Now()
	mode := "closed"
	if *rate <= 0 {
		closedLoop(*requests, started.Add(*duration), true)
	} else {
		mode = "open"
		total := int(*rate * duration.Seconds())
		interval := time.Duration(float64(time.Second) / *rate)
		var wg sync.WaitGroup
		for i := 0; i < total; i++ {
			// Arrivals on a fixed schedule, never waiting for earlier answers.
			if wait := time.Until(started.Add(time.Duration(i) * interval)); wait > 0 {
				time.Sleep(wait)
			}
			wg.Add(1)
			go func(body []byte) { defer wg.Done(); record(send(body)) }(bodies[i%len(bodies)])
		}
		wg.Wait()
	}
	elapsed := time.Since(started).Seconds()

	out := summary{
		Mode: mode, Sent: len(results), Seconds: elapsed, Outcomes: map[string]int{}, MaxInFlight: maxInFlight.Load(),
		CPUSeconds: cpuSeconds() - cpuBefore, Connections: *conns,
	}
	latencies := make([]float64, 0, len(results))
	for _, r := range results {
		out.Outcomes[r.outcome]++
		if r.outcome != "timeout" && r.outcome != "error" {
			latencies = append(latencies, float64(r.latency.Microseconds())/1000)
		}
	}
	sort.Float64s(latencies)
	if n := len(latencies); n > 0 {
		out.P50Ms, out.P99Ms, out.MaxMs = latencies[n/2], latencies[min(n-1, n*99/100)], latencies[n-1]
	}
	out.OfferedRate = float64(len(results)) / elapsed
	if mode == "open" {
		out.OfferedRate = *rate
	}
	out.Throughput = float64(len(latencies)) / elapsed
	check(json.NewEncoder(os.Stdout).Encode(out))
}

func post(client *http.Client, url string, body []byte, plain bool) string {
	response, err := client.Post(url, "application/json", bytes.NewReader(body))
	if err != nil {
		if e, ok := err.(interface{ Timeout() bool }); ok && e.Timeout() {
			return "timeout"
		}
		return "error"
	}
	defer response.Body.Close()
	data, err := io.ReadAll(response.Body)
	if err != nil || response.StatusCode != http.StatusOK {
		return "error"
	}
	if plain {
		return "ok"
	}
	var review struct {
		Response struct {
			Allowed bool `json:"allowed"`
			Status  struct {
				Message string `json:"message"`
			} `json:"status"`
		} `json:"response"`
	}
	if json.Unmarshal(data, &review) != nil {
		return "error"
	}
	switch {
	case review.Response.Allowed:
		return "allowed"
	case strings.Contains(review.Response.Status.Message, "webhook overloaded"):
		return "shed"
	default:
		return "denied"
	}
}

func newClient(caFile string, conns int, timeout time.Duration) (*http.Client, error) {
	if caFile == "" {
		transport := &http.Transport{MaxConnsPerHost: conns, MaxIdleConnsPerHost: conns, ForceAttemptHTTP2: false}
		return &http.Client{Transport: transport, Timeout: timeout}, nil
	}
	pem, err := os.ReadFile(caFile)
	if err != nil {
		return nil, err
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(pem) {
		return nil, fmt.Errorf("no certificate in %s", caFile)
	}
	transport := &http.Transport{
		TLSClientConfig:     &tls.Config{RootCAs: pool, MinVersion: tls.VersionTLS12},
		MaxConnsPerHost:     conns,
		MaxIdleConnsPerHost: conns,
		ForceAttemptHTTP2:   false,
	}
	return &http.Client{Transport: transport, Timeout: timeout}, nil
}

func readBodies(path string) ([][]byte, error) {
	file, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer file.Close()
	var bodies [][]byte
	scanner := bufio.NewScanner(file)
	scanner.Buffer(make([]byte, 1<<20), 16<<20)
	for scanner.Scan() {
		if line := bytes.TrimSpace(scanner.Bytes()); len(line) > 0 {
			bodies = append(bodies, append([]byte(nil), line...))
		}
	}
	if len(bodies) == 0 {
		return nil, fmt.Errorf("no bodies in %s", path)
	}
	return bodies, scanner.Err()
}

// cpuSeconds is the user and system CPU time of this process so far.
func cpuSeconds() float64 {
	var usage syscall.Rusage
	if syscall.Getrusage(syscall.RUSAGE_SELF, &usage) != nil {
		return 0
	}
	seconds := func(t syscall.Timeval) float64 { return float64(t.Sec) + float64(t.Usec)/1e6 }
	return seconds(usage.Utime) + seconds(usage.Stime)
}

func check(err error) {
	if err != nil {
		fmt.Fprintln(os.Stderr, "loadgen:", err)
		os.Exit(1)
	}
}
