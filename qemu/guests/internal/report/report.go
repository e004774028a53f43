// Package report prints a guest test program's results as the lines the
// rig's tests read from its console:
//
//	PREFIX PASS name detail
//	PREFIX FAIL name: reason
//	PREFIX BENCH name value unit
//	PREFIX DONE pass=N fail=M
package report

import (
	"fmt"
	"sync/atomic"
)

// Report counts and prints one program's cases. Its methods are safe for
// concurrent use.
type Report struct {
	prefix     string
	pass, fail atomic.Int64
}

// New returns a report whose lines start with prefix.
func New(prefix string) *Report { return &Report{prefix: prefix} }

// Check prints case name as passed, with detail, or as failed with err.
func (r *Report) Check(name string, err error, detail string) {
	if err != nil {
		r.fail.Add(1)
		fmt.Printf("%s FAIL %s: %v\n", r.prefix, name, err)
		return
	}
	r.pass.Add(1)
	fmt.Printf("%s PASS %s %s\n", r.prefix, name, detail)
}

// Bench prints a measurement.
func (r *Report) Bench(name string, v float64, unit string) {
	fmt.Printf("%s BENCH %s %.3f %s\n", r.prefix, name, v, unit)
}

// Counts returns how many cases passed and failed so far.
func (r *Report) Counts() (pass, fail int) { return int(r.pass.Load()), int(r.fail.Load()) }

// Done prints the DONE line and returns how many cases failed.
func (r *Report) Done() int {
	p, f := r.Counts()
	fmt.Printf("%s DONE pass=%d fail=%d\n", r.prefix, p, f)
	return f
}
