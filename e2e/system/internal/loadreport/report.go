// Package loadreport is the report of the system tests' load generator (internal/loadgen): the
// JSON it writes and the test reads.
package loadreport

// Report is what the generator tells the test.
type Report struct {
	// Conns is how many connections were opened; DialErrors how many dials failed.
	Conns      int64 `json:"conns"`
	DialErrors int64 `json:"dialErrors"`
	// Sent counts requests written, first ones and sent-again ones.
	Sent int64 `json:"sent"`
	// Codes counts answers by status code.
	Codes map[int]int64 `json:"codes"`
	// RejectedWithoutRetryAfter counts 503s without a Retry-After header.
	RejectedWithoutRetryAfter int64 `json:"rejectedWithoutRetryAfter"`
	// HeldAnswers counts answers that carry the header named by -held-header: requests the server
	// held before it answered them.
	HeldAnswers int64 `json:"heldAnswers"`
	// Closed counts connections the server closed: with its answer (Connection: close), or
	// later while they were idle.
	Closed int64 `json:"closed"`
	// Errors counts requests that got no answer: failed writes and reads, malformed answers,
	// timeouts. ErrorSamples holds the first few.
	Errors       int64    `json:"errors"`
	ErrorSamples []string `json:"errorSamples,omitempty"`
	// Waiting is how many requests are sent and neither answered nor failed: held, right now.
	Waiting int64 `json:"waiting"`
}
