// Package archtest locks Granary's architecture with a test and holds no
// code of its own. Its test reads the import graph (go list -deps) and
// fails, naming the import chain, when a component (proxy, keeper, master,
// tenant-api) imports another, directly or through any other package; when
// metadb imports a component; or when pools, which is pure, imports a
// package that does I/O. Only cmd/granary and e2e wire components together.
package archtest
