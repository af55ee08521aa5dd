// Package defaults fills the zero fields of a component's config from its
// defaults.
package defaults

// Fill sets *v to def when *v is the zero value.
func Fill[T comparable](v *T, def T) {
	var zero T
	if *v == zero {
		*v = def
	}
}
