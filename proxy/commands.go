package proxy

import (
	"fmt"
	"sort"
	"strings"
)

// cmdKind is how the proxy treats a command.
type cmdKind uint8

const (
	kRefuse   cmdKind = iota // answered with an error naming the command
	kForward                 // sent to the db's master (write) or replica (read)
	kBlocking                // sent on a dedicated connection to the master
	kLocal                   // answered by the proxy itself
)

// class is the metrics class of a command.
type class uint8

const (
	classRead class = iota
	classWrite
	classBlocking
	classScript
	classTx
	classPubSub
	classLocal
	numClasses
)

var classNames = [numClasses]string{"read", "write", "blocking", "script", "tx", "pubsub", "local"}

// handler answers a command the proxy handles itself.
type handler func(c *client, cmd *command)

// cmdSpec is one row of the command table.
type cmdSpec struct {
	name     string // lower case; "config|get" for a subcommand
	arity    int
	write    bool
	denyoom  bool
	blocking bool
	// firstKey is the position of the command's first key argument, 0
	// when it has none at a fixed position (hot-key sampling, hotkeys.go).
	firstKey int
	kind     cmdKind
	class    class
	local    handler
	// container commands (CONFIG, CLIENT, OBJECT…) resolve their second
	// argument here.
	subs map[string]*cmdSpec
}

// cmdTable is immutable once built; the proxy swaps it atomically.
type cmdTable struct {
	m map[string]*cmdSpec
}

// lookup finds the spec for cmd, resolving container subcommands. It never
// allocates: the name is lower-cased into a stack buffer.
func (t *cmdTable) lookup(args [][]byte) (*cmdSpec, error) {
	var buf [32]byte
	name := args[0]
	spec := t.m[string(lower(buf[:0], name))]
	if spec == nil {
		return nil, unknownCommand(args)
	}
	if spec.subs == nil {
		return spec, nil
	}
	if len(args) < 2 {
		return nil, fmt.Errorf("%w for '%s' command", ErrArity, spec.name)
	}
	var buf2 [32]byte
	sub := spec.subs[string(lower(buf2[:0], args[1]))]
	if sub == nil {
		return nil, fmt.Errorf("%w: unknown subcommand '%.128s'. Try %s HELP.", ErrSyntax, args[1], strings.ToUpper(spec.name))
	}
	return sub, nil
}

func lower(dst, s []byte) []byte {
	if len(s) > 32 {
		return append(dst, "\x00too-long"...)
	}
	for _, c := range s {
		if c >= 'A' && c <= 'Z' {
			c += 'a' - 'A'
		}
		dst = append(dst, c)
	}
	return dst
}

func unknownCommand(args [][]byte) error {
	var sb strings.Builder
	for _, a := range args[1:] {
		if sb.Len() > 128 {
			break
		}
		fmt.Fprintf(&sb, "'%.64s' ", a)
	}
	return fmt.Errorf("%w '%.128s', with args beginning with: %s", ErrUnknownCommand, args[0], sb.String())
}

// checkArity applies Redis's arity rule: n exact when positive, at least -n
// when negative.
func (s *cmdSpec) checkArity(argc int) error {
	if (s.arity > 0 && argc != s.arity) || (s.arity < 0 && argc < -s.arity) {
		return fmt.Errorf("%w for '%s' command", ErrArity, s.name)
	}
	return nil
}

// backendCommand is one command as the backend's COMMAND reply describes it.
type backendCommand struct {
	name     string
	arity    int
	firstKey int
	flags    map[string]bool
	cats     map[string]bool
	subs     []backendCommand
}

// parseCommandReply decodes the reply of COMMAND (Redis 7: name, arity,
// flags, first key, last key, step, ACL categories, tips, key specs,
// subcommands).
func parseCommandReply(raw []byte) ([]backendCommand, error) {
	v, _, err := parseValue(raw)
	if err != nil {
		return nil, err
	}
	if v.t != '*' {
		return nil, fmt.Errorf("COMMAND: %s", v.str)
	}
	cmds, err := decodeCommands(v.elems)
	if err == nil && len(cmds) == 0 {
		err = fmt.Errorf("COMMAND: empty reply")
	}
	return cmds, err
}

func decodeCommands(vs []value) ([]backendCommand, error) {
	var out []backendCommand
	for _, e := range vs {
		if e.t != '*' || len(e.elems) < 7 {
			continue
		}
		bc := backendCommand{
			name:     strings.ToLower(string(e.elems[0].str)),
			arity:    int(e.elems[1].num),
			firstKey: int(e.elems[3].num),
			flags:    map[string]bool{},
			cats:     map[string]bool{},
		}
		for _, f := range e.elems[2].elems {
			bc.flags[strings.ToLower(string(f.str))] = true
		}
		for _, c := range e.elems[6].elems {
			bc.cats[strings.TrimPrefix(strings.ToLower(string(c.str)), "@")] = true
		}
		if len(e.elems) >= 10 && e.elems[9].t == '*' {
			subs, err := decodeCommands(e.elems[9].elems)
			if err != nil {
				return nil, err
			}
			bc.subs = subs
		}
		out = append(out, bc)
	}
	return out, nil
}

// Granary's policy on top of the backend's table. Anything not allowed here
// is refused: this is an allow-list.
var (
	// Categories whose commands touch the server, other connections or
	// other dbs; their commands are refused unless handled below.
	refusedCategories = []string{"admin", "dangerous", "connection", "pubsub", "scripting", "transaction"}
	// Commands of refused categories that stay inside the selected db.
	allowedDangerous = map[string]bool{"keys": true, "flushdb": true, "sort": true, "sort_ro": true}
	// Commands of data categories that still cross dbs or servers.
	refusedCommands = map[string]bool{
		"move": true, "swapdb": true, "migrate": true, "restore": true, "restore-asking": true,
		"object|freq": true, "pfdebug": true, "pfselftest": true, "lolwut": true,
	}
	// Commands forwarded as reads although they carry no readonly flag.
	forwardedReads = map[string]bool{
		"command": true, "command|count": true, "command|docs": true, "command|info": true,
		"command|list": true, "command|getkeys": true, "command|getkeysandflags": true,
		"time": true,
	}
)

// localHandlers are the commands the proxy answers or rewrites itself.
func localHandlers() map[string]handler {
	return map[string]handler{
		"auth": (*client).cmdAuth, "hello": (*client).cmdHello, "quit": (*client).cmdQuit,
		"ping": (*client).cmdPing, "echo": (*client).cmdEcho, "select": (*client).cmdSelect,
		"reset": (*client).cmdReset, "info": (*client).cmdInfo, "flushall": (*client).cmdFlushAll,
		"client|setname": (*client).cmdClientSetName, "client|getname": (*client).cmdClientGetName,
		"client|id": (*client).cmdClientID, "client|setinfo": (*client).cmdClientSetInfo,
		"client|info": (*client).cmdClientInfo, "client|no-evict": (*client).cmdClientOK,
		"client|no-touch": (*client).cmdClientOK, "client|help": (*client).cmdClientHelp,
		"config|get": (*client).cmdConfigGet,
		"multi":      (*client).cmdMulti, "exec": (*client).cmdExec, "discard": (*client).cmdDiscard,
		"watch": (*client).cmdWatch, "unwatch": (*client).cmdUnwatch,
		"subscribe": (*client).cmdSubscribe, "psubscribe": (*client).cmdSubscribe,
		"unsubscribe": (*client).cmdSubscribe, "punsubscribe": (*client).cmdSubscribe,
		"publish": (*client).cmdPublish, "pubsub|channels": (*client).cmdPubsubChannels,
		"pubsub|numsub": (*client).cmdPubsubNumsub, "pubsub|help": (*client).cmdPubsubHelp,
		"eval": (*client).cmdScript, "evalsha": (*client).cmdScript,
		"eval_ro": (*client).cmdScript, "evalsha_ro": (*client).cmdScript,
		"script|load": (*client).cmdScript, "script|exists": (*client).cmdScript,
		"copy": (*client).cmdCopy,
	}
}

// localClass is the metrics class of locally handled commands that forward.
var localClass = map[string]class{
	"multi": classTx, "exec": classTx, "discard": classTx, "watch": classTx, "unwatch": classTx,
	"subscribe": classPubSub, "psubscribe": classPubSub, "unsubscribe": classPubSub,
	"punsubscribe": classPubSub, "publish": classPubSub,
	"eval": classScript, "evalsha": classScript, "eval_ro": classScript, "evalsha_ro": classScript,
	"script|load": classScript, "script|exists": classScript, "copy": classWrite, "flushall": classWrite,
}

// buildTable applies Granary's policy to the backend's commands.
func buildTable(cmds []backendCommand) *cmdTable {
	locals := localHandlers()
	t := &cmdTable{m: make(map[string]*cmdSpec, len(cmds))}
	for _, bc := range cmds {
		spec := decide(bc, locals)
		if len(bc.subs) > 0 {
			spec.subs = make(map[string]*cmdSpec, len(bc.subs))
			for _, sc := range bc.subs {
				s := decide(sc, locals)
				_, sub, _ := strings.Cut(s.name, "|")
				spec.subs[sub] = s
			}
		}
		t.m[spec.name] = spec
	}
	return t
}

// decide is the policy for one command: pure, table-tested.
func decide(bc backendCommand, locals map[string]handler) *cmdSpec {
	s := &cmdSpec{name: bc.name, arity: bc.arity, write: bc.flags["write"], denyoom: bc.flags["denyoom"],
		blocking: bc.flags["blocking"], class: classRead, firstKey: bc.firstKey}
	if s.write {
		s.class = classWrite
	}
	if h, ok := locals[bc.name]; ok {
		s.kind, s.local, s.class = kLocal, h, classLocal
		if c, ok := localClass[bc.name]; ok {
			s.class = c
		}
		return s
	}
	if refusedCommands[bc.name] {
		return s // kRefuse
	}
	if forwardedReads[bc.name] {
		s.kind = kForward
		return s
	}
	if !bc.flags["write"] && !bc.flags["readonly"] {
		return s
	}
	if !allowedDangerous[bc.name] {
		for _, c := range refusedCategories {
			if bc.cats[c] {
				return s
			}
		}
	}
	s.kind = kForward
	if s.blocking {
		s.kind, s.class = kBlocking, classBlocking
	}
	return s
}

// refusedNames lists the refused commands of t, for documentation and tests.
func (t *cmdTable) refusedNames() []string {
	var out []string
	for _, s := range t.m {
		if s.kind == kRefuse && s.subs == nil {
			out = append(out, s.name)
		}
		for _, sub := range s.subs {
			if sub.kind == kRefuse {
				out = append(out, sub.name)
			}
		}
	}
	sort.Strings(out)
	return out
}

// refusal is the error for a refused command.
func refusal(s *cmdSpec) error {
	return fmt.Errorf("%w: '%s'", ErrNoPerm, s.name)
}
