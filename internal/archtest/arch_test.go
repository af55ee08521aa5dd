package archtest

import (
	"bytes"
	"os"
	"os/exec"
	"path/filepath"
	"reflect"
	"sort"
	"strings"
	"testing"
)

const module = "github.com/granary-db/granary"

// components meet only through metadb (STYLE.md, "Layout shows the
// architecture"); a component is its folder and everything under it.
var components = []string{"proxy", "keeper", "master", "tenant-api"}

// ioImports are what pools may not import: it holds decisions, and
// decisions are pure (STYLE.md, "Boundaries"). A name stands for its
// subpackages too. net stays allowed: pools parses addresses with it (that
// it never dials is beyond what an import list can tell). time and
// math/rand are allowed too, as plain values; which clock or seed a
// decision uses is its caller's choice.
var ioImports = []string{
	"os", // files, processes, environment, signals: os/exec, os/signal…
	"syscall",
	"io/ioutil",
	"net/http",
	"net/rpc",
	"net/smtp",
	"crypto/tls",
	"database/sql",
	"log", // log, log/slog, log/syslog: libraries return errors, the edge logs
	"plugin",
	"github.com/redis/go-redis",
	"github.com/tidwall/redcon",
	"github.com/go-chi/chi",
	"github.com/prometheus",
	"github.com/rs/zerolog",
	"golang.org/x/sync", // goroutines belong to a component's Run
	module + "/metadb",
	module + "/internal/redisproc",
	module + "/internal/redistest",
	module + "/internal/procgroup",
	module + "/internal/failoverload",
	module + "/internal/apiclient",
}

// pkg is one package of the import graph.
type pkg struct {
	std     bool
	imports []string
}

// graph is packages by import path.
type graph map[string]pkg

// under says whether path is one of names or below one of them.
func under(path string, names ...string) bool {
	for _, n := range names {
		if path == n || strings.HasPrefix(path, n+"/") {
			return true
		}
	}
	return false
}

// componentOf is the component folder that path is in, or "".
func componentOf(path string) string {
	for _, c := range components {
		if under(path, module+"/"+c) {
			return c
		}
	}
	return ""
}

// chains walks the imports of root breadth first and returns the shortest
// import chain (root first) to each package that bad holds for, ordered by
// that package. The walk reads the imports of root and of the packages
// descend holds for, and stops at a bad package: what it imports is its own
// business, the chain to it is the one to fix.
func chains(g graph, root string, descend func(string) bool, bad func(string) bool) [][]string {
	from := map[string]string{root: ""}
	queue := []string{root}
	var found []string
	for len(queue) > 0 {
		p := queue[0]
		queue = queue[1:]
		if p != root && bad(p) {
			found = append(found, p)
			continue
		}
		if p != root && !descend(p) {
			continue
		}
		for _, q := range g[p].imports {
			if _, ok := from[q]; !ok {
				from[q] = p
				queue = append(queue, q)
			}
		}
	}
	sort.Strings(found)
	var out [][]string
	for _, p := range found {
		var c []string
		for q := p; q != ""; q = from[q] {
			c = append([]string{q}, c...)
		}
		out = append(out, c)
	}
	return out
}

// short is an import path with the module's own prefix cut.
func short(path string) string { return strings.TrimPrefix(path, module+"/") }

// show is an import chain as a reader follows it.
func show(chain []string) string {
	s := make([]string, len(chain))
	for i, p := range chain {
		s[i] = short(p)
	}
	return strings.Join(s, " -> ")
}

// loadGraph runs go list -deps in the module's root on the folders dirs
// and everything under them, and returns the graph of their packages and
// all they import, tests left out: the rules are about the code the binary
// runs. It never reaches the network: a module missing from the cache is an
// error. (Folders, not import paths: "module/proxy/..." makes go list look
// in every module of the build list, and some are not in the cache.)
func loadGraph(t *testing.T, dirs ...string) graph {
	t.Helper()
	args := []string{"list", "-deps", "-f", "{{.ImportPath}}\t{{.Standard}}\t{{join .Imports \" \"}}"}
	for _, d := range dirs {
		args = append(args, "./"+d+"/...")
	}
	cmd := exec.Command("go", args...)
	cmd.Dir = moduleRoot(t)
	cmd.Env = append(os.Environ(), "GOPROXY=off", "GOTOOLCHAIN=local")
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("go %s: %v\n%s", strings.Join(args, " "), err, stderr.String())
	}
	g := graph{}
	for _, line := range strings.Split(strings.TrimSpace(string(out)), "\n") {
		f := strings.SplitN(line, "\t", 3)
		if len(f) != 3 {
			t.Fatalf("go list: got line %q, want path, standard and imports", line)
		}
		g[f[0]] = pkg{std: f[1] == "true", imports: strings.Fields(f[2])}
	}
	return g
}

// moduleRoot is the folder of the go.mod above the test's folder.
func moduleRoot(t *testing.T) string {
	t.Helper()
	dir, err := os.Getwd()
	if err != nil {
		t.Fatal(err)
	}
	for {
		if _, err := os.Stat(filepath.Join(dir, "go.mod")); err == nil {
			return dir
		}
		up := filepath.Dir(dir)
		if up == dir {
			t.Fatal("got no go.mod above the test's folder, want the module's")
		}
		dir = up
	}
}

// packagesOf are the graph's packages in the module folder dir, sorted; the
// test fails when there are none (a rule about a folder that is gone would
// hold for nothing).
func packagesOf(t *testing.T, g graph, dir string) []string {
	t.Helper()
	var out []string
	for p := range g {
		if under(p, module+"/"+dir) {
			out = append(out, p)
		}
	}
	if len(out) == 0 {
		t.Fatalf("got no packages in %s, want at least one", dir)
	}
	sort.Strings(out)
	return out
}

// notStd: the standard library never imports the module or a third-party
// package, so a walk need not read its imports.
func notStd(g graph) func(string) bool {
	return func(p string) bool { return !g[p].std }
}

// TestComponentsApart: no package of a component imports a package of
// another one, directly or through any chain of imports.
func TestComponentsApart(t *testing.T) {
	g := loadGraph(t, components...)
	for _, c := range components {
		other := func(p string) bool { oc := componentOf(p); return oc != "" && oc != c }
		for _, root := range packagesOf(t, g, c) {
			for _, chain := range chains(g, root, notStd(g), other) {
				t.Errorf("%s imports component %s: %s; components meet only through metadb",
					c, componentOf(chain[len(chain)-1]), show(chain))
			}
		}
	}
}

// TestMetadbImportsNoComponent: metadb is where components meet, so it
// imports none of them. (While every component imports metadb, go list
// itself refuses such an import as a cycle, and names it.)
func TestMetadbImportsNoComponent(t *testing.T) {
	g := loadGraph(t, "metadb")
	for _, root := range packagesOf(t, g, "metadb") {
		for _, chain := range chains(g, root, notStd(g), func(p string) bool { return componentOf(p) != "" }) {
			t.Errorf("metadb imports component %s: %s", componentOf(chain[len(chain)-1]), show(chain))
		}
	}
}

// TestPoolsPure: pools, and every package of the module or beyond that it
// imports, imports nothing that does I/O, and no component. The standard
// library's own imports are not followed (fmt imports os to print, which
// pools does not call).
func TestPoolsPure(t *testing.T) {
	g := loadGraph(t, "pools")
	var deny []string
	deny = append(deny, ioImports...)
	for _, c := range components {
		deny = append(deny, module+"/"+c)
	}
	for _, root := range packagesOf(t, g, "pools") {
		for _, chain := range chains(g, root, notStd(g), func(p string) bool { return under(p, deny...) }) {
			t.Errorf("pools must be pure, but it imports %s: %s", short(chain[len(chain)-1]), show(chain))
		}
	}
}

// TestChains checks the chain finder on a made-up graph, so that a
// violation is reported as it should be before the real graph has one.
func TestChains(t *testing.T) {
	g := graph{
		"a":       {imports: []string{"b", "m", "fmt"}},
		"b":       {imports: []string{"m"}},
		"m":       {imports: []string{"bad1", "fmt"}},
		"bad1":    {imports: []string{"bad2"}},
		"bad2":    {},
		"fmt":     {std: true, imports: []string{"os"}},
		"os":      {std: true},
		"c":       {imports: []string{"d"}},
		"d":       {imports: []string{"c"}}, // not in Go, but the walk must end
		"clean":   {imports: []string{"fmt"}},
		"viaBad":  {imports: []string{"bad2"}},
		"selfBad": {imports: []string{"fmt"}},
		"e":       {imports: []string{"bad1", "f"}},
		"f":       {imports: []string{"bad2"}},
	}
	isBad := func(p string) bool { return strings.HasPrefix(p, "bad") || p == "os" || p == "selfBad" || p == "c" }
	all := func(string) bool { return true }
	for _, tc := range []struct {
		name    string
		root    string
		descend func(string) bool
		want    [][]string
	}{
		{"the shortest chain to the first bad package of each path", "a", all, [][]string{{"a", "m", "bad1"}, {"a", "fmt", "os"}}},
		{"the standard library not followed", "a", notStd(g), [][]string{{"a", "m", "bad1"}}},
		{"a bad package reached another way is reported too", "e", all, [][]string{{"e", "bad1"}, {"e", "f", "bad2"}}},
		{"a direct import", "viaBad", all, [][]string{{"viaBad", "bad2"}}},
		{"nothing bad", "clean", notStd(g), nil},
		{"the root itself is not reported", "selfBad", notStd(g), nil},
		{"a cycle back to the root ends", "d", all, [][]string{{"d", "c"}}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if got := chains(g, tc.root, tc.descend, isBad); !reflect.DeepEqual(got, tc.want) {
				t.Fatalf("got %v, want %v", got, tc.want)
			}
		})
	}
}

func TestShow(t *testing.T) {
	got := show([]string{module + "/keeper", module + "/metadb", module + "/master", "fmt"})
	if want := "keeper -> metadb -> master -> fmt"; got != want {
		t.Fatalf("got %q, want %q", got, want)
	}
}
