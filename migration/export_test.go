package migration

// NewFakeDev gives the external tests (the conformance kit's own test) the
// package's test device: n is rx-filter-size, busy fills its state, eager
// makes its loader apply while decoding.
func NewFakeDev(n int, busy, eager bool) Stateful {
	d := newFakeDev(n, true)
	d.eager = eager
	if busy {
		d.st = busyState(n / 2)
	}
	return d
}
